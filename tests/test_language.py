"""What a transcript claims about its language, with the English-only tiny.en and a multilingual model.

The multilingual model is Whisper base, carried by the data-only packages of the optional
``requirements-test-models.lock`` (``make test`` installs it; see ``sandbox/whisper_models.py``). The
Spanish is ``sandbox/media/lang/es.m4a``: speech-1's think-aloud in Spanish, spoken by espeak-ng.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pytest

from flows.pipeline import reprocess
from sandbox import whisper_models
from sandbox.local import LocalWorld
from sandbox.media import MEDIA_DIR
from sandbox.media.lang import CLIPS, LANG_DIR
from sandbox.media.manifest import load_manifest
from sandbox.media.score import word_error_rate
from tasks.media.transcribe import SAMPLE_RATE, FasterWhisperTranscriber, Transcript, load_transcriber
from tasks.storage.layout import BucketLayout
from tasks.storage.records import RecordStore, SessionRecord, Stage, Status, VideoInfo
from tests.conftest import isolated_env
from tests.test_transcribe import MAX_WER, MODES, write_wav

SPANISH, ENGLISH = LANG_DIR / "es.m4a", MEDIA_DIR / "speech-1.mp4"
SPEECH = {
    "es": (SPANISH, CLIPS["es.m4a"][2]),
    "en": (ENGLISH, load_manifest()["speech-1.mp4"]["text"]),
}
needs_base = pytest.mark.skipif(
    not whisper_models.installed(),
    reason="the multilingual Whisper base model is not installed: "
    "pip install -r requirements-test-models.lock (make test does)",
)


def claim(transcript: Transcript) -> tuple[str | None, float | None, bool]:
    return transcript.language, transcript.language_probability, transcript.language_detected


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Whisper base as a CTranslate2 folder, assembled from the two packages (tests using it are
    marked ``needs_base``)."""
    return str(whisper_models.multilingual_base(tmp_path_factory.mktemp("whisper-base")))


def base(model: str, mode: str, language: str | None = None) -> FasterWhisperTranscriber:
    transcriber = load_transcriber(
        "faster-whisper", model, "cpu", "int8", True, language=language, batch_size=MODES[mode]
    )
    assert isinstance(transcriber, FasterWhisperTranscriber) and transcriber.multilingual
    return transcriber


@pytest.mark.parametrize("mode", list(MODES))
def test_an_english_only_model_claims_no_detection(mode: str) -> None:
    """tiny.en turns Spanish into English words (or none): it says "en" because that is all it writes, not
    because it heard English, so the transcript carries no probability and no detection."""
    transcriber = load_transcriber("faster-whisper", None, "auto", "auto", True, batch_size=MODES[mode])
    for path, _ in SPEECH.values():
        assert claim(transcriber.transcribe(path)) == ("en", None, False)


@needs_base
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("language", list(SPEECH))
def test_a_multilingual_model_detects_the_language(base_model: str, mode: str, language: str) -> None:
    path, text = SPEECH[language]
    transcript = base(base_model, mode).transcribe(path)
    detected, probability, was_detected = claim(transcript)
    assert (detected, was_detected) == (language, True)
    assert probability is not None and 0.5 < probability <= 1
    assert word_error_rate(text, transcript.text) <= MAX_WER, transcript.text
    stored = json.loads(json.dumps(transcript.to_json()))
    assert (stored["language"], stored["language_detected"]) == (language, True)
    assert stored["language_probability"] == round(probability, 4)


@needs_base
@pytest.mark.parametrize("mode", list(MODES))
def test_a_configured_language_is_used_not_detected(base_model: str, mode: str) -> None:
    path, text = SPEECH["es"]
    transcript = base(base_model, mode, language="es").transcribe(path)
    assert claim(transcript) == ("es", None, False)
    assert word_error_rate(text, transcript.text) <= MAX_WER, transcript.text


@needs_base
@pytest.mark.parametrize("mode", list(MODES))
def test_no_speech_no_language(base_model: str, mode: str, tmp_path: Path) -> None:
    """A multilingual model names some language even for silence; with nothing heard, none is claimed."""
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(3 * SAMPLE_RATE))
    transcript = base(base_model, mode).transcribe(quiet)
    assert (transcript.text, claim(transcript)) == ("", (None, None, False))


def _ingested(world: LocalWorld, prefix: str, video: Path) -> UUID:
    """A session whose video is already in the bucket, as ingest leaves it."""
    session_id, layout, s3 = uuid4(), BucketLayout(prefix), world.s3_client()
    key = layout.session_video(session_id)
    s3.upload_file(str(video), world.bucket, key)
    data = video.read_bytes()
    info = VideoInfo(
        key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type="video/mp4"
    )
    record = SessionRecord(session_id=session_id, test_id=uuid4(), status=Status.INGESTED, video=info)
    RecordStore(s3, world.bucket, layout).put(record, None)
    return session_id


@needs_base
def test_the_record_and_transcript_json_carry_the_detection(
    world: LocalWorld, prefect_server: None, base_model: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real reprocess run with UT_WHISPER_MODEL set to the multilingual model: session.json's
    ``transcript`` and transcript.json say which language was detected, and how sure the model was."""
    with isolated_env(world, tmp_path_factory.mktemp("ledger"), "lang") as (prefix, env):
        env.setenv("UT_WHISPER_MODEL", base_model)
        sessions = {language: _ingested(world, prefix, path) for language, (path, _) in SPEECH.items()}
        summary = reprocess(session_ids=list(sessions.values()), stages=[Stage.TRANSCRIBE])
    assert summary["counts"] == {"process": {"done": 2}}, summary
    s3 = world.s3_client()

    def read(key: str) -> Any:
        return json.loads(s3.get_object(Bucket=world.bucket, Key=key)["Body"].read())

    for language, session_id in sessions.items():
        record = read(BucketLayout(prefix).session_json(session_id))
        info, stored = record["transcript"], read(record["transcript"]["json_key"])
        assert record["status"] == "done"
        assert (info["language"], info["language_detected"]) == (language, True)
        assert 0.5 < info["language_probability"] <= 1
        assert (stored["language"], stored["language_detected"]) == (language, True)
        assert stored["language_probability"] == round(info["language_probability"], 4)
        assert info["model"] == base_model
