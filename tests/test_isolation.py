"""The suite checks the same things whatever `QA_*` variables the caller's shell holds."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

# Every one of these would change what some test below sees if it reached Settings: limits
# off, another corpus and index, a shorter chunk size, the other encoder, docs off, an admin
# token, a cache off, a value that does not even parse.
HOSTILE = {
    "QA_RATE_LIMIT": "0",
    "QA_ADMIN_RATE_LIMIT": "1",
    "QA_ADMIN_TOKEN": "t" * 40,
    "QA_CORPUS_DIR": "/nonexistent/corpus",
    "QA_INDEX_DIR": "/nonexistent/index",
    "QA_CHUNK_CHARS": "300",
    "QA_ENCODER": "torch",
    "QA_DOCS_ENABLED": "false",
    "QA_CACHE_SIZE": "0",
    "QA_RELOAD_INTERVAL": "0",
    "QA_ALLOWED_ORIGINS": "https://elsewhere.example",
    "QA_TRUSTED_PROXIES": "0.0.0.0/0",
    "QA_MAX_BODY_BYTES": "not a number",
    "QA_REDIS_URL": "redis://127.0.0.1:1/0",
    "QA_WORKERS": "3",
    "PROMETHEUS_MULTIPROC_DIR": "/nonexistent/metrics",
    "qa_max_concurrency": "1",  # pydantic-settings reads names case-insensitively
}
# Modules whose tests read defaults, build apps and start a server in a subprocess.
SUBSET = ["tests/test_ratelimit.py", "tests/test_api.py", "tests/test_hardening.py"]


def test_hostile_qa_variables_in_the_shell_change_nothing() -> None:
    env = {**os.environ, **HOSTILE}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *SUBSET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
