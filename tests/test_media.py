"""``tasks.media.video`` against the committed clips, with the real ffmpeg: no mocks.

Expected values (durations, streams, cut times) come from ``sandbox/media/manifest.json``. The clips
are 25 fps, so "within one frame" is 0.04 s.
"""

from __future__ import annotations

import os
import re
import wave
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np
import pytest

from sandbox.corpus import CORPUS_DIR
from sandbox.media import MEDIA_DIR
from sandbox.media.manifest import load_manifest
from sandbox.media.probe import ffmpeg as run_ffmpeg
from tasks.media.video import (
    DEFAULT_SCENE_THRESHOLD,
    Extraction,
    FrameInfo,
    MediaError,
    StreamLoss,
    check_loss,
    extract,
    ffmpeg_binary,
    frames_index,
    probe,
    stable_sizes,
)

MANIFEST = load_manifest()
SPEECH = ["speech-1.mp4", "speech-2.mp4", "speech-3.mp4"]
READABLE = sorted(name for name, clip in MANIFEST.items() if clip["duration"] is not None)
ONE_FRAME = 0.04
LENGTH = 0.1  # seconds: durations and cut times
# The clips' cuts score 0.285 to 1.0 on ffmpeg's scene score, frames within a slide at most 0.03:
# the default threshold (0.07, chosen on the corpus with bench/scenes.py) finds every cut.
SCENE_THRESHOLD = DEFAULT_SCENE_THRESHOLD


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
def test_scene_frames_open_with_the_first_frame_then_the_cuts(
    speech: dict[str, Extraction], name: str
) -> None:
    cuts = MANIFEST[name]["scene_changes"]
    times = [frame.timestamp for frame in of_kind(speech[name], "scene")]

    assert times[0] == 0.0  # the opening scene
    for cut in cuts:
        assert any(abs(t - cut) <= LENGTH for t in times), f"no scene frame near {cut} s in {times}"
    spurious = [t for t in times[1:] if all(abs(t - cut) > LENGTH for cut in cuts)]
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
    # Time order, and at one time the interval frame before the scene frame: the first two entries
    # are the first picture, as the first tick and as the opening scene.
    assert [(e["timestamp"], e["kind"]) for e in index[:3]] == [
        (0.0, "interval"),
        (0.0, "scene"),
        (1.0, "interval"),
    ]
    by_key = {entry["key"]: entry for entry in index}
    assert by_key["sessions/abc/frames/interval_000003.000.jpg"] == {
        "key": "sessions/abc/frames/interval_000003.000.jpg",
        "timestamp": 3.0,
        "kind": "interval",
        "width": 640,
        "height": 360,
    }
    assert by_key["sessions/abc/frames/scene_000003.000.jpg"]["timestamp"] == 3.0


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


def test_video_without_audio_gets_its_frames_and_a_missing_audio(tmp_path: Path) -> None:
    # A % in the folder name must not be read as part of ffmpeg's image-sequence pattern.
    out = tmp_path / "100%d done"
    extraction = extract(MEDIA_DIR / "no-audio.mp4", out)

    assert extraction.missing == {"audio": "no audio stream"}
    assert extraction.audio is None and extraction.audio_stream is None
    assert not (out / "audio.wav").exists()
    assert len(of_kind(extraction, "interval")) == 6
    assert [f.timestamp for f in of_kind(extraction, "scene")] == [
        0.0,
        *MANIFEST["no-audio.mp4"]["scene_changes"],
    ]
    assert all(f.path.parent == out.resolve() / "frames" for f in extraction.frames)
    assert extraction.duration == pytest.approx(MANIFEST["no-audio.mp4"]["duration"], abs=ONE_FRAME)


def test_audio_without_video_gets_its_audio_and_missing_frames(tmp_path: Path) -> None:
    extraction = extract(MEDIA_DIR / "audio-only.mp4", tmp_path)

    assert extraction.missing == {"frames": "no video stream"}
    assert extraction.frames == [] and not (tmp_path / "frames").exists()
    assert extraction.audio_duration == pytest.approx(MANIFEST["audio-only.mp4"]["duration"], abs=LENGTH)
    assert extraction.video_stream is None


def test_only_missing_streams_wanted_writes_nothing(tmp_path: Path) -> None:
    extraction = extract(MEDIA_DIR / "no-audio.mp4", tmp_path, want_frames=False)

    assert extraction.missing == {"audio": "no audio stream"}
    assert (extraction.audio, extraction.frames, extraction.duration) == (None, [], None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [("empty.mp4", r"^empty file \(0 bytes\)$"), ("corrupt.mp4", r"^cannot read the container: ")],
)
def test_unreadable_files(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        extract(MEDIA_DIR / name, tmp_path)
    assert_no_output(tmp_path)


@pytest.mark.parametrize("packet_boundary", [False, True])
def test_truncated_file_fails_with_what_is_missing(tmp_path: Path, packet_boundary: bool) -> None:
    """The first 60% of speech-1's bytes: the index (at the front) promises 11.44 s, the data stops
    at about 7.5 s, inside a packet or right after one (then it reads as a clean early end and
    ffmpeg exits 0). Either way the decoded length falls short of the index by far more than the
    loss allowed, for the audio and, when only frames are wanted, for the video."""
    source = MEDIA_DIR / "speech-1.mp4"
    data = source.read_bytes()
    cut = len(data) * 6 // 10
    if packet_boundary:
        with av.open(str(source)) as container:
            ends = sorted(p.pos + p.size for p in container.demux() if p.pos is not None and p.size)
        cut = next(end for end in ends if end >= cut)
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(data[:cut])
    out = tmp_path / "out"

    with pytest.raises(
        MediaError, match=r"^truncated: the audio stops 3\.\d\d s before the end its index"
    ) as caught:
        extract(clip, out)
    assert re.search(r"\(3\d% of 11\.\d\d s missing, more than the 2\.0% allowed\)$", str(caught.value))
    assert_no_output(out)
    with pytest.raises(
        MediaError, match=r"^truncated: the video stops [34]\.\d\d s before the end its index"
    ):
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

    assert [f.timestamp for f in of_kind(extraction, "scene")] == [0.0, 2.4, 5.413, 8.4]


def test_rotated_video_gives_portrait_frames_and_its_displayed_size(tmp_path: Path) -> None:
    clip = tmp_path / "portrait.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", MEDIA_DIR / "no-audio.mp4", "-c", "copy", clip)

    extraction = extract(clip, tmp_path / "out")
    video = extraction.video_stream

    assert video is not None
    assert (video.width, video.height, video.coded_width, video.coded_height) == (360, 640, 640, 360)
    assert video.rotation == 90
    assert {(f.width, f.height) for f in extraction.frames} == {(360, 640)}
    assert gray(extraction.frames[0].path).shape == (160, 90)


# --- extract: recordings as they really come (files of sandbox/corpus) ----------------------------


def test_a_video_without_any_change_has_exactly_one_scene_frame(tmp_path: Path) -> None:
    """A still page for 4 s scores no scene change at all: the opening scene is the whole list."""
    extraction = extract(CORPUS_DIR / "abandoned-4s.mp4", tmp_path)

    assert [f.timestamp for f in of_kind(extraction, "scene")] == [0.0]
    assert [f.timestamp for f in of_kind(extraction, "interval")] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("name", "sizes"),
    [("phone-turned.mp4", [(540, 960), (960, 540)]), ("window-resized.webm", [(1280, 720), (1024, 640)])],
)
def test_picture_size_change_gives_frames_at_each_size(
    tmp_path: Path, name: str, sizes: list[tuple[int, int]]
) -> None:
    """The picture changes size at 6 s (H.264 with new sequence headers in MP4, VP9 in WebM): each
    size is extracted as it was shown, the change starts a scene, the ticks run on, and the audio
    (its own ffmpeg process) is whole."""
    extraction = extract(CORPUS_DIR / name, tmp_path)
    intervals = of_kind(extraction, "interval")

    assert [f.timestamp for f in intervals] == [float(n) for n in range(12)]
    assert [(f.width, f.height) for f in intervals] == [sizes[0]] * 6 + [sizes[1]] * 6
    assert [(f.timestamp, (f.width, f.height)) for f in of_kind(extraction, "scene")] == [
        (0.0, sizes[0]),
        (pytest.approx(6.0, abs=ONE_FRAME), sizes[1]),
    ]
    assert extraction.audio_duration == pytest.approx(12.0, abs=LENGTH)
    assert gray(intervals[-1].path).shape == (sizes[1][1] // 4, sizes[1][0] // 4)


def test_the_screen_is_the_largest_picture_not_the_webcam(tmp_path: Path) -> None:
    extraction = extract(CORPUS_DIR / "webcam-first.mp4", tmp_path)

    assert [(v.index, v.width, v.height) for v in extraction.info.videos] == [(0, 320, 240), (1, 1280, 720)]
    assert extraction.video_stream is not None and extraction.video_stream.index == 1
    assert extraction.info.video_choice == "stream 1: the largest picture (1280x720; stream 0: 320x240)"
    assert {(f.width, f.height) for f in extraction.frames} == {(1280, 720)}


def test_a_silent_first_track_gives_way_to_the_microphone(tmp_path: Path) -> None:
    extraction = extract(CORPUS_DIR / "two-audio-tracks.mp4", tmp_path, want_frames=False)

    assert extraction.audio_stream is not None and extraction.audio_stream.index == 2
    assert extraction.audio_choice is not None
    assert extraction.audio_choice.startswith(
        "stream 2: the only audio stream with sound (stream 1: -inf dBFS"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.wav"]  # the other track's wav is gone


def test_of_two_sounding_tracks_the_one_with_speech_wins(tmp_path: Path) -> None:
    """First a loud track of noise (a computer's sound, no words), then the speech: voice activity
    decides, not loudness."""
    clip = tmp_path / "two.mp4"
    run_ffmpeg(
        "-f", "lavfi", "-i", "anoisesrc=d=5.4:c=pink:a=0.3:seed=1", "-i", MEDIA_DIR / "audio-only.mp4",
        "-map", "0:a", "-map", "1:a", "-c:a", "aac", "-ac", "1", clip,
    )  # fmt: skip
    extraction = extract(clip, tmp_path / "out")

    assert extraction.audio_stream is not None and extraction.audio_stream.index == 1
    assert extraction.audio_choice is not None and extraction.audio_choice.startswith(
        "stream 1: the most speech"
    )
    assert extraction.missing == {"frames": "no video stream"}


@pytest.mark.parametrize("name", ["offset-10s.mkv", "obs.ts", "mediarecorder.webm"])
def test_timestamps_not_from_zero_and_estimated_durations(tmp_path: Path, name: str) -> None:
    """Matroska starting at 10 s (its header's duration, 24 s, counts from 0), MPEG-TS from 1.4 s
    with estimated durations, live WebM with none: frame times count from the file's start, the
    measured length is the recording's, and nothing reads as truncated."""
    extraction = extract(CORPUS_DIR / name, tmp_path)

    assert [f.timestamp for f in of_kind(extraction, "interval")] == [float(n) for n in range(14)]
    assert extraction.duration == pytest.approx(14.0, abs=LENGTH)
    assert extraction.lost_seconds == 0


def damaged_copy(tmp_path: Path) -> Path:
    """speech-2 with 2 KiB in the middle of its media data overwritten: a few packets are lost."""
    data = bytearray((MEDIA_DIR / "speech-2.mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2048] = bytes(range(256)) * 8
    clip = tmp_path / "damaged.mp4"
    clip.write_bytes(bytes(data))
    return clip


def test_damage_within_the_allowed_loss_is_recorded(tmp_path: Path) -> None:
    extraction = extract(damaged_copy(tmp_path), tmp_path / "out", max_loss=0.2)

    assert extraction.decode_errors > 0 and extraction.lost_seconds > 0
    assert all(loss.share <= 0.2 and loss.missing_tail == 0 for loss in extraction.losses)
    assert {loss.kind for loss in extraction.losses} == {"audio", "video"}
    assert len(of_kind(extraction, "interval")) == 15  # the pictures around the damage are all there
    assert extraction.audio_duration == pytest.approx(MANIFEST["speech-2.mp4"]["duration"], abs=LENGTH)


def test_damage_beyond_the_allowed_loss_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(MediaError, match=r"^damaged: \d+ of \d+ (audio|video) packets could not be decoded"):
        extract(damaged_copy(tmp_path), out, max_loss=0.0)
    assert_no_output(out)


def test_stable_sizes_fold_the_sizes_of_a_dragged_window() -> None:
    wide, dragged, narrow = (1280, 720), (1100, 700), (1024, 640)
    changes = [(0.04, wide), (5.0, dragged), (5.2, (1050, 660)), (5.4, narrow), (9.0, wide), (9.5, narrow)]

    assert stable_sizes(changes) == [(0.0, wide), (5.4, narrow)]
    assert stable_sizes([(0.0, wide)]) == [(0.0, wide)]
    assert stable_sizes([]) == []


def test_loss_is_measured_per_stream_and_named_in_the_message() -> None:
    damaged = StreamLoss(0, "video", packets=1000, decode_errors=30, missing_tail=0.0, length=40.0)
    cut = StreamLoss(1, "audio", packets=500, decode_errors=0, missing_tail=30.0, length=40.0)

    assert damaged.lost_seconds == pytest.approx(1.2) and damaged.share == pytest.approx(0.03)
    assert cut.share == pytest.approx(0.75)
    with pytest.raises(
        MediaError, match=r"^damaged: 30 of 1000 video packets .*about 1\.2 s, 3\.0% of the video"
    ):
        check_loss(damaged, 0.02)
    check_loss(damaged, 0.05)
    with pytest.raises(
        MediaError, match=r"^truncated: the audio stops 30\.00 s before the end its index promises"
    ):
        check_loss(cut, 0.5)


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
