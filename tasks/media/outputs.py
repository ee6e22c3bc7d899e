"""What a session's record says about its media: which outputs exist, which the media cannot give, and why.

A recording without a microphone still has its frames, an audio-only one its transcript: processing
keeps what the media allows and records the rest as missing with the reason, so a reader of
``session.json`` (or the dataset) can tell "not processed yet" from "not possible". The media
summary comes from the extraction, which knows what the header alone cannot: the displayed size,
the tracks chosen and what damage cost. A run that redoes one output (``reprocess --stage frames``)
keeps what the record says about the other stream.
"""

from __future__ import annotations

from typing import Any

from tasks.media.video import AudioInfo, Extraction, VideoInfo
from tasks.storage.records import MediaSummary, SessionRecord

TRANSCRIPT, FRAMES = "transcript", "frames"
# extract()'s names for what it could not make, and the record outputs they stand for
_OUTPUT_OF = {"audio": TRANSCRIPT, "frames": FRAMES}
_AUDIO_FIELDS = ("audio_codec", "audio_sample_rate", "audio_stream", "audio_choice")
_VIDEO_FIELDS = (
    "width",
    "height",
    "fps",
    "video_codec",
    "coded_width",
    "coded_height",
    "rotation",
    "video_stream",
    "video_choice",
)


def skip_output(record: SessionRecord, output: str, force: bool) -> bool:
    """Whether ``output`` needs no work: it exists or the media cannot give it (unless ``force``)."""
    if force:
        return False
    return output in record.missing or getattr(record, output) is not None


def outputs_update(record: SessionRecord, updates: dict[str, Any], extraction: Extraction) -> dict[str, Any]:
    """``outputs`` and ``missing`` for the record once ``updates`` (the new transcript, frames) apply."""
    missing = dict(record.missing)
    for output in (TRANSCRIPT, FRAMES):
        if output in updates:
            missing.pop(output, None)
    for name, reason in extraction.missing.items():
        missing[_OUTPUT_OF[name]] = reason
    present = [name for name in (FRAMES, TRANSCRIPT) if updates.get(name, getattr(record, name)) is not None]
    return {"outputs": present, "missing": missing}


def media_summary(extraction: Extraction, previous: MediaSummary | None) -> MediaSummary:
    """The record's ``media``: the chosen streams as people see and hear them, and what was lost.

    Fields of a stream this extraction did not decode come from ``previous`` when it has them.
    """
    info = extraction.info
    summary = MediaSummary(
        duration=extraction.duration if extraction.duration is not None else info.duration,
        container=info.format,
        **_video_fields(extraction.video_stream or info.video, info.video_choice),
        **_audio_fields(extraction.audio_stream or info.audio, extraction.audio_choice),
    )
    decoded = {loss.kind for loss in extraction.losses}
    errors = {loss.kind: loss.decode_errors for loss in extraction.losses}
    lost = {loss.kind: round(loss.lost_seconds, 3) for loss in extraction.losses}
    if previous is not None:
        kept = [
            *(_AUDIO_FIELDS if extraction.audio_stream is None else ()),
            *(_VIDEO_FIELDS if extraction.video_stream is None else ()),
        ]
        keep = {name: getattr(previous, name) for name in kept if getattr(previous, name) is not None}
        errors = {**{k: v for k, v in previous.decode_errors.items() if k not in decoded}, **errors}
        lost = {**{k: v for k, v in previous.lost_seconds.items() if k not in decoded}, **lost}
        summary = summary.model_copy(update=keep)
    return summary.model_copy(update={"decode_errors": errors, "lost_seconds": lost})


def _video_fields(video: VideoInfo | None, choice: str | None) -> dict[str, Any]:
    if video is None:
        return {}
    return {
        "width": video.width,
        "height": video.height,
        "fps": video.fps,
        "video_codec": video.codec,
        "coded_width": video.coded_width,
        "coded_height": video.coded_height,
        "rotation": video.rotation,
        "video_stream": video.index,
        "video_choice": choice,
    }


def _audio_fields(audio: AudioInfo | None, choice: str | None) -> dict[str, Any]:
    if audio is None:
        return {}
    return {
        "audio_codec": audio.codec,
        "audio_sample_rate": audio.sample_rate,
        "audio_stream": audio.index,
        "audio_choice": choice,
    }
