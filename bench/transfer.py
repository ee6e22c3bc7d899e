"""Transfer benchmark: the pipeline's streaming copy against the obvious alternatives, side by side.

    .venv/bin/python -m bench.transfer [--size-mib 1024] [--quick]

A video of the given size is served by the sandbox (as a pre-signed link, like UserTesting's) and
copied three ways, each in its own process so its peak RSS is its own:

- ``pipeline``: ``tasks.storage.transfer.stream_to_s3``, link to multipart upload, nothing on disk;
- ``download``: a plain streamed download of the same link to a local file;
- ``upload``: boto3 ``upload_file`` of that file from disk to the same local S3.

Both servers run on this machine's loopback and in Python, so absolute MB/s say more about them
than about the network; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _child(mode: str, env: dict[str, str], file: str) -> None:
    """Runs in a fresh process: one copy, then a JSON line with its timing."""
    os.environ.update(env)
    from sandbox.world import CHECKOUT_SPEECH_SESSION_IDS
    from tasks.api.client import open_client
    from tasks.api.http import new_client
    from tasks.settings import load_settings
    from tasks.storage.s3 import s3_client
    from tasks.storage.transfer import Link, stream_to_s3

    settings = load_settings()
    s3, session = s3_client(), CHECKOUT_SPEECH_SESSION_IDS[0]
    started = time.perf_counter()
    if mode == "upload":
        s3.upload_file(file, settings.work_bucket, "bench/upload.mp4")
    else:
        api = open_client(settings, s3=s3)

        def get_link() -> Link:
            answer = api.video_download_url(session)
            return Link(answer.video_url.get_secret_value(), answer.expires_at)  # type: ignore[union-attr]

        http = new_client(timeout_seconds=120)
        started = time.perf_counter()
        if mode == "pipeline":
            stream_to_s3(get_link, http, s3, settings.work_bucket, "bench/pipeline.mp4")
        else:
            with http.stream("GET", get_link().url) as response, open(file, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _measure(mode: str, env: dict[str, str], file: Path) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.transfer", "--child", mode, "--file", str(file)],
        env={**os.environ, "BENCH_ENV": json.dumps(env)},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{mode} failed")
    result = json.loads(output.decode().strip().splitlines()[-1])
    return {"mode": mode, "seconds": result["seconds"], "peak_rss_mib": usage.ru_maxrss / 1024}


def run(size_mib: int) -> list[dict[str, Any]]:
    from sandbox.local import start_local_world
    from sandbox.media import MEDIA_DIR
    from sandbox.world import SPEECH_CLIPS

    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        for item in MEDIA_DIR.iterdir():
            (media / item.name).symlink_to(item)
        big = media / SPEECH_CLIPS[0]
        big.unlink()
        with big.open("wb") as out:
            for _ in range(size_mib):
                out.write(os.urandom(MIB))
        with start_local_world(rate_window=1.0, extra_args=["--media-dir", str(media)]) as world:
            env = {
                **world.env,
                "UT_RATE_LIMIT_BACKEND": "file",
                "UT_RATE_LIMIT_DIR": str(Path(tmp) / "ledger"),
            }
            _measure("download", env, Path(tmp) / "warm.mp4")  # the sandbox hashes a file on first use
            copy = Path(tmp) / "copy.mp4"
            rows = [_measure(mode, env, copy) for mode in ("pipeline", "download", "upload")]
    for row in rows:
        row["mb_per_s"] = size_mib * MIB / row["seconds"] / 1e6
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="100 MiB instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, json.loads(os.environ["BENCH_ENV"]), args.file)
        return
    size = 100 if args.quick else args.size_mib
    rows = run(size)
    by_mode = {r["mode"]: r for r in rows}
    print(f"\nTransfer of a {size} MiB video on {os.cpu_count()} cores (sandbox link -> local S3)\n")
    print(f"{'mode':10} {'seconds':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['mode']:10} {r['seconds']:8.2f} {r['mb_per_s']:8.1f} {r['peak_rss_mib']:13.0f}")
    pipeline, download, upload = (by_mode[m]["seconds"] for m in ("pipeline", "download", "upload"))
    print(f"\npipeline throughput / plain download to disk:   {download / pipeline:.2f}")
    print(f"pipeline time / (download to disk + upload_file): {pipeline / (download + upload):.2f}")


if __name__ == "__main__":
    main()
