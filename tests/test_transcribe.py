"""Transcription: accuracy and timing of the default backend on the committed clips, sequential and
batched, the subtitle and JSON renderings, the per-process model cache, and the openai-whisper
backend's plumbing. Language detection with a multilingual model is in test_language.py.

The audio is what the pipeline hands to transcription: 16 kHz mono WAV, decoded here with PyAV.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps

from sandbox.media import MEDIA_DIR
from sandbox.media.manifest import load_manifest
from sandbox.media.score import word_error_rate
from tasks.media import transcribe as transcribe_module
from tasks.media.transcribe import (
    SAMPLE_RATE,
    WINDOW_SECONDS,
    FasterWhisperTranscriber,
    OpenAIWhisperTranscriber,
    Segment,
    TranscriberUnavailableError,
    Transcript,
    Word,
    _sentences,
    auto_process_concurrency,
    load_transcriber,
    resolve_device,
    session_threads,
)

MANIFEST = load_manifest()
SPEECH_CLIPS = ["speech-1.mp4", "speech-2.mp4", "speech-3.mp4", "audio-only.mp4"]
MAX_WER = 0.2
# The batched pipeline's size in these tests; the clips are short, so a batch holds one or two pieces.
BATCH = 8
MODES = {"sequential": 0, "batched": BATCH}
# speech-2's pause is 7.20-9.61 s; VAD keeps 0.4 s of padding at each side of speech.
PAUSE = (7.4, 9.4)
VTT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
SRT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16-bit mono WAV at 16 kHz from float samples in [-1, 1]."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def decode_16k(source: Path) -> np.ndarray:
    """The clip's audio as 16 kHz mono float samples, decoded and resampled with PyAV."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(source)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().ravel() for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().ravel() for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) / 32768


@pytest.fixture(scope="session")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wav")
    return {name: write_wav(folder / f"{name}.wav", decode_16k(MEDIA_DIR / name)) for name in SPEECH_CLIPS}


class ProgressLog(list[tuple[float, float]]):
    """A progress callback that records its calls."""

    def __call__(self, done: float, total: float) -> None:
        self.append((done, total))


@pytest.fixture(scope="module", params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    """Every test that uses the transcripts runs for the sequential and the batched path."""
    return request.param


def default_transcriber(mode: str, vad: bool = True) -> FasterWhisperTranscriber:
    """The default backend and model, as the pipeline configures it, in ``mode``."""
    transcriber = load_transcriber("faster-whisper", None, "auto", "auto", vad, batch_size=MODES[mode])
    assert isinstance(transcriber, FasterWhisperTranscriber)
    return transcriber


@pytest.fixture(scope="module")
def runs(wavs: dict[str, Path], mode: str) -> dict[str, tuple[Transcript, ProgressLog]]:
    """Each clip through the default backend in ``mode``, with its progress calls."""
    transcriber = default_transcriber(mode)
    results = {}
    for name, path in wavs.items():
        progress = ProgressLog()
        results[name] = (transcriber.transcribe(path, progress=progress), progress)
    return results


@pytest.fixture(scope="module")
def transcripts(runs: dict[str, tuple[Transcript, ProgressLog]]) -> dict[str, Transcript]:
    return {name: transcript for name, (transcript, _) in runs.items()}


def test_word_error_rate_ignores_case_and_punctuation() -> None:
    assert word_error_rate("Okay, I am here.", "okay i am here") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5


@pytest.mark.parametrize("name", SPEECH_CLIPS)
def test_bundled_tiny_en_transcribes_the_clips(transcripts: dict[str, Transcript], name: str) -> None:
    transcript = transcripts[name]
    assert word_error_rate(MANIFEST[name]["text"], transcript.text) <= MAX_WER, transcript.text
    # tiny.en is English-only: "en" is what it assumes, not what it detected.
    assert (transcript.language, transcript.language_probability, transcript.language_detected) == (
        "en",
        None,
        False,
    )
    assert (transcript.backend, transcript.model) == ("faster-whisper", "tiny.en")
    assert transcript.duration == pytest.approx(MANIFEST[name]["duration"], abs=0.1)
    assert transcript.text == "".join(segment.text for segment in transcript.segments).strip()


@pytest.mark.parametrize("name", SPEECH_CLIPS)
def test_segments_and_words_are_ordered_inside_the_audio(
    transcripts: dict[str, Transcript], name: str
) -> None:
    transcript = transcripts[name]
    assert transcript.segments
    previous_end = 0.0
    for segment in transcript.segments:
        assert previous_end <= segment.start <= segment.end <= transcript.duration
        assert segment.words, segment
        for word in segment.words:
            assert previous_end <= word.start <= word.end
            assert segment.start <= word.start and word.end <= segment.end
            assert 0 <= word.probability <= 1
            assert type(word.start) is float
            previous_end = word.end
        previous_end = segment.end


@pytest.mark.parametrize("name", SPEECH_CLIPS)
def test_progress_runs_forward_and_ends_at_the_duration(
    runs: dict[str, tuple[Transcript, ProgressLog]], name: str
) -> None:
    transcript, calls = runs[name]
    duration = transcript.duration
    assert len(calls) == len(transcript.segments) + 1
    assert all(total == duration for _, total in calls)
    done = [seconds for seconds, _ in calls]
    assert done == sorted(done) and done[-1] == duration


def test_vad_skips_the_pause(transcripts: dict[str, Transcript]) -> None:
    transcript = transcripts["speech-2.mp4"]
    [silence] = MANIFEST["speech-2.mp4"]["silence"]
    assert silence[0] <= PAUSE[0] and PAUSE[1] <= silence[1]
    for segment in transcript.segments:
        assert segment.end <= PAUSE[0] or segment.start >= PAUSE[1], segment
        for word in segment.words:
            assert word.end <= PAUSE[0] or word.start >= PAUSE[1], word


@pytest.mark.parametrize("seconds", [3.0, 0.0])
def test_silence_and_empty_audio_give_an_empty_transcript(tmp_path: Path, mode: str, seconds: float) -> None:
    transcriber = default_transcriber(mode)
    calls = ProgressLog()
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(int(seconds * SAMPLE_RATE)))
    transcript = transcriber.transcribe(quiet, progress=calls)
    assert (transcript.text, transcript.segments, transcript.duration) == ("", (), seconds)
    assert transcript.to_vtt() == "WEBVTT\n" and transcript.to_srt() == ""
    assert calls == [(seconds, seconds)]


def vtt_cues(vtt: str) -> list[tuple[float, float, str]]:
    """Parse WebVTT as a player would: header, then blank-line separated cues of timing + text."""
    header, _, body = vtt.partition("\n\n")
    assert header == "WEBVTT"
    return [_cue(block.split("\n"), VTT_TIMING) for block in body.strip("\n").split("\n\n") if block]


def srt_cues(srt: str) -> list[tuple[float, float, str]]:
    blocks = srt.strip("\n").split("\n\n")
    assert [block.split("\n")[0] for block in blocks] == [str(n) for n in range(1, len(blocks) + 1)]
    return [_cue(block.split("\n")[1:], SRT_TIMING) for block in blocks]


def _cue(lines: list[str], timing: re.Pattern[str]) -> tuple[float, float, str]:
    match = timing.match(lines[0])
    assert match, lines[0]
    h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
    start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
    assert start < end
    return start, end, "\n".join(lines[1:])


@pytest.mark.parametrize("name", ["speech-1.mp4", "speech-2.mp4"])
def test_vtt_and_srt_have_one_cue_per_segment(transcripts: dict[str, Transcript], name: str) -> None:
    transcript = transcripts[name]
    expected = [(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in transcript.segments]
    for cues in (vtt_cues(transcript.to_vtt()), srt_cues(transcript.to_srt())):
        assert [(pytest.approx(a), pytest.approx(b), text) for a, b, text in cues] == expected


def test_json_has_the_stored_shape(transcripts: dict[str, Transcript]) -> None:
    transcript = transcripts["speech-1.mp4"]
    data = json.loads(json.dumps(transcript.to_json()))
    assert set(data) == {
        "text",
        "language",
        "language_probability",
        "language_detected",
        "duration",
        "model",
        "backend",
        "segments",
    }
    assert (data["text"], data["language"], data["backend"]) == (transcript.text, "en", "faster-whisper")
    assert (data["language_probability"], data["language_detected"]) == (None, False)
    assert len(data["segments"]) == len(transcript.segments)
    for segment in data["segments"]:
        assert set(segment) == {"start", "end", "text", "words"}
        assert all(set(word) == {"start", "end", "word", "probability"} for word in segment["words"])
    assert "".join(word["word"] for s in data["segments"] for word in s["words"]).strip() == transcript.text


def test_subtitles_escape_skip_empty_and_pass_an_hour() -> None:
    word = Word(3600.0, 3601.5, " x", 0.9)
    transcript = Transcript(
        text="a <b> & c --> d",
        language="en",
        language_probability=None,
        language_detected=False,
        duration=4000.0,
        model="m",
        backend="b",
        segments=(
            Segment(1.0, 1.0, " a <b> & c --> d", ()),
            Segment(2.0, 3.0, "  ", ()),
            Segment(3600.0, 3601.5, " x\n y", (word,)),
        ),
    )
    assert transcript.to_vtt() == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:01.001\na &lt;b&gt; &amp; c --&gt; d\n\n"
        "01:00:00.000 --> 01:00:01.500\nx y\n"
    )
    assert transcript.to_srt() == (
        "1\n00:00:01,000 --> 00:00:01,001\na <b> & c --> d\n\n2\n01:00:00,000 --> 01:00:01,500\nx y\n"
    )


def test_a_model_is_loaded_once_per_process() -> None:
    first = load_transcriber("faster-whisper", None, "auto", "auto", True)
    assert load_transcriber("faster-whisper", None, "auto", "auto", True) is first
    assert load_transcriber("faster-whisper", None, "auto", "auto", False) is not first


def test_faster_whisper_calls_may_run_concurrently(
    transcripts: dict[str, Transcript], wavs: dict[str, Path], mode: str
) -> None:
    transcriber = default_transcriber(mode)
    names = ["speech-1.mp4", "speech-3.mp4"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(transcriber.transcribe, [wavs[name] for name in names]))
    assert results == [transcripts[name] for name in names]


def test_two_workers_decode_two_sessions_at_once(
    transcripts: dict[str, Transcript], wavs: dict[str, Path], mode: str
) -> None:
    """Two CTranslate2 workers with a thread each (how UT_PROCESS_CONCURRENCY=2 can decode in
    parallel): the same text and timeline as one worker; thread counts may move a probability."""
    transcriber = FasterWhisperTranscriber(batch_size=MODES[mode], cpu_threads=1, workers=2)
    names = ["speech-1.mp4", "speech-2.mp4"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(transcriber.transcribe, [wavs[name] for name in names]))
    for name, result in zip(names, results, strict=True):
        expected = transcripts[name]
        assert result.text == expected.text
        assert [t for s in result.segments for w in s.words for t in (w.start, w.end)] == pytest.approx(
            [t for s in expected.segments for w in s.words for t in (w.start, w.end)], abs=0.05
        )


JOINED_CLIPS = ["speech-1.mp4", "speech-2.mp4", "speech-3.mp4"]


@pytest.fixture(scope="session")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three speech clips back to back: about 37 s, 36 s of it speech, so more than one 30 s piece."""
    clips = [decode_16k(MEDIA_DIR / name) for name in JOINED_CLIPS]
    return write_wav(tmp_path_factory.mktemp("joined") / "joined.wav", np.concatenate(clips))


def test_a_recording_longer_than_a_piece(joined: Path, mode: str) -> None:
    """More than 30 s of speech (two VAD pieces, decoded in one batch on the batched path): every word
    on the recording's timeline and outside speech-2's pause, as accurate as the clips one by one. The
    batched path's segments are sentences again: none holds a sentence end before its last word."""
    calls = ProgressLog()
    transcript = default_transcriber(mode).transcribe(joined, progress=calls)
    reference = " ".join(MANIFEST[name]["text"] for name in JOINED_CLIPS)
    assert word_error_rate(reference, transcript.text) <= MAX_WER, transcript.text
    assert transcript.duration == pytest.approx(sum(MANIFEST[n]["duration"] for n in JOINED_CLIPS), abs=0.1)
    pause_offset = MANIFEST["speech-1.mp4"]["duration"]
    pause = (pause_offset + PAUSE[0], pause_offset + PAUSE[1])
    previous_end = 0.0
    for segment in transcript.segments:
        assert previous_end <= segment.start <= segment.end <= transcript.duration
        assert segment.words and segment.text == "".join(word.word for word in segment.words)
        for word in segment.words:
            assert previous_end <= word.start <= word.end
            assert word.end <= pause[0] or word.start >= pause[1], word
            previous_end = word.end
    assert [done for done, _ in calls] == [s.end for s in transcript.segments] + [transcript.duration]
    if mode == "batched":
        assert len(transcript.segments) >= 9  # the script's sentences, from two pieces
        for segment in transcript.segments:
            assert not re.search(r"[.?!]\s+\S", segment.text.strip()), segment.text


def test_batching_needs_vad(wavs: dict[str, Path]) -> None:
    """Without VAD the batched pipeline would cut the audio every 30 s, through words, and has no
    no-speech check: a batch size with VAD off runs the sequential path."""
    batched = default_transcriber("batched", vad=False)
    sequential = default_transcriber("sequential", vad=False)
    assert (batched.batch_size, batched.vad) == (0, False)
    assert batched.transcribe(wavs["speech-1.mp4"]) == sequential.transcribe(wavs["speech-1.mp4"])


def test_sentences_split_at_sentence_ends_and_pauses() -> None:
    words = (
        Word(0.0, 0.5, " Okay.", 0.9),
        Word(0.6, 1.0, " I", 0.9),
        Word(1.0, 1.4, " click", 0.9),
        Word(3.0, 3.4, " here", 0.9),  # after a 1.6 s pause
        Word(3.5, 3.9, " now?", 0.9),
        Word(4.0, 4.2, " Yes", 0.9),
    )
    piece = Segment(0.0, 4.2, " Okay. I click here now? Yes", words)
    parts = _sentences(piece)
    assert [(p.start, p.end, p.text) for p in parts] == [
        (0.0, 0.5, " Okay."),
        (0.6, 1.4, " I click"),
        (3.0, 3.9, " here now?"),
        (4.0, 4.2, " Yes"),
    ]
    assert sum((p.words for p in parts), ()) == words
    wordless = Segment(0.0, 2.0, " Hm.", ())
    assert _sentences(wordless) == (wordless,)


def test_a_language_the_model_cannot_transcribe_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="English-only and cannot transcribe language 'es'"):
        FasterWhisperTranscriber(language="es")
    assert FasterWhisperTranscriber(language=" EN ").language == "en"
    assert FasterWhisperTranscriber(language="").language is None


def test_the_settings_reach_the_transcriber(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import load_settings
    from tasks.steps import _transcriber

    default = _transcriber(load_settings(), 1)
    assert isinstance(default, FasterWhisperTranscriber)
    assert (default.batch_size, default.language, default.vad) == (
        load_settings().whisper_batch_size,
        None,
        True,
    )
    monkeypatch.setenv("UT_WHISPER_BATCH_SIZE", "4")
    monkeypatch.setenv("UT_WHISPER_LANGUAGE", "en")
    configured = _transcriber(load_settings(), 1)
    assert isinstance(configured, FasterWhisperTranscriber)
    assert (configured.batch_size, configured.language) == (4, "en")
    monkeypatch.setenv("UT_WHISPER_BATCH_SIZE", "1")
    assert _transcriber(load_settings(), 1).batch_size == 0  # type: ignore[attr-defined]
    # Two sessions at once: two model workers, the cores split between them.
    parallel = _transcriber(load_settings(), 2)
    (key,) = [k for k, loaded in transcribe_module._transcribers.items() if loaded is parallel]
    assert key[-1] == 2 and key[6] == session_threads(2) and parallel is not _transcriber(load_settings(), 1)


def test_unknown_backend_and_uncached_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown transcription backend"):
        load_transcriber("whisper.cpp", None, "auto", "auto", True)
    with pytest.raises(ValueError, match="needs a model"):
        load_transcriber("openai-whisper", None, "auto", "auto", True)
    with pytest.raises(TranscriberUnavailableError, match="not in the local Hugging Face cache"):
        FasterWhisperTranscriber("small.en", download_root=tmp_path)
    with pytest.raises(TranscriberUnavailableError, match="not in the local Hugging Face cache"):
        FasterWhisperTranscriber("no-such-model", download_root=tmp_path)


def test_auto_device_and_compute_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transcribe_module.ctranslate2, "get_cuda_device_count", lambda: 0)
    assert resolve_device("auto", "auto") == ("cpu", "int8")
    monkeypatch.setattr(transcribe_module.ctranslate2, "get_cuda_device_count", lambda: 1)
    assert resolve_device("auto", "auto") == ("cuda", "float16")
    assert resolve_device("cpu", "float32") == ("cpu", "float32")


def test_auto_process_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = {cores: auto_process_concurrency(cores, cuda=False) for cores in (1, 2, 3, 4, 16, 64)}
    assert cpu == {1: 1, 2: 1, 3: 1, 4: 2, 16: 8, 64: 32}
    gpu = {cores: auto_process_concurrency(cores, cuda=True) for cores in (1, 2, 4, 16, 64)}
    assert gpu == {1: 2, 2: 2, 4: 2, 16: 8, 64: 32}
    assert [session_threads(n, 16) for n in (1, 2, 8, 32)] == [16, 8, 2, 1]
    monkeypatch.setattr(transcribe_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(transcribe_module.ctranslate2, "get_cuda_device_count", lambda: 0)
    assert (auto_process_concurrency(), session_threads(4)) == (4, 2)


def test_openai_whisper_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "whisper", None)  # import whisper now raises ImportError
    with pytest.raises(TranscriberUnavailableError, match=re.escape("pip install '.[openai-whisper]'")):
        OpenAIWhisperTranscriber("tiny.en")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multilingual Whisper checkpoint with tiny dimensions and seeded random weights (about 7 MB)."""
    pytest.importorskip("whisper")
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=16,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=1,
    )
    model = Whisper(dims)
    # The decoder's positional embedding is allocated with torch.empty (checkpoints overwrite it); left
    # as is, whatever memory it got can be NaN and make decoding fail at random.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def test_openai_whisper_backend_wiring(random_checkpoint: Path, wavs: dict[str, Path]) -> None:
    """Proves the wiring, not accuracy: random weights produce gibberish, but it must come back as a
    well-formed Transcript (times inside the audio, detected language, renderings) through the real
    openai-whisper decoding, language detection and word alignment."""
    transcriber = load_transcriber("openai-whisper", str(random_checkpoint), "auto", "auto", True)
    assert (transcriber.name, transcriber.device, transcriber.fp16) == ("openai-whisper", "cpu", False)
    calls = ProgressLog()
    transcript = transcriber.transcribe(wavs["audio-only.mp4"], progress=calls)
    assert (transcript.backend, transcript.model) == ("openai-whisper", str(random_checkpoint))
    assert transcript.duration == pytest.approx(MANIFEST["audio-only.mp4"]["duration"], abs=0.1)
    assert transcript.language and transcript.language_detected
    assert transcript.language_probability is not None and 0 < transcript.language_probability <= 1
    assert calls[-1] == (transcript.duration, transcript.duration)
    assert any(segment.words for segment in transcript.segments)  # word alignment ran
    for segment in transcript.segments:
        assert 0 <= segment.start <= segment.end <= transcript.duration
        assert all(segment.start <= w.start <= w.end <= segment.end for w in segment.words)
    assert json.loads(json.dumps(transcript.to_json()))["backend"] == "openai-whisper"
    assert len(vtt_cues(transcript.to_vtt())) == sum(1 for s in transcript.segments if s.text.strip())


def test_openai_whisper_maps_vad_pieces_back_onto_the_recording(
    random_checkpoint: Path, wavs: dict[str, Path], joined: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Whisper's decoding replaced by one that tiles each piece it is given with words, the times
    that come back land in Silero's speech spans: the pieces hold at most 30 s of speech, the pause is
    skipped and the joins between spans are undone."""
    import whisper

    pieces: list[float] = []

    def tile(model: Any, audio: np.ndarray, **options: Any) -> dict[str, Any]:
        seconds = len(audio) / SAMPLE_RATE
        pieces.append(seconds)
        edges = np.linspace(0, seconds, round(seconds / 0.5) + 1)
        words = [
            {"word": " w", "start": float(a), "end": float(b), "probability": 1.0}
            for a, b in itertools.pairwise(edges)
        ]
        text = " w" * len(words)
        return {"text": text, "segments": [{"start": 0.0, "end": seconds, "text": text, "words": words}]}

    monkeypatch.setattr(whisper, "transcribe", tile)
    transcriber = OpenAIWhisperTranscriber(str(random_checkpoint), language="en")
    for path, piece_count in ((wavs["speech-2.mp4"], 1), (joined, 2)):
        pieces.clear()
        vad = get_speech_timestamps(decode_16k(path), VadOptions())
        spans = [(span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE) for span in vad]
        calls = ProgressLog()
        transcript = transcriber.transcribe(path, progress=calls)
        assert (transcript.language, transcript.language_probability, transcript.language_detected) == (
            "en",
            None,
            False,
        )
        assert len(pieces) == piece_count and max(pieces) <= WINDOW_SECONDS
        assert sum(pieces) == pytest.approx(sum(end - start for start, end in spans), abs=0.01)
        words = [word for segment in transcript.segments for word in segment.words]
        assert words[0].start == pytest.approx(spans[0][0], abs=0.01)
        assert words[-1].end == pytest.approx(spans[-1][1], abs=0.01)
        for word in words:
            assert any(start <= (word.start + word.end) / 2 <= end for start, end in spans), word
        assert [done for done, _ in calls[:-1]] == pytest.approx(
            [s.end for s in transcript.segments], abs=0.01
        )

    [silence] = MANIFEST["speech-2.mp4"]["silence"]
    speech_2_spans = get_speech_timestamps(decode_16k(wavs["speech-2.mp4"]), VadOptions())
    assert len(speech_2_spans) == 2
    assert (
        silence[0]
        < speech_2_spans[0]["end"] / SAMPLE_RATE
        < speech_2_spans[1]["start"] / SAMPLE_RATE
        < silence[1]
    )


def test_openai_whisper_never_downloads(random_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(TranscriberUnavailableError, match="nothing is downloaded"):
        OpenAIWhisperTranscriber("tiny.en", download_root=tmp_path)
    with pytest.raises(TranscriberUnavailableError, match="not a checkpoint file"):
        OpenAIWhisperTranscriber("no-such-model", download_root=tmp_path)
    with pytest.raises(ValueError, match="compute_type"):
        OpenAIWhisperTranscriber(str(random_checkpoint), compute_type="int8")


def test_openai_whisper_languages(
    random_checkpoint: Path, wavs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured language is what Whisper decodes in and what the transcript says, not detected
    (no detection runs); an unknown code is refused at load."""
    import whisper

    languages: list[str] = []

    def decode(model: Any, audio: np.ndarray, **options: Any) -> dict[str, Any]:
        languages.append(options["language"])
        return {"text": " hola", "segments": [{"start": 0.0, "end": 1.0, "text": " hola", "words": []}]}

    monkeypatch.setattr(whisper, "transcribe", decode)
    transcriber = OpenAIWhisperTranscriber(str(random_checkpoint), language="ES")
    monkeypatch.setattr(transcriber, "_detect_language", None)  # calling it would fail the test
    transcript = transcriber.transcribe(wavs["audio-only.mp4"])
    assert languages == ["es"] and transcript.text == "hola"
    assert (transcript.language, transcript.language_probability, transcript.language_detected) == (
        "es",
        None,
        False,
    )
    with pytest.raises(ValueError, match="not a Whisper language code"):
        OpenAIWhisperTranscriber(str(random_checkpoint), language="xx")
