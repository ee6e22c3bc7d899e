"""The command line's contract: configuration mistakes are one clear line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TEST_ID = "5b0d7a7e-0000-4000-8000-000000000001"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UT_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"UT_RATE_LIMIT_REQUESTS": "ten", "UT_CLIENT_ID": "a", "UT_CLIENT_SECRET": "b"},
            "UT_RATE_LIMIT_REQUESTS",
        ),
        ({"UT_TEST_IDS": "not-a-uuid"}, "UT_TEST_IDS"),
        ({"UT_API_BASE_URL": "api.example"}, "UT_API_BASE_URL"),
        ({}, "UT_CLIENT_ID"),
        ({"UT_CLIENT_ID": "a", "UT_CLIENT_SECRET": "b", "UT_RATE_LIMIT_BACKEND": "s3"}, "UT_WORK_BUCKET"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_variable(env: dict[str, str], named: str) -> None:
    result = run_cli("sessions", "--test-id", TEST_ID, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2() -> None:
    result = run_cli("sessions", "--since", "2026-01-01", env={})
    assert result.returncode == 2
    assert "timezone" in result.stderr
