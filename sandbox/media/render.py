"""Encode slides and sound tracks to MP4 with the bundled ffmpeg (H.264 + AAC, as screen recorders do).

Every output gets ``-fflags +bitexact``, no copied metadata and a single x264 thread where asked,
so that regenerating the committed files gives the same bytes with the same ffmpeg build.
``+faststart`` puts the index (moov) first, like MP4s prepared for web playback.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.media.clips import FPS, KEYFRAME_INTERVAL, Slide
from sandbox.media.probe import ffmpeg

# Identical inputs give identical bytes: no encoder version, time or source metadata in the file.
REPRODUCIBLE = (
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-flags:a",
    "+bitexact",
    "-map_metadata",
    "-1",
)
_AAC = ("-c:a", "aac", "-b:a", "64k", "-ac", "1", "-ar", "48000")
_MP4 = ("-movflags", "+faststart", *REPRODUCIBLE)


def _x264(preset: str, crf: int, single_thread: bool) -> list[str]:
    # No extra keyframes at cuts: the keyframe interval stays a fixed 2 s, whatever is on screen.
    args = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    args += ["-g", str(KEYFRAME_INTERVAL), "-keyint_min", str(KEYFRAME_INTERVAL), "-sc_threshold", "0"]
    return [*args, "-threads", "1"] if single_thread else args


def _slides_graph(slides: tuple[tuple[Slide, float], ...], width: int, height: int) -> str:
    chains = [f"{slide.filter(width, height, seconds)}[s{i}]" for i, (slide, seconds) in enumerate(slides)]
    inputs = "".join(f"[s{i}]" for i in range(len(slides)))
    return ";".join([*chains, f"{inputs}concat=n={len(slides)}:v=1:a=0[v]"])


def encode_clip(
    out: Path,
    *,
    wav: Path | None,
    slides: tuple[tuple[Slide, float], ...],
    width: int,
    height: int,
    preset: str = "medium",
    crf: int = 28,
    single_thread: bool = True,
) -> None:
    """Encode ``slides`` as H.264 video and ``wav`` as AAC audio into ``out``; either may be absent.

    The caller makes both the same length (see :func:`sandbox.media.speech.speak`), so no stream is cut.
    """
    inputs: list[str | Path] = []
    outputs: list[str | Path] = []
    if slides:
        inputs += ["-filter_complex", _slides_graph(slides, width, height)]
        outputs += ["-map", "[v]", *_x264(preset, crf, single_thread)]
    if wav is not None:
        inputs += ["-i", wav]
        outputs += ["-map", "0:a", *_AAC]
    ffmpeg("-y", *inputs, *outputs, *_MP4, out)


def encode_noise(out: Path, *, seconds: float, width: int, height: int, seed: int) -> None:
    """Encode seeded full-frame noise as H.264 video only: incompressible, so bytes grow fast."""
    source = f"color=c=gray:s={width}x{height}:r={FPS}:d={seconds:.2f},noise=alls=100:allf=t:all_seed={seed}"
    ffmpeg("-y", "-f", "lavfi", "-i", source, *_x264("ultrafast", 18, single_thread=False), *_MP4, out)


def repeat_with_audio(out: Path, *, video: Path, times: int, seconds: float, wav: Path) -> None:
    """Join ``times`` copies of the video-only MP4 ``video`` without re-encoding, with ``wav`` looped
    underneath for ``seconds`` and encoded once as one continuous AAC track (so no gaps at the joins).
    """
    playlist = out.with_name(f"{out.stem}.concat.txt")
    quoted = str(video.resolve()).replace("'", r"'\''")
    playlist.write_text(f"file '{quoted}'\n" * times)
    try:
        ffmpeg(
            "-y",
            *("-f", "concat", "-safe", "0", "-i", playlist),
            *("-stream_loop", "-1", "-i", wav),
            *("-map", "0:v", "-map", "1:a", "-c:v", "copy", *_AAC, "-t", f"{seconds:.3f}"),
            *_MP4,
            out,
        )
    finally:
        playlist.unlink()
