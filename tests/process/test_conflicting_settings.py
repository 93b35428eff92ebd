"""Settings that exclude each other are refused at start, before anything runs.
``embedded_redis`` with a ``url`` (``REDFLOW_URL`` in production's environment, a
config file kept from development with ``embedded_redis = true``): the
supervisor started its own private Redis and served it, silently ignoring the
URL, so the runs enqueued there waited forever (``redflow`` already refused the
pair: ``--embedded-redis and --url exclude each other``)."""

from __future__ import annotations

import subprocess

import pytest

from tests.process.conftest import run_supervisor_once

pytestmark = pytest.mark.process


def test_embedded_redis_with_a_url_is_refused(redis_url: str, prefix: str) -> None:
    args = ["--app", "x", "--module", "tests.process.flows", "--prefix", prefix]
    try:
        proc = run_supervisor_once(*args, "--embedded-redis", "--url", redis_url, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the supervisor ran on its own Redis, ignoring --url") from None
    assert proc.returncode == 2, proc.stderr
    assert "embedded_redis" in proc.stderr and "exclude each other" in proc.stderr
    assert "embedded Redis at" not in proc.stdout  # nothing was started
