"""Scene detection on screen recordings: what finds a change of page without firing on a pointer or a video.

    .venv/bin/python -m bench.scenes [--long]

Runs every candidate over the corpus recordings that have a picture (``sandbox/corpus``; with
``--long`` also the 20-minute one) and scores its detections against each recording's designed
changes (``changes`` in the manifest: navigations at an instant, scrolls over a span). A detection
counts for a change when it falls between 0.1 s before the change starts and 0.5 s after it ends;
each change counts once, and every other detection is a false alarm (pointer movement, a video
playing in the page, a second detection of one scroll, encoder noise at a keyframe). The first frame
is not a detection here: the pipeline always keeps it.

Candidates:

- ``select``: ffmpeg's scene score (the ``select`` filter's ``scene``, 0 to 1) above a threshold, on
  every frame: the pipeline's method, at its old default 0.2 and lower; the ``+1s`` rows keep at most
  one detection a second, as the pipeline does (``tasks.media.video.SCENE_MIN_GAP``).
- ``scdet``: ffmpeg's ``scdet`` filter's score (0 to 100) above a threshold.
- ``freeze``: still-then-change: the end of each ``freezedetect`` freeze (noise -50 dB, 0.5 s).
- ``ticks``: the interval frames (one a second) compared as 64x36 grey pictures: a change when the
  share of cells that moved by more than 8 grey levels since the previous tick is above a threshold.
- ``masked``: every frame as a 64x36 grey picture; a change when the share of cells that move now
  and were still for the second before is above a threshold, at most one a second. Cells that keep
  moving (a video in the page, a scroll under way) are out of the count, so only a change of what
  was standing still counts.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np

from sandbox.corpus import CORPUS_DIR, load_corpus
from tasks.media.video import SCENE_MIN_GAP
from tasks.settings import Settings

BEFORE, AFTER = 0.1, 0.5  # seconds: how far a detection may lie from its change
THUMB = (64, 36)
CELL_MOVED = 8.0  # grey levels (0-255) a 64x36 cell must move by to count as changed
STILL_FOR = 1.0  # seconds a cell must have stood still before its change counts (masked)
REFRACTORY = SCENE_MIN_GAP  # seconds: the "+1s" rows and the masked method, as the pipeline does
DISTRACTORS = ("pointer-only.mp4", "video-in-page.mp4", "static-minute.mp4", "variable-frame-rate.mp4")

_PTS = re.compile(r"pts_time:([\d.]+)")
_VALUE = re.compile(r"lavfi\.(?:scene_score|scd\.score)=([\d.]+)")
_FREEZE_END = re.compile(r"freeze_end: ([\d.]+)")


@dataclass(frozen=True)
class Recording:
    name: str
    path: Path
    changes: list[tuple[float, float, str]]
    stream: int


@dataclass
class Signals:
    """Everything the candidates need from one recording, measured once."""

    frame_times: np.ndarray
    thumbs: np.ndarray  # frames x 36 x 64, float32 grey
    select: np.ndarray  # per frame
    scdet: np.ndarray  # per frame
    freeze_ends: list[float]
    seconds: dict[str, float]  # wall time of each measurement
    masked: np.ndarray | None = None  # per frame, computed on first use


def _ffmpeg_filter(path: Path, stream: int, chain: str) -> str:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    cmd += ["-map", f"0:{stream}", "-vf", chain, "-f", "null", "-"]
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace").stderr


def _per_frame(stderr: str) -> np.ndarray:
    """The metadata value printed for each frame (``metadata=print``), in frame order."""
    values = [float(v) for v in _VALUE.findall(stderr)]
    return np.array(values, dtype=np.float64)


def measure(recording: Recording) -> Signals:
    seconds = {}
    started = time.perf_counter()
    select = _per_frame(
        _ffmpeg_filter(
            recording.path, recording.stream, "select='gte(scene,0)',metadata=print:key=lavfi.scene_score"
        )
    )
    seconds["select"] = time.perf_counter() - started
    started = time.perf_counter()
    scdet = _per_frame(
        _ffmpeg_filter(
            recording.path, recording.stream, "scdet=threshold=100,metadata=print:key=lavfi.scd.score"
        )
    )
    seconds["scdet"] = time.perf_counter() - started
    started = time.perf_counter()
    freeze = _ffmpeg_filter(recording.path, recording.stream, "freezedetect=n=-50dB:d=0.5")
    seconds["freeze"] = time.perf_counter() - started
    started = time.perf_counter()
    times, thumbs = [], []
    with av.open(str(recording.path)) as container:
        stream = container.streams[recording.stream]
        stream.thread_type = "AUTO"
        origin = (container.start_time or 0) / av.time_base
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:  # a damaged packet: the decoder goes on with the next one
                continue
            for frame in frames:
                if frame.time is None:
                    continue
                small = frame.reformat(width=THUMB[0], height=THUMB[1], format="gray", interpolation="AREA")
                times.append(frame.time - origin)
                thumbs.append(small.to_ndarray().astype(np.float32))
    seconds["thumbs"] = time.perf_counter() - started
    order = np.argsort(times, kind="stable")
    return Signals(
        frame_times=np.array(times)[order],
        thumbs=np.stack(thumbs)[order],
        select=select,
        scdet=scdet,
        freeze_ends=[float(t) for t in _FREEZE_END.findall(freeze)],
        seconds=seconds,
    )


def _above(signals: Signals, values: np.ndarray, threshold: float) -> list[float]:
    n = min(len(values), len(signals.frame_times))
    return [float(t) for t, v in zip(signals.frame_times[1:n], values[1:n], strict=True) if v > threshold]


def refractory(found: list[float], seconds: float) -> list[float]:
    """``found`` without the detections that follow a kept one by less than ``seconds``: what ffmpeg's
    ``select`` keeps with ``gte(t-prev_selected_t, seconds)`` in its expression."""
    kept: list[float] = []
    for t in found:
        if not kept or t - kept[-1] >= seconds:
            kept.append(t)
    return kept


def ticks(signals: Signals, share: float) -> list[float]:
    """Interval frames (the picture on screen at each whole second) compared with the previous tick."""
    end = signals.frame_times[-1]
    found, previous = [], None
    for tick in range(int(end) + 1):
        index = int(np.searchsorted(signals.frame_times, tick + 1e-6, side="right")) - 1
        picture = signals.thumbs[max(index, 0)]
        if previous is not None and float((np.abs(picture - previous) > CELL_MOVED).mean()) > share:
            found.append(float(tick))
        previous = picture
    return found


def masked_scores(signals: Signals) -> np.ndarray:
    """Per frame: the share of cells that move now and stood still for the second before."""
    if signals.masked is None:
        times, thumbs = signals.frame_times, signals.thumbs
        last_moved = np.full(thumbs.shape[1:], -np.inf)
        scores = np.zeros(len(times))
        for i in range(1, len(times)):
            moved = np.abs(thumbs[i] - thumbs[i - 1]) > CELL_MOVED
            scores[i] = float((moved & (times[i] - last_moved >= STILL_FOR)).mean())
            last_moved[moved] = times[i]
        signals.masked = scores
    return signals.masked


def masked(signals: Signals, share: float) -> list[float]:
    """Changes of cells that stood still for the second before, at most one a second."""
    return refractory(_above(signals, masked_scores(signals), share), REFRACTORY)


def score(found: list[float], changes: list[tuple[float, float, str]]) -> tuple[int, int, int]:
    """(hits, false alarms, misses) of ``found`` against the designed ``changes``.

    A change of picture size is not scored: the pipeline starts a new scene there whatever the
    detector says, so a detection there is neither a hit nor an alarm.
    """
    resizes = [(start, end) for start, end, kind in changes if kind == "resize"]
    found = [t for t in found if not any(s - BEFORE <= t <= e + AFTER for s, e in resizes)]
    scored = [c for c in changes if c[2] != "resize"]
    used: set[int] = set()
    hits = 0
    for start, end, _ in scored:
        inside = [i for i, t in enumerate(found) if start - BEFORE <= t <= end + AFTER and i not in used]
        if inside:
            used.add(inside[0])
            hits += 1
    return hits, len(found) - len(used), len(scored) - hits


Method = Callable[[Signals], list[float]]


def candidates() -> list[tuple[str, str, Method]]:
    methods: list[tuple[str, str, Method]] = []
    for t in (0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3):
        methods.append(("select", f"{t:g}", lambda s, t=t: _above(s, s.select, t)))
    for t in (0.05, 0.06, 0.07, 0.08, 0.09, 0.1):
        methods.append(
            (
                "select",
                f"{t:g} +{REFRACTORY:g}s",
                lambda s, t=t: refractory(_above(s, s.select, t), REFRACTORY),
            )
        )
    for t in (3.0, 5.0, 8.0, 10.0, 15.0, 20.0):
        methods.append(("scdet", f"{t:g}", lambda s, t=t: _above(s, s.scdet, t)))
    methods.append(("freeze", "-50dB 0.5s", lambda s: s.freeze_ends))
    for share in (0.01, 0.02, 0.05, 0.1, 0.2):
        methods.append(("ticks", f"{share:g}", lambda s, share=share: ticks(s, share)))
    for share in (0.005, 0.01, 0.02, 0.05, 0.1):
        methods.append(("masked", f"{share:g}", lambda s, share=share: masked(s, share)))
    return methods


def margins(cases: list[Recording], signals: dict[str, Signals]) -> dict[str, dict[str, Any]]:
    """For each per-frame score: the weakest designed change (its best frame) against the strongest
    frame that is no change, in the recording with a video in the page and in all the others."""
    scores: dict[str, Callable[[Signals], np.ndarray]] = {
        "select": lambda s: s.select,
        "scdet": lambda s: s.scdet / 100,
        "masked": masked_scores,
    }
    result = {}
    for name, of in scores.items():
        weakest: tuple[float, str] = (np.inf, "")
        strongest = {"video in page": (0.0, ""), "others": (0.0, "")}
        for case in cases:
            sig = signals[case.name]
            values = of(sig)[: len(sig.frame_times)]
            times = sig.frame_times[: len(values)]
            near = np.zeros(len(values), dtype=bool)
            near[0] = True  # the first frame is always kept
            for start, end, kind in case.changes:
                window = (times >= start - BEFORE) & (times <= end + AFTER)
                near |= window
                if kind != "resize" and window.any():
                    weakest = min(weakest, (float(values[window].max()), f"{case.name} {start:g} s"))
            if (~near).any():
                i = int(np.argmax(np.where(near, -1.0, values)))
                group = "video in page" if case.name == "video-in-page.mp4" else "others"
                strongest[group] = max(strongest[group], (float(values[i]), f"{case.name} {times[i]:.2f} s"))
        result[name] = {"weakest": weakest, **strongest}
    return result


def recordings(long: bool) -> list[Recording]:
    manifest = load_corpus()["cases"]
    found = []
    for name, entry in sorted(manifest.items()):
        expect = entry["expect"]
        if entry["changes"] is None or expect["status"] != "done":
            continue
        changes = [tuple(c) for c in entry["changes"]]
        found.append(Recording(name, CORPUS_DIR / name, changes, expect["video_stream"]))  # type: ignore[arg-type]
    if long:
        from sandbox.corpus.derived import LONG_FILE, long_session

        path, entry = long_session()
        found.append(Recording(LONG_FILE, path, [tuple(c) for c in entry["changes"]], 0))  # type: ignore[arg-type]
    return found


def run(long: bool) -> dict[str, Any]:
    cases = recordings(long)
    signals = {case.name: measure(case) for case in cases}
    rows = []
    for family, setting, method in candidates():
        hits = alarms = misses = 0
        distractor_alarms = 0
        per_case = {}
        for case in cases:
            h, a, m = score(method(signals[case.name]), case.changes)
            hits, alarms, misses = hits + h, alarms + a, misses + m
            per_case[case.name] = (h, a, m)
            if case.name in DISTRACTORS:
                distractor_alarms += a
        precision = hits / (hits + alarms) if hits + alarms else 1.0
        recall = hits / (hits + misses) if hits + misses else 1.0
        rows.append(
            {
                "method": family,
                "setting": setting,
                "hits": hits,
                "alarms": alarms,
                "misses": misses,
                "precision": precision,
                "recall": recall,
                "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                "distractor_alarms": distractor_alarms,
                "per_case": per_case,
            }
        )
    timing = {
        k: statistics.fmean(s.seconds[k] for s in signals.values())
        for k in ("select", "scdet", "freeze", "thumbs")
    }
    return {"cases": cases, "rows": rows, "timing": timing, "margins": margins(cases, signals)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--long", action="store_true", help="also the 20-minute recording")
    args = parser.parse_args()
    result = run(args.long)
    cases = result["cases"]
    changes = sum(1 for c in cases for *_, kind in c.changes if kind != "resize")
    kinds = {
        k: sum(1 for c in cases for *_, kind in c.changes if kind == k) for k in ("navigation", "scroll")
    }
    print(
        f"\n{len(cases)} recordings, {changes} designed changes ({kinds['navigation']} navigations, "
        f"{kinds['scroll']} scrolls; size changes are not scored); distractor recordings: {', '.join(DISTRACTORS)}\n"
    )
    print(
        f"{'method':8} {'setting':>11} {'hits':>5} {'alarms':>6} {'misses':>6} {'precision':>9} {'recall':>7} {'F1':>6} {'alarms on distractors':>22}"
    )
    for row in result["rows"]:
        print(
            f"{row['method']:8} {row['setting']:>11} {row['hits']:5d} {row['alarms']:6d} {row['misses']:6d} "
            f"{row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['distractor_alarms']:22d}"
        )
    print(
        "\nPer recording (hits/alarms/misses): the old default (0.2), the pipeline's default, the best of each method"
    )
    best: dict[str, dict[str, Any]] = {}
    for row in result["rows"]:
        if row["method"] not in best or row["f1"] > best[row["method"]]["f1"]:
            best[row["method"]] = row
    # The pipeline: its threshold, and at most one scene frame per SCENE_MIN_GAP seconds.
    defaults = {("select", "0.2"), ("select", f"{Settings().scene_threshold:g} +{SCENE_MIN_GAP:g}s")}
    shown = [r for r in result["rows"] if (r["method"], r["setting"]) in defaults] + list(best.values())
    header = "".join(f" {r['method'][:6] + ' ' + r['setting']:>14}" for r in shown)
    print(f"{'recording':30}{'changes':>8}{header}")
    for case in cases:
        cells = "".join(f" {'/'.join(str(v) for v in r['per_case'][case.name]):>14}" for r in shown)
        scored = sum(1 for *_, kind in case.changes if kind != "resize")
        print(f"{case.name:30}{scored:8d}{cells}")
    print("\nScore margins: the weakest designed change against the strongest frame that is no change")
    print(
        f"{'score':8} {'weakest change':>34} {'strongest, video in page':>38} {'strongest, other recordings':>38}"
    )
    for name, m in result["margins"].items():
        cells = [f"{value:.3f} ({where})" for value, where in (m["weakest"], m["video in page"], m["others"])]
        print(f"{name:8} {cells[0]:>34} {cells[1]:>38} {cells[2]:>38}")
    timing = result["timing"]
    print(
        "\nMean wall seconds per recording to measure: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in timing.items())
    )


if __name__ == "__main__":
    main()
