"""Frame benchmark: the pipeline's ffmpeg stage against a plain ffmpeg command, and what decoder options buy.

    .venv/bin/python -m bench.frames [--minutes 10] [--rounds 3] [--quick]

A realistic 720p H.264 + AAC session of the given length (``sandbox.media.generate --long-minutes``)
is made in a temporary folder. Every variant below runs once per round, in an order that rotates
each round, after one warm-up. Reported: the best wall time of the rounds (the least disturbed by
other work on a shared machine; the median beside it) as times real time and as a speed ratio against
the plain command (goal of the issue: 2x), and the median CPU time (user + system, ffmpeg and this
process), which other tenants disturb far less. Every variant samples one frame per second and
writes JPEGs at the pipeline's quality (``-q:v 3``), with imageio-ffmpeg's binary.

- ``plain``: ``ffmpeg -i in.mp4 -vf fps=1 -q:v 3 out_%06d.jpg``; ``plain, default quality`` is the same
  without ``-q:v``; the other plain rows add one option to it: ``-skip_loop_filter nokey|all`` (no
  deblocking on non-key / all frames), ``-skip_frame nokey`` (decode keyframes only), ``-skip_frame
  bidir`` (skip B-frames: decode only I and P frames), ``-threads 2`` (decoder threads), ``+ audio.wav``
  (the 16 kHz wav in the same pass) and ``two passes`` (frames, then the wav in a second command; the
  time is the sum).
- ``pipeline``: ``tasks.media.video.extract`` with frames only, frames + audio (one pass, what a session
  gets), or two calls (frames, then audio). It also writes scene-change frames, and checks and names
  its outputs. The ``pipeline -skip_...`` rows are the one-pass call with an input option added to its
  ffmpeg command (by wrapping ``subprocess`` inside ``tasks.media.video`` for the call: the module is unchanged).

Accuracy, from the last round's files:

- the time offset of the frame each 1-second tick takes, worked out from the frames the decoder
  emits (all of them, or those left by ``-skip_frame``, found by decoding with PyAV the same way) and
  the ``fps`` filter's rounding: ``round=near`` (ffmpeg's default, the plain command) takes the last frame that rounds to the tick,
  up to half a second *later*; ``round=up`` (the pipeline) the last frame shown at or before it;
- the mean absolute difference in luma (0 to 255) between each interval JPEG and the exact frame on
  screen at its tick (the reference: the plain command with ``fps=1:round=up``, run once, untimed),
  and how many ticks show another picture (difference above 2: a moving picture a few frames off, or
  another slide) or another slide (above 20);
- the same difference against the variant without its option (what the option alone changes);
- for pipeline rows, the scene frames against the file's designed cuts.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from unittest import mock

import av
import numpy as np

JPEG_QUALITY = ["-q:v", "3"]  # the pipeline's (tasks.media.video.JPEG_QUALITY)
QUIET = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
ANOTHER_PICTURE = 2.0  # mean luma difference above which a tick shows another picture (motion, a cut)
ANOTHER_SLIDE = 20.0  # ... and above which it shows another slide (motion stays under 10, cuts are 40+)
PYAV_SKIP_FRAME = {"nokey": "NONKEY", "bidir": "BIDIR"}  # ffmpeg's -skip_frame values, as PyAV names them
SKIP_LOOP_FILTER = ["-skip_loop_filter", "all"]
SCENE_THRESHOLD = 0.2  # the pipeline's default (UT_SCENE_THRESHOLD)
SCENE_MATCH = 0.02  # seconds: a scene frame at the cut's own frame (25 fps: half a frame)


@dataclass
class Variant:
    name: str
    run: Callable[[Path], None]  # writes into the given empty folder
    kind: str  # "plain" or "pipeline"
    rounding: str  # the fps filter's rounding: "near" or "up"
    skip_frame: str | None = None  # the decoder's -skip_frame, which decides the frames it emits
    baseline: str | None = None  # the variant without this one's option
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system, this process and its children
    note: str = ""


class _WithInputOptions:
    """Stands in for the ``subprocess`` module inside ``tasks.media.video``: adds options before ``-i``."""

    def __init__(self, options: Sequence[str]) -> None:
        self.options = list(options)

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def _with_options(self, cmd: list[str]) -> list[str]:
        at = cmd.index("-i")
        return [*cmd[:at], *self.options, *cmd[at:]]

    def run(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._with_options(cmd), **kwargs)

    def Popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._with_options(cmd), **kwargs)


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *QUIET, *args], check=True, stdin=subprocess.DEVNULL)


def _variants(video: Path) -> list[Variant]:
    from tasks.media import video as media

    src = str(video)

    def plain(*options: str, quality: bool = True, audio: bool = False) -> Callable[[Path], None]:
        def go(out: Path) -> None:
            wav = ["-map", "0:a", "-ac", "1", "-ar", "16000", str(out / "audio.wav")] if audio else []
            jpeg = JPEG_QUALITY if quality else []
            _ffmpeg(*options, "-i", src, "-vf", "fps=1", *jpeg, str(out / "out_%06d.jpg"), *wav)

        return go

    def two_plain_passes(out: Path) -> None:
        plain()(out)
        _ffmpeg("-i", src, "-vn", "-ac", "1", "-ar", "16000", str(out / "audio.wav"))

    def pipeline(audio: bool, options: Sequence[str] = ()) -> Callable[[Path], None]:
        def go(out: Path) -> None:
            with mock.patch.object(media, "subprocess", _WithInputOptions(options)):
                media.extract(video, out, want_audio=audio)

        return go

    def two_pipeline_passes(out: Path) -> None:
        media.extract(video, out, want_audio=False)
        media.extract(video, out, want_frames=False)

    def single_pass_before(out: Path) -> None:
        """The extraction's command before audio and frames had a process each (commit 3fc96eb):
        one decode, one filter graph feeding the wav and both JPEG outputs, -xerror."""
        frames = out / "frames"
        frames.mkdir()
        jpeg = [
            *("-fps_mode", "passthrough", "-enc_time_base", "1:1000", "-q:v", "3", "-start_number", "0"),
            *("-stats_enc_post_fmt", "{n} {tb} {pts}"),
        ]
        _ffmpeg(
            "-xerror",
            *("-i", src, "-filter_complex"),
            "[0:1]aresample=first_pts=0[a];[0:0]split[x][y];[x]fps=fps=1:round=up[i];[y]select=gt(scene\\,0.2)[s]",
            *("-map", "[a]", "-acodec", "pcm_s16le", "-ac", "1", "-ar", "16000", str(out / "audio.wav")),
            *("-map", "[i]", *jpeg, "-stats_enc_post", str(frames / "_interval.stats")),
            str(frames / "interval_%06d.jpg"),
            *("-map", "[s]", *jpeg, "-stats_enc_post", str(frames / "_scene.stats")),
            str(frames / "_scene_%06d.jpg"),
        )

    one_pass = "pipeline frames + audio (2 processes at once)"
    return [
        Variant("plain", plain(), "plain", "near"),
        Variant("plain, default quality", plain(quality=False), "plain", "near", baseline="plain"),
        Variant(
            "plain -skip_loop_filter nokey",
            plain("-skip_loop_filter", "nokey"),
            "plain",
            "near",
            baseline="plain",
        ),
        Variant(
            "plain -skip_loop_filter all",
            plain("-skip_loop_filter", "all"),
            "plain",
            "near",
            baseline="plain",
        ),
        Variant("plain -skip_frame nokey", plain("-skip_frame", "nokey"), "plain", "near", "nokey", "plain"),
        Variant("plain -skip_frame bidir", plain("-skip_frame", "bidir"), "plain", "near", "bidir", "plain"),
        Variant("plain -threads 2", plain("-threads", "2"), "plain", "near", baseline="plain"),
        Variant("plain + audio.wav, one pass", plain(audio=True), "plain", "near", baseline="plain"),
        Variant("plain + audio.wav, two passes", two_plain_passes, "plain", "near", baseline="plain"),
        Variant("pipeline frames", pipeline(False), "pipeline", "up"),
        Variant(one_pass, pipeline(True), "pipeline", "up"),
        Variant("one pass, as before the split", single_pass_before, "plain", "up", baseline=one_pass),
        Variant(
            "pipeline frames, then audio (2 calls)", two_pipeline_passes, "pipeline", "up", baseline=one_pass
        ),
        Variant(
            "pipeline -skip_loop_filter all",
            pipeline(True, SKIP_LOOP_FILTER),
            "pipeline",
            "up",
            baseline=one_pass,
        ),
        Variant(
            "pipeline -skip_frame nokey",
            pipeline(True, ["-skip_frame", "nokey"]),
            "pipeline",
            "up",
            "nokey",
            one_pass,
        ),
        Variant(
            "pipeline -skip_frame bidir",
            pipeline(True, ["-skip_frame", "bidir"]),
            "pipeline",
            "up",
            "bidir",
            one_pass,
        ),
    ]


def _interval_frames(out: Path) -> list[Path]:
    """The variant's interval JPEGs in tick order."""
    if (out / "frames").is_dir():  # the pipeline's: interval_SSSSSS.mmm.jpg, names sort by time
        return sorted((out / "frames").glob("interval_*.jpg"))
    return sorted(out.glob("out_*.jpg"))


def _scene_times(out: Path) -> list[float]:
    return sorted(float(p.stem.split("_", 1)[1]) for p in (out / "frames").glob("scene_*.jpg"))


def _luma(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="gray").astype(np.int16)


def _frame_times(video: Path, skip_frame: str | None = None) -> list[Fraction]:
    """Presentation times (exact, on ffmpeg's output clock) of the frames the decoder emits.

    Every frame (read from the packets, nothing decoded), or with ``skip_frame`` ("nokey", "bidir")
    the frames PyAV's decoder (FFmpeg's, as ffmpeg's) still emits with that option.
    """
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        origin = Fraction(container.start_time or 0, av.time_base)
        if skip_frame is None:
            pts = [packet.pts for packet in container.demux(stream) if packet.pts is not None]
        else:
            stream.codec_context.skip_frame = PYAV_SKIP_FRAME[skip_frame]
            stream.thread_type = "AUTO"
            pts = [frame.pts for frame in container.decode(stream) if frame.pts is not None]
        time_base = Fraction(stream.time_base)  # read while the container is open
    return sorted(p * time_base - origin for p in pts)


def _keyframe_times(video: Path) -> list[Fraction]:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        origin = Fraction(container.start_time or 0, av.time_base)
        return sorted(
            p.pts * stream.time_base - origin
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        )


def offsets(times: list[Fraction], ticks: int, rounding: str) -> list[float]:
    """For each tick n (seconds), the time of the frame ffmpeg's fps=1 filter takes minus n.

    The filter outputs for tick n the last input frame whose time, rounded to whole seconds
    (``near``: half up; ``up``: ceiling), is at most n.
    """
    result, index = [], -1
    for tick in range(ticks):
        while index + 1 < len(times) and _round(times[index + 1], rounding) <= tick:
            index += 1
        result.append(float(times[max(index, 0)] - tick))
    return result


def _round(t: Fraction, rounding: str) -> int:
    return math.ceil(t) if rounding == "up" else math.floor(t + Fraction(1, 2))


def _compare(frames: list[Path], others: list[Path]) -> list[float]:
    """Mean absolute luma difference of each frame and its counterpart (0 at once for identical files)."""
    return [
        0.0 if a.read_bytes() == b.read_bytes() else float(np.abs(_luma(a) - _luma(b)).mean())
        for a, b in zip(frames, others, strict=False)
    ]


def _scenes(found: list[float], cuts: list[float], keyframe_interval: float) -> dict[str, Any]:
    """Scene frames against the designed cuts: at the cut's frame, late (within a keyframe interval), missed."""
    exact, late, used = 0, [], set()
    for cut in cuts:
        later = [s for s in found if cut - SCENE_MATCH <= s <= cut + keyframe_interval + SCENE_MATCH]
        if not later:
            continue
        used.add(later[0])
        if later[0] - cut <= SCENE_MATCH:
            exact += 1
        else:
            late.append(later[0] - cut)
    return {
        "frames": len(found),
        "exact": exact,
        "late": len(late),
        "late_median": statistics.median(late) if late else 0.0,
        "missed": len(cuts) - exact - len(late),
        "extra": len(set(found) - used),
    }


def _plain_scene_times(video: Path, out: Path, options: Sequence[str]) -> list[float]:
    """Scene frame times from the pipeline's scene filter in a plain command (untimed, for accuracy only)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    stats = out / "scene.stats"
    _ffmpeg(
        *options,
        "-i",
        str(video),
        "-vf",
        f"select=gt(scene\\,{SCENE_THRESHOLD})",
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "1:1000",
        "-stats_enc_post",
        str(stats),
        "-stats_enc_post_fmt",
        "{n} {tb} {pts}",
        *JPEG_QUALITY,
        str(out / "scene_%06d.jpg"),
    )
    times = []
    for line in stats.read_text().splitlines():
        _, time_base, pts = line.split()
        times.append(float(int(pts) * Fraction(time_base)))
    shutil.rmtree(out)
    return times


def run(minutes: int, rounds: int) -> dict[str, Any]:
    from sandbox.media.bench import build_long

    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        work = Path(tmp)
        (name, entry), *_ = build_long(work, minutes).items()
        video = work / name
        duration = float(entry["duration"])
        emitted = {skip: _frame_times(video, skip) for skip in (None, "nokey", "bidir")}
        keyframes = _keyframe_times(video)
        gaps = [float(b - a) for a, b in itertools.pairwise(keyframes)]

        reference_dir = work / "reference"
        reference_dir.mkdir()
        _ffmpeg("-i", str(video), "-vf", "fps=1:round=up", *JPEG_QUALITY, str(reference_dir / "out_%06d.jpg"))
        reference = _interval_frames(reference_dir)

        variants = _variants(video)
        outs = {v.name: work / f"v{i:02d}" for i, v in enumerate(variants)}
        warm = work / "warm"
        warm.mkdir()
        variants[0].run(warm)
        shutil.rmtree(warm)
        for index in range(rounds):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                out = outs[variant.name]
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                before, started = os.times(), time.perf_counter()
                try:
                    variant.run(out)
                except Exception as exc:  # extract() refusing the result is a finding, not a crash
                    variant.note = f"{type(exc).__name__}: {exc}"
                variant.seconds.append(time.perf_counter() - started)
                variant.cpu.append(sum(os.times()[:4]) - sum(before[:4]))

        rows = []
        plain_seconds = min(variants[0].seconds)
        plain_cpu = statistics.median(variants[0].cpu)
        for variant in variants:
            out = outs[variant.name]
            frames = _interval_frames(out)
            seconds = min(variant.seconds)
            row: dict[str, Any] = {
                "name": variant.name,
                "seconds": seconds,
                "median": statistics.median(variant.seconds),
                "runs": variant.seconds,
                "x_real_time": duration / seconds,
                "vs_plain": plain_seconds / seconds,
                "cpu": statistics.median(variant.cpu),
                "cpu_vs_plain": plain_cpu / statistics.median(variant.cpu),
                "frames": len(frames),
                "note": variant.note,
            }
            # Without frames (extract() refused them), the offsets its ticks would have had.
            shift = offsets(emitted[variant.skip_frame], len(frames) or len(reference), variant.rounding)
            row.update(offset_mean=statistics.fmean(abs(s) for s in shift), offset_max=max(shift, key=abs))
            if frames:
                exact = _compare(frames, reference)
                row.update(
                    mad_exact=statistics.fmean(exact),
                    mad_exact_max=max(exact),
                    ticks_off=sum(d > ANOTHER_PICTURE for d in exact),
                    ticks_other_slide=sum(d > ANOTHER_SLIDE for d in exact),
                )
                if variant.baseline:
                    own = _compare(frames, _interval_frames(outs[variant.baseline]))
                    row.update(mad_own=statistics.fmean(own), mad_own_max=max(own))
                if variant.kind == "pipeline":
                    row["scenes"] = _scenes(_scene_times(out), entry["scene_changes"], max(gaps))
            rows.append(row)
        plain_scenes = {
            label: _scenes(
                _plain_scene_times(video, work / "scenes", options), entry["scene_changes"], max(gaps)
            )
            for label, options in (
                ("select, every frame", []),
                ("select, -skip_frame nokey", ["-skip_frame", "nokey"]),
                ("select, -skip_frame bidir", ["-skip_frame", "bidir"]),
            )
        }
    return {
        "cores": os.cpu_count(),
        "file": name,
        "duration": duration,
        "keyframe_gap": (min(gaps), statistics.median(gaps), max(gaps)),
        "frames_total": len(emitted[None]),
        "frames_bidir": len(emitted["bidir"]),
        "cuts": len(entry["scene_changes"]),
        "reference_frames": len(reference),
        "rows": rows,
        "plain_scenes": plain_scenes,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="length of the 720p session")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--quick", action="store_true", help="a 3-minute session (about 3 minutes)")
    args = parser.parse_args()
    minutes = 3 if args.quick else args.minutes
    r = run(minutes, args.rounds)

    import imageio_ffmpeg

    low, mid, high = r["keyframe_gap"]
    print(
        f"\nFrames of {r['file']} ({r['duration']:.1f} s, 1280x720 H.264 25 fps + AAC, {r['frames_total']} frames of "
        f"which {r['frames_bidir']} are not B-frames, keyframe every {mid:g} s (min {low:g}, max {high:g}), "
        f"{r['cuts']} designed cuts) on {r['cores']} cores, ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}, "
        f"1 frame per second, {r['rounds']} rotating rounds\n"
    )
    print("wall: best of the rounds (median beside it); CPU: user + system of the run, median of the rounds")
    print(
        f"{'variant':42} {'wall s':>7} {'median':>7} {'x real time':>12} {'vs plain':>9} {'CPU s':>7} "
        f"{'vs plain':>9}   runs (s)"
    )
    for row in r["rows"]:
        runs = " ".join(f"{s:.2f}" for s in row["runs"])
        print(
            f"{row['name']:42} {row['seconds']:7.2f} {row['median']:7.2f} {row['x_real_time']:12.1f} "
            f"{row['vs_plain']:8.2f}x {row['cpu']:7.2f} {row['cpu_vs_plain']:8.2f}x   {runs}"
        )

    print(
        f"\nAccuracy of the interval frames ({r['reference_frames']} exact reference frames); offsets in seconds "
        f"(+ later, - earlier than the tick), differences in luma levels (mean / worst frame)"
    )
    print(
        f"{'variant':42} {'frames':>6} {'offset |mean|':>13} {'worst':>6} {'vs exact frame':>15} "
        f"{'ticks: other picture':>20} {'other slide':>11} {'vs without option':>18}"
    )
    for row in r["rows"]:
        if "mad_exact" not in row:
            print(
                f"{row['name']:42} {row['frames']:6d} {row['offset_mean']:13.2f} {row['offset_max']:+6.2f}"
                "   (offsets of the ticks it would have written; extract() refused the result, below)"
            )
            continue
        own = f"{row['mad_own']:.2f} / {row['mad_own_max']:.1f}" if "mad_own" in row else "-"
        print(
            f"{row['name']:42} {row['frames']:6d} {row['offset_mean']:13.2f} {row['offset_max']:+6.2f} "
            f"{row['mad_exact']:7.2f} / {row['mad_exact_max']:5.1f} {row['ticks_off']:20d} "
            f"{row['ticks_other_slide']:11d} {own:>18}"
        )

    print(f"\nScene frames of the pipeline rows against the {r['cuts']} designed cuts")
    print(
        f"{'variant':42} {'frames':>6} {'at the cut':>10} {'late':>5} {'median delay':>13} {'missed':>7} {'extra':>6}"
    )
    scene_rows = [(row["name"], row["scenes"]) for row in r["rows"] if "scenes" in row]
    scene_rows += [(f"plain {label} (untimed)", s) for label, s in r["plain_scenes"].items()]
    for name, s in scene_rows:
        print(
            f"{name:42} {s['frames']:6d} {s['exact']:10d} {s['late']:5d} {s['late_median']:12.2f}s "
            f"{s['missed']:7d} {s['extra']:6d}"
        )
    for row in r["rows"]:
        if row["note"]:
            print(f"\n{row['name']}: extract() refused the result: {row['note']}")


if __name__ == "__main__":
    main()
