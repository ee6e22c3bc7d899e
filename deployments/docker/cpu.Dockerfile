# A CPU processing worker: faster-whisper int8 on the CPU, ffmpeg from imageio-ffmpeg's wheel.
# Build from the repository root:
#   docker build -f deployments/docker/cpu.Dockerfile -t ut-video-pipeline-cpu:0.1.0 .
# Run one per machine (README, "Scaling out"); the command below is the default:
#   docker run -d --restart unless-stopped -e PREFECT_API_URL=... -e UT_WORK_BUCKET=... -e AWS_... \
#     -e UT_WORKER_NAME=$(hostname) ut-video-pipeline-cpu:0.1.0   (no UserTesting credentials: processing never calls the API)
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    PREFECT_WORKER_QUERY_SECONDS=5 \
    UT_WHISPER_DEVICE=cpu \
    UT_WHISPER_COMPUTE_TYPE=int8 \
    UT_SCRATCH_DIR=/scratch

# The code lives where the deployments registered from this image say it is (deployments/register.py).
WORKDIR /opt/ut-pipeline
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY sandbox sandbox
RUN pip install --no-deps . \
    && useradd --uid 10001 --create-home worker \
    && mkdir /scratch && chown worker /scratch
USER worker

CMD ["prefect", "worker", "start", "--pool", "ut-process", "--type", "process", "--limit", "1"]
