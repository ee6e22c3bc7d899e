"""The pipeline's configuration: one pydantic-settings model read from ``UT_*`` environment variables.

S3 access is deliberately absent: boto3 reads its own standard variables and profiles
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...), so the same code runs against
AWS, MinIO or the local test server without a custom setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_API_BASE_URL = "https://api.use2.usertesting.com"
DEFAULT_TOKEN_URL = "https://auth.usertesting.com/oauth2/aus1p3vtd8vtm4Bxv0h8/v1/token"
ENV_PREFIX = "UT_"
_SECRET_FIELDS = frozenset({"client_secret", "access_token"})
_API_CREDENTIALS = tuple(f"{ENV_PREFIX}{name.upper()}" for name in ("client_id", *sorted(_SECRET_FIELDS)))


def without_api_credentials(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the UserTesting credentials: for processing workers, which never call the API."""
    return {name: value for name, value in env.items() if name not in _API_CREDENTIALS}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def _split_ids(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the pipeline. Field ``x`` is read from environment variable ``UT_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    api_base_url: str = DEFAULT_API_BASE_URL
    token_url: str = DEFAULT_TOKEN_URL
    client_id: str | None = None
    client_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    token_scope: str = "studies:read"

    test_ids: Annotated[list[UUID], NoDecode] = Field(default_factory=list)
    workspace_ids: Annotated[list[UUID], NoDecode] = Field(default_factory=list)

    rate_limit_requests: int = Field(default=10, ge=1)
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    rate_limit_margin_seconds: float = Field(
        default=0.5,
        ge=0,
        description="Added to the window after each response, for clock skew between workers.",
    )
    rate_limit_backend: Literal["auto", "s3", "file"] = Field(
        default="auto",
        description="Where the shared request ledger lives: the work bucket (s3), a local file, "
        "or s3 when UT_WORK_BUCKET is set and a file otherwise (auto).",
    )
    rate_limit_dir: Path = Path.home() / ".cache" / "ut-pipeline"

    http_timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)

    work_bucket: str | None = None
    work_prefix: str = ""

    download_concurrency: int = Field(default=4, ge=1, description="videos streamed at once per flow run")
    process_concurrency: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="sessions processed at once per worker process; auto: one per 2 cores, at least 2 "
        "with a GPU (tasks/media/transcribe.py: auto_process_concurrency)",
    )
    part_size_mib: int = Field(default=8, ge=5, description="S3 multipart part size")
    session_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a run on another machine that died keeps its sessions claimed "
        "(a dead run on this machine, or one Prefect reports finished, is taken over at once)",
    )
    held_wait_seconds: float = Field(
        default=900.0,
        ge=0,
        description="how long a run waits, at its end, for sessions another live run holds",
    )
    late_video_grace_hours: float = Field(
        default=72.0,
        ge=0,
        description="a 404 on the video link of a session finished this recently is asked again by later runs",
    )
    s3_max_attempts: int = Field(
        default=10,
        ge=1,
        description="attempts per S3 call on connection errors and 5xx (see tasks/storage/s3.py)",
    )
    scratch_dir: Path | None = Field(
        default=None, description="local scratch for processing; default: the system temp dir/ut-pipeline"
    )
    log_dir: Path = Field(
        default=Path.home() / ".cache" / "ut-pipeline" / "logs",
        description="where the debug log (tracebacks included) is written",
    )
    nightly_lookback_days: float = Field(
        default=7.0, gt=0, description="how far back a first nightly run looks"
    )

    ffmpeg_path: str | None = Field(default=None, description="a system ffmpeg; default: imageio-ffmpeg's")
    frame_rate: float = Field(default=1.0, gt=0, description="interval frames per second of video")
    scene_threshold: float = Field(
        default=0.07, gt=0, le=1, description="ffmpeg scene score for a scene frame (bench/scenes.py)"
    )
    whisper_backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    whisper_model: str | None = Field(default=None, description="name or path; default: the bundled tiny.en")
    whisper_device: Literal["auto", "cpu", "cuda"] = "auto"
    whisper_compute_type: str = Field(default="auto", description="auto: int8 on CPU, float16 on CUDA")
    whisper_vad: bool = Field(default=True, description="skip silence with voice-activity detection")
    vendor_transcripts: bool = Field(default=False, description="also store UserTesting's own WebVTT")
    log_format: Literal["text", "json"] = Field(default="text", description="json: JSON lines on stdout")
    session_details: bool = Field(
        default=False,
        description="fetch each session's v3 details (its tasks and their timings) for the dataset: "
        "one more API call per session",
    )
    dataset_speech_window_seconds: float = Field(
        default=5.0, ge=0, description="a frame's speech_text: the words spoken this long before and after it"
    )
    dataset_retention_hours: float = Field(
        default=168.0, ge=0, description="how long old dataset versions stay readable (time travel)"
    )
    whisper_language: str | None = Field(
        default=None,
        description="the spoken language as a Whisper code (en, es, ...); default: detected by a "
        "multilingual model, en for an English-only one",
    )
    whisper_batch_size: int = Field(
        default=8,
        ge=0,
        description="speech pieces Whisper decodes at once (faster-whisper with VAD); 0 or 1: sequential",
    )
    media_max_loss: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="share of a stream that damage may cost (undecodable packets, a cut-off end) before "
        "the session fails at the media stage; what is lost is recorded either way",
    )
    process_deployment: str | None = Field(
        default=None,
        description="the Prefect deployment (flow/deployment, e.g. ut-process/cpu) that processes sessions "
        "in batches on its work pool's workers; empty: processing runs in the flow run's own process",
    )
    process_batch_size: int = Field(
        default=8, ge=1, description="sessions per batch handed to the processing deployment"
    )
    process_wait_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="how long a run waits for the processing pool to make progress (a batch started, a "
        "session finished) before it reports the rest as not processed",
    )
    worker_name: str | None = Field(
        default=None, description="this worker's name, recorded with host:pid in processing.worker"
    )

    _split_test_ids = field_validator("test_ids", "workspace_ids", mode="before")(_split_ids)

    @field_validator("api_base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("work_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    def require_bucket(self) -> str:
        """The work bucket, or a ConfigError naming ``UT_WORK_BUCKET``."""
        if not self.work_bucket:
            raise ConfigError(f"{ENV_PREFIX}WORK_BUCKET is not set: name the S3 bucket the pipeline works in")
        return self.work_bucket

    @property
    def ledger_backend(self) -> Literal["s3", "file"]:
        """The rate-limit ledger store that ``rate_limit_backend`` resolves to."""
        if self.rate_limit_backend == "auto":
            return "s3" if self.work_bucket else "file"
        return self.rate_limit_backend


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = f"{ENV_PREFIX}{field.upper()}"
            raw = os.environ.get(name)
            shown = f" (got {raw!r})" if raw is not None and field not in _SECRET_FIELDS else ""
            lines.append(f"{name}: {error['msg']}{shown}")
        raise ConfigError("; ".join(lines)) from None
