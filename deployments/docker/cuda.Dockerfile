# A GPU processing worker: faster-whisper float16 on CUDA 12 (CTranslate2 4.8 needs cuBLAS 12 and
# cuDNN 9; both come as pinned wheels, so the base is the same Python image as the CPU worker's).
# The host needs an NVIDIA driver for CUDA 12 (525 or newer) and the NVIDIA container toolkit.
# Build from the repository root:
#   docker build -f deployments/docker/cuda.Dockerfile -t ut-video-pipeline-cuda:0.1.0 .
# Run one per GPU machine (README, "Scaling out"):
#   docker run -d --restart unless-stopped --gpus all -e PREFECT_API_URL=... -e UT_WORK_BUCKET=... \
#     -e AWS_... -e UT_WORKER_NAME=$(hostname) \
#     ut-video-pipeline-cuda:0.1.0
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    PREFECT_WORKER_QUERY_SECONDS=5 \
    UT_WHISPER_DEVICE=cuda \
    UT_WHISPER_COMPUTE_TYPE=float16 \
    UT_SCRATCH_DIR=/scratch \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/ut-pipeline
COPY requirements.lock ./
RUN pip install -r requirements.lock nvidia-cublas-cu12==12.8.4.1 nvidia-cudnn-cu12==9.8.0.87
# CTranslate2 loads cuBLAS and cuDNN by name: put the wheels' libraries on the loader's path.
ENV LD_LIBRARY_PATH=/usr/local/lib/python3.11/site-packages/nvidia/cublas/lib:/usr/local/lib/python3.11/site-packages/nvidia/cudnn/lib
COPY pyproject.toml README.md ./
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY sandbox sandbox
RUN pip install --no-deps . \
    && useradd --uid 10001 --create-home worker \
    && mkdir /scratch && chown worker /scratch
USER worker

CMD ["prefect", "worker", "start", "--pool", "ut-process-gpu", "--type", "process", "--limit", "1"]
