"""Turn a :class:`~sandbox.corpus.cases.Case` into its file with the bundled ffmpeg.

Each quirk of a case maps onto one ffmpeg feature: containers and codecs onto muxers and encoders,
``rotation`` onto a display matrix, ``variable_rate`` onto ``mpdecimate`` with passthrough timing,
``resize`` onto two separately encoded pieces joined without re-encoding (H.264 as Annex B with
in-band sequence headers, VP9 through the concat demuxer), ``damage`` onto a byte-level edit of the
finished file. Encoders run single-threaded with bit-exact flags, so one ffmpeg build gives the same
bytes on every run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from sandbox.corpus.cases import Case
from sandbox.corpus.screens import Screen
from sandbox.media.probe import ffmpeg
from sandbox.media.render import REPRODUCIBLE
from sandbox.media.speech import SAMPLE_RATE, speak, write_wav

AUDIO_BITRATE = "32k"  # mono speech: small files, still far above what Whisper needs
ROOM_TONE_DB = -66.0  # a quiet room through a laptop microphone (RMS, dBFS)
ROOM_TONE_SEED = 5
DAMAGE_SEED = 4099
DAMAGE_BYTES = 4096
TRUNCATE_SHARE = 0.55
WEBCAM_SIZE = (320, 240)

_CONTAINER = {
    "mp4": ("-f", "mp4", "-movflags", "+faststart"),
    "mov": ("-f", "mov", "-movflags", "+faststart"),
    "mp4-moov-at-end": ("-f", "mp4"),
    "fragmented-mp4": ("-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof"),
    "webm": ("-f", "webm", "-live", "1"),
    "mkv": ("-f", "matroska"),
    "mpegts": ("-f", "mpegts"),
}


def build(case: Case, out: Path, workdir: Path) -> float:
    """Write ``case`` to ``out`` (scratch files in ``workdir``); return its designed length in seconds
    (from the first picture or sound to the last, whatever its timestamps say)."""
    if case.raw is not None:
        out.write_bytes(case.raw)
        return 0.0
    stem = workdir / Path(case.file).stem
    seconds = case.screen.seconds if case.screen else 0.0
    if case.resize is not None:
        seconds += case.resize.seconds
    wav = None
    if case.audio == "speech":
        wav = stem.with_suffix(".wav")
        seconds = speak(case.speech, wav, min_seconds=seconds, voice=case.voice)
    elif case.audio == "silence":
        wav = room_tone(stem.with_name(f"{stem.name}.silence.wav"), seconds)
    seconds += case.audio_delay  # the microphone joins late; the screen runs from the start to the end
    inputs: list[str | Path] = []
    maps: list[str | Path] = []
    if case.screen is not None:
        video_inputs, video_maps = _video(case, seconds, stem)
        inputs += video_inputs
        maps += video_maps
    # The video is input 0 when it is a file (joined pieces, a turned picture), else a filter graph.
    next_input = 1 if case.resize is not None or case.rotation else 0
    tracks = []
    if case.silent_track_first:  # the computer's sound, recorded as digital silence
        inputs += ["-i", room_tone(stem.with_name(f"{stem.name}.system.wav"), seconds, db=None)]
        tracks.append(next_input)
        next_input += 1
    if wav is not None:
        if case.audio_delay:
            inputs += ["-itsoffset", f"{case.audio_delay:.3f}"]
        inputs += ["-i", wav]
        tracks.append(next_input)
    for track in tracks:
        maps += ["-map", f"{track}:a"]
    if tracks:
        maps += _audio_codec(case)
    timing = ["-output_ts_offset", f"{case.timestamp_offset:g}"] if case.timestamp_offset else []
    target = stem.with_name(f"{stem.name}.whole{out.suffix}") if case.damage else out
    ffmpeg("-y", *inputs, *maps, *timing, *REPRODUCIBLE, *_CONTAINER[case.container], target)
    if case.damage == "truncate":
        data = target.read_bytes()
        out.write_bytes(data[: round(len(data) * TRUNCATE_SHARE)])
    elif case.damage == "chunk":
        data = bytearray(target.read_bytes())
        middle = len(data) // 2
        data[middle : middle + DAMAGE_BYTES] = random.Random(DAMAGE_SEED).randbytes(DAMAGE_BYTES)
        out.write_bytes(bytes(data))
    return seconds


def _video(case: Case, seconds: float, stem: Path) -> tuple[list[str | Path], list[str | Path]]:
    """The input arguments and stream maps (with encoder options) that give ``case``'s video."""
    assert case.screen is not None
    if case.resize is not None:
        joined = _joined(case, case.screen, case.resize.stretched(seconds - case.screen.seconds), stem)
        return ["-i", joined], ["-map", "0:v", "-c:v", "copy"]
    screen = case.screen.stretched(seconds)
    graph = screen.graph("screen")
    maps: list[str | Path] = []
    if case.webcam:
        width, height = WEBCAM_SIZE
        graph += f";testsrc2=s={width}x{height}:r={screen.fps}:d={seconds:.3f},format=yuv420p[cam]"
        maps += ["-map", "[cam]"]
    if case.variable_rate:
        graph += ";[screen]mpdecimate=max=45[vfr]"
        maps += ["-map", "[vfr]", "-fps_mode", "passthrough", "-video_track_timescale", "90000"]
    else:
        maps += ["-map", "[screen]"]
    if case.rotation:
        # The picture is stored turned clockwise; the display matrix tells players to turn it back.
        turned = stem.with_name(f"{stem.name}.turned.mp4")
        ffmpeg(
            "-y",
            "-filter_complex",
            f"{graph};[screen]transpose=clock[turned]",
            "-map",
            "[turned]",
            *_video_codec(case, screen),
            *REPRODUCIBLE,
            turned,
        )
        return ["-display_rotation", str(case.rotation), "-i", turned], ["-map", "0:v", "-c:v", "copy"]
    return ["-filter_complex", graph], [*maps, *_video_codec(case, screen)]


def _joined(case: Case, first: Screen, second: Screen, stem: Path) -> Path:
    """``first`` then ``second`` (another size) as one video stream, joined without re-encoding."""
    pieces = []
    for index, screen in enumerate((first, second)):
        if case.video_codec == "vp9":
            piece = stem.with_name(f"{stem.name}.part{index}.webm")
            container: tuple[str, ...] = ("-f", "webm")
        else:  # Annex B carries its sequence headers in-band, so the size change travels with the data;
            # no B-frames (as phone encoders write), so the joined stream's timestamps stay in order
            piece = stem.with_name(f"{stem.name}.part{index}.h264")
            container = ("-bf", "0", "-f", "h264")
        ffmpeg(
            "-y",
            "-filter_complex",
            screen.graph("screen"),
            "-map",
            "[screen]",
            *_video_codec(case, screen),
            *REPRODUCIBLE,
            *container,
            piece,
        )
        pieces.append(piece)
    joined = stem.with_name(f"{stem.name}.joined.{'webm' if case.video_codec == 'vp9' else 'mp4'}")
    if case.video_codec == "vp9":
        playlist = stem.with_name(f"{stem.name}.concat.txt")
        playlist.write_text("".join(f"file '{piece.resolve()}'\n" for piece in pieces))
        ffmpeg("-y", "-f", "concat", "-safe", "0", "-i", playlist, "-c", "copy", *REPRODUCIBLE, joined)
    else:
        raw = stem.with_name(f"{stem.name}.joined.h264")
        raw.write_bytes(b"".join(piece.read_bytes() for piece in pieces))
        ffmpeg("-y", "-framerate", str(first.fps), "-i", raw, "-c", "copy", *REPRODUCIBLE, joined)
    return joined


def _video_codec(case: Case, screen: Screen) -> list[str]:
    keyframes = ["-g", str(2 * screen.fps)]
    if case.video_codec == "vp9":
        return [
            *("-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "40", "-deadline", "good", "-cpu-used", "4"),
            *("-row-mt", "0", "-threads", "1", "-pix_fmt", "yuv420p", "-g", str(5 * screen.fps)),
        ]
    if case.video_codec == "hevc-10bit":
        return [
            *(
                "-c:v",
                "libx265",
                "-preset",
                "fast",
                "-crf",
                "30",
                "-pix_fmt",
                "yuv420p10le",
                "-tag:v",
                "hvc1",
            ),
            *("-x265-params", "pools=none:frame-threads=1:log-level=error", *keyframes),
        ]
    pixels = "yuv444p" if case.video_codec == "h264-444" else "yuv420p"
    profile = ["-profile:v", "baseline"] if case.container == "fragmented-mp4" else []
    return [
        *("-c:v", "libx264", "-preset", "medium", "-crf", "30", "-pix_fmt", pixels, *profile),
        *("-threads", "1", *keyframes, "-sc_threshold", "0"),
    ]


def _audio_codec(case: Case) -> list[str]:
    if case.container == "webm":
        return ["-c:a", "libopus", "-b:a", AUDIO_BITRATE, "-ac", "1", "-ar", "48000"]
    return ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "1", "-ar", "48000"]


def room_tone(out: Path, seconds: float, db: float | None = ROOM_TONE_DB) -> Path:
    """``seconds`` of seeded Gaussian noise at ``db`` dBFS RMS (None: digital silence) as a WAV file."""
    samples = round(seconds * SAMPLE_RATE)
    if db is None:
        pcm = np.zeros(samples, dtype=np.int16)
    else:
        noise = np.random.default_rng(ROOM_TONE_SEED).standard_normal(samples) * 32767 * 10 ** (db / 20)
        pcm = np.clip(np.round(noise), -32768, 32767).astype(np.int16)
    write_wav(out, pcm.tobytes())
    return out
