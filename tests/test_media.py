"""``tasks.media`` against the committed clips, with the real ffmpeg: no mocks.

Expected values (durations, streams, cut times) come from ``sandbox/media/manifest.json``. The clips
are 25 fps, so "within one frame" is 0.04 s.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np
import pytest

from sandbox.media import MEDIA_DIR
from sandbox.media.manifest import load_manifest
from sandbox.media.probe import ffmpeg as run_ffmpeg
from tasks.media import (
    Extraction,
    FrameInfo,
    MediaError,
    extract,
    ffmpeg_binary,
    frames_index,
    probe,
)

MANIFEST = load_manifest()
SPEECH = ["speech-1.mp4", "speech-2.mp4", "speech-3.mp4"]
READABLE = sorted(name for name, clip in MANIFEST.items() if clip["duration"] is not None)
ONE_FRAME = 0.04
LENGTH = 0.1  # seconds: durations and cut times
# The clips' cuts score 0.285 to 1.0 on ffmpeg's scene score, frames within a slide at most 0.03
# (speech-2's cut at 4.0 s, between two pale pages, scores 0.285): the default threshold, 0.2,
# sits between the two; 0.3 would miss that cut (and 17 of 203 cuts of the 10-minute long file).
SCENE_THRESHOLD = 0.2


def gray(path: Path) -> np.ndarray:
    """Decode a JPEG (which also proves it is one) into a small grey image for comparisons."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray")[::4, ::4].astype(float)


def of_kind(extraction: Extraction, kind: str) -> list[FrameInfo]:
    return [frame for frame in extraction.frames if frame.kind == kind]


def wav_facts(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as reader:
        return (
            reader.getframerate(),
            reader.getnchannels(),
            reader.getsampwidth(),
            reader.getnframes() / reader.getframerate(),
        )


def assert_no_output(out_dir: Path) -> None:
    assert not (out_dir / "audio.wav").exists()
    assert not (out_dir / "frames").exists()


# --- probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", READABLE)
def test_probe_matches_manifest(name: str) -> None:
    clip: dict[str, Any] = MANIFEST[name]
    info = probe(MEDIA_DIR / name)

    assert "mp4" in info.format
    assert info.size == (MEDIA_DIR / name).stat().st_size
    assert info.duration == pytest.approx(clip["duration"], abs=LENGTH)
    assert (info.audio is not None, info.video is not None) == (clip["has_audio"], clip["has_video"])
    if info.video is not None:
        assert (info.video.codec, info.video.width, info.video.height) == ("h264", 640, 360)
        assert info.video.fps == pytest.approx(25)
        assert info.video.frames == round(clip["duration"] * 25)
        assert info.video.duration == pytest.approx(clip["duration"], abs=LENGTH)
    if info.audio is not None:
        assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 1)
        assert info.audio.duration == pytest.approx(clip["duration"], abs=LENGTH)


def test_probe_rejects_an_empty_file() -> None:
    with pytest.raises(MediaError, match=r"^empty file \(0 bytes\)$"):
        probe(MEDIA_DIR / "empty.mp4")


def test_probe_rejects_a_corrupt_file_with_the_demuxers_reason() -> None:
    with pytest.raises(MediaError, match=r"^cannot read the container: moov atom not found"):
        probe(MEDIA_DIR / "corrupt.mp4")
    # The detour through PyAV's logging leaves its (quiet) default in place.
    assert av.logging.get_level() is None


# --- extract: the speech clips -----------------------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Extraction]:
    """Each speech clip extracted once: audio, 1 frame/s, scene frames."""
    out = tmp_path_factory.mktemp("speech")
    return {name: extract(MEDIA_DIR / name, out / name, scene_threshold=SCENE_THRESHOLD) for name in SPEECH}


@pytest.mark.parametrize("name", SPEECH)
def test_interval_frames_every_second(speech: dict[str, Extraction], name: str) -> None:
    duration = MANIFEST[name]["duration"]
    times = [frame.timestamp for frame in of_kind(speech[name], "interval")]

    assert abs(len(times) - duration) <= 1
    assert times == pytest.approx([float(n) for n in range(len(times))], abs=ONE_FRAME)


@pytest.mark.parametrize("name", SPEECH)
def test_scene_frames_at_the_cuts(speech: dict[str, Extraction], name: str) -> None:
    cuts = MANIFEST[name]["scene_changes"]
    times = [frame.timestamp for frame in of_kind(speech[name], "scene")]

    for cut in cuts:
        assert any(abs(t - cut) <= LENGTH for t in times), f"no scene frame near {cut} s in {times}"
    spurious = [t for t in times if all(abs(t - cut) > LENGTH for cut in cuts)]
    assert len(spurious) <= 1, spurious


@pytest.mark.parametrize("name", SPEECH)
def test_interval_frames_show_what_was_on_screen_at_their_time(
    speech: dict[str, Extraction], name: str
) -> None:
    """Checked against the cuts: ffmpeg's default fps rounding would show the *next* slide up to
    half an interval early (speech-3 cuts at 2.4 s, so its 2.0 s frame would be from 2.48 s)."""
    cuts = MANIFEST[name]["scene_changes"]
    intervals = of_kind(speech[name], "interval")
    scenes = {round(frame.timestamp, 1): frame for frame in of_kind(speech[name], "scene")}
    # One picture per slide: the first frame, then the scene frame at each cut.
    slides = [gray(intervals[0].path)] + [gray(scenes[cut].path) for cut in cuts]

    for frame in intervals:
        picture = gray(frame.path)
        distances = [float(np.abs(picture - slide).mean()) for slide in slides]
        shown = sum(cut <= frame.timestamp for cut in cuts)
        assert int(np.argmin(distances)) == shown, f"{frame.path.name}: {distances}"


@pytest.mark.parametrize("name", SPEECH)
def test_audio_is_whisper_ready(speech: dict[str, Extraction], name: str) -> None:
    extraction = speech[name]
    assert extraction.audio is not None
    rate, channels, width, seconds = wav_facts(extraction.audio)

    assert (rate, channels, width) == (16000, 1, 2)
    assert seconds == pytest.approx(MANIFEST[name]["duration"], abs=LENGTH)
    assert extraction.audio_duration == seconds


@pytest.mark.parametrize("name", SPEECH)
def test_frames_are_jpegs_of_the_source_size_in_time_order(speech: dict[str, Extraction], name: str) -> None:
    extraction = speech[name]
    frames = extraction.frames

    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)
    assert sorted(p.name for p in frames[0].path.parent.iterdir()) == sorted(f.path.name for f in frames)
    for frame in frames:
        assert frame.path.name == f"{frame.kind}_{frame.timestamp:010.3f}.jpg"
        assert (frame.width, frame.height) == (640, 360)
        assert gray(frame.path).shape == (90, 160)
    assert extraction.seconds > 0


def test_frames_index_entries(speech: dict[str, Extraction]) -> None:
    extraction = speech["speech-1.mp4"]
    index = frames_index(extraction, "sessions/abc/frames/")

    assert len(index) == len(extraction.frames)
    assert index[3] == {
        "key": "sessions/abc/frames/interval_000003.000.jpg",
        "timestamp": 3.0,
        "kind": "interval",
        "width": 640,
        "height": 360,
    }
    assert {"key": "sessions/abc/frames/scene_000003.000.jpg", "timestamp": 3.0}.items() <= index[4].items()


# --- extract: options and odd files ------------------------------------------------------------


def test_double_frame_rate_doubles_the_frames_and_replaces_the_old_ones(tmp_path: Path) -> None:
    clip = MEDIA_DIR / "speech-1.mp4"
    once = of_kind(extract(clip, tmp_path, want_audio=False), "interval")
    twice = extract(clip, tmp_path, frame_rate=2, want_audio=False)

    assert abs(len(of_kind(twice, "interval")) - 2 * len(once)) <= 1
    assert [f.timestamp for f in of_kind(twice, "interval")] == pytest.approx(
        [n / 2 for n in range(len(of_kind(twice, "interval")))], abs=ONE_FRAME
    )
    # The second run's frames/ holds its own files only.
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == sorted(
        f.path.name for f in twice.frames
    )
    assert not (tmp_path / "audio.wav").exists()


def test_audio_only_when_frames_are_not_wanted(tmp_path: Path) -> None:
    extraction = extract(MEDIA_DIR / "speech-2.mp4", tmp_path, want_frames=False)

    assert extraction.frames == []
    assert extraction.audio == tmp_path.resolve() / "audio.wav"
    assert [p.name for p in tmp_path.iterdir()] == ["audio.wav"]


def test_video_without_audio(tmp_path: Path) -> None:
    clip = MEDIA_DIR / "no-audio.mp4"
    with pytest.raises(MediaError, match=r"^no audio stream$"):
        extract(clip, tmp_path)
    assert_no_output(tmp_path)

    # A % in the folder name must not be read as part of ffmpeg's image-sequence pattern.
    out = tmp_path / "100%d done"
    extraction = extract(clip, out, want_audio=False)
    assert extraction.audio is None
    assert len(of_kind(extraction, "interval")) == 6
    assert [f.timestamp for f in of_kind(extraction, "scene")] == MANIFEST["no-audio.mp4"]["scene_changes"]
    assert all(f.path.parent == out.resolve() / "frames" for f in extraction.frames)


def test_audio_without_video(tmp_path: Path) -> None:
    clip = MEDIA_DIR / "audio-only.mp4"
    with pytest.raises(MediaError, match=r"^no video stream$"):
        extract(clip, tmp_path)
    assert_no_output(tmp_path)

    extraction = extract(clip, tmp_path, want_frames=False)
    assert extraction.audio_duration == pytest.approx(MANIFEST["audio-only.mp4"]["duration"], abs=LENGTH)


@pytest.mark.parametrize(
    ("name", "message"),
    [("empty.mp4", r"^empty file \(0 bytes\)$"), ("corrupt.mp4", r"^cannot read the container: ")],
)
def test_unreadable_files(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        extract(MEDIA_DIR / name, tmp_path)
    assert_no_output(tmp_path)


def test_truncated_mid_packet_fails_in_ffmpeg(tmp_path: Path) -> None:
    """The first 60% of speech-1's bytes: the index (at the front) promises 11.44 s, the data stops
    inside a video packet. With -xerror ffmpeg 9 fails on that packet, and the MediaError carries
    its last error lines. (Without -xerror it exits 0 with 7.5 s of output, which the length check
    of the next test catches.)"""
    data = (MEDIA_DIR / "speech-1.mp4").read_bytes()
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out"

    with pytest.raises(MediaError, match=r"^ffmpeg failed \(exit \d+\): .*corrupt input packet") as caught:
        extract(clip, out)
    assert "@ 0x" not in str(caught.value) and str(caught.value).count(";") <= 2
    assert_no_output(out)


def test_truncated_at_a_packet_boundary_is_caught_by_the_length_checks(tmp_path: Path) -> None:
    """Cut right after a whole packet, the file reads as a clean early end: ffmpeg exits 0 with
    7.5 s of output. The comparison with the header's stream lengths turns that into a MediaError,
    for the audio and, when only frames are wanted, for the frames."""
    source = MEDIA_DIR / "speech-1.mp4"
    data = source.read_bytes()
    with av.open(str(source)) as container:
        ends = sorted(p.pos + p.size for p in container.demux() if p.pos is not None and p.size)
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(data[: next(end for end in ends if end >= len(data) * 6 // 10)])
    out = tmp_path / "out"

    with pytest.raises(MediaError, match=r"^audio\.wav is 7\.\d\d s but the audio stream ends at 11\.44 s"):
        extract(clip, out)
    assert_no_output(out)
    with pytest.raises(MediaError, match=r"^frames stop at 7\.00 s but the video stream ends at 11\.44 s"):
        extract(clip, out, want_audio=False)
    assert_no_output(out)


def test_late_audio_is_padded_so_the_wav_starts_with_the_video(tmp_path: Path) -> None:
    """Audio that starts 0.7 s into the file: the wav gets 0.7 s of leading silence, so a word
    transcribed at t seconds lines up with the frame at t seconds."""
    clip = tmp_path / "late.mp4"
    run_ffmpeg(
        "-i", MEDIA_DIR / "no-audio.mp4", "-itsoffset", "0.7", "-i", MEDIA_DIR / "audio-only.mp4",
        "-map", "0:v", "-map", "1:a", "-c", "copy", clip,
    )  # fmt: skip
    aligned = extract(clip, tmp_path / "late", want_frames=False)
    plain = extract(MEDIA_DIR / "audio-only.mp4", tmp_path / "plain", want_frames=False)

    def onset(path: Path | None) -> float:
        assert path is not None
        with wave.open(str(path), "rb") as reader:
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        return int(np.argmax(np.abs(samples) > 300)) / 16000

    assert onset(aligned.audio) - onset(plain.audio) == pytest.approx(0.7, abs=0.01)


def test_variable_frame_rate_keeps_exact_frame_times(tmp_path: Path) -> None:
    """Odd frames delayed by 13 ms (so 5.4 s becomes 5.413 s): ffmpeg's default encoder time base
    (1/average rate) would report 5.406 s."""
    clip = tmp_path / "vfr.mp4"
    run_ffmpeg(
        "-i", MEDIA_DIR / "speech-3.mp4", "-an", "-vf", r"setpts=PTS+0.013*mod(N\,2)/TB",
        "-fps_mode", "passthrough", "-enc_time_base", "1:90000", "-video_track_timescale", "90000",
        "-c:v", "libx264", "-preset", "ultrafast", clip,
    )  # fmt: skip
    extraction = extract(clip, tmp_path / "out", want_audio=False)

    assert [f.timestamp for f in of_kind(extraction, "scene")] == [2.4, 5.413, 8.4]


def test_rotated_video_reports_the_size_written(tmp_path: Path) -> None:
    clip = tmp_path / "portrait.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", MEDIA_DIR / "no-audio.mp4", "-c", "copy", clip)

    frames = extract(clip, tmp_path / "out", want_audio=False).frames

    assert {(f.width, f.height) for f in frames} == {(360, 640)}
    assert gray(frames[0].path).shape == (160, 90)


def test_nothing_to_extract_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to extract"):
        extract(MEDIA_DIR / "speech-1.mp4", tmp_path, want_audio=False, want_frames=False)


# --- ffmpeg_binary -----------------------------------------------------------------------------


def test_ffmpeg_binary_defaults_to_imageio_ffmpeg() -> None:
    assert ffmpeg_binary(None) == imageio_ffmpeg.get_ffmpeg_exe()


def test_ffmpeg_binary_accepts_a_configured_executable() -> None:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    assert ffmpeg_binary(exe) == exe


def test_ffmpeg_binary_names_a_missing_one(tmp_path: Path) -> None:
    not_executable = tmp_path / "ffmpeg"
    not_executable.write_text("")
    os.chmod(not_executable, 0o644)

    for configured in [str(tmp_path / "missing"), str(not_executable)]:
        with pytest.raises(MediaError, match=f"configured ffmpeg '{configured}' is not an executable"):
            ffmpeg_binary(configured)
    with pytest.raises(MediaError, match="is not an executable"):
        extract(MEDIA_DIR / "speech-1.mp4", tmp_path / "out", ffmpeg=str(tmp_path / "missing"))
