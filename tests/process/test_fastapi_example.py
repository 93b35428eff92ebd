"""``examples/fastapi_app.py`` under uvicorn, against a real supervisor running
``examples/web_flows.py``: requests enqueue runs and await their results through
the async client, concurrently; bad input is refused at enqueue; the server
stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.web_flows import _checksum
from tests.process.conftest import ROOT, Supervisor, clean_env, wait_until
from tests.redis_server import free_port

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


def http(method: str, url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decoded(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, _decoded(err.read())


def _decoded(raw: bytes) -> Any:
    """JSON, or the text of a reply that is not (a 500's "Internal Server Error")."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


class Web:
    """``uvicorn examples.fastapi_app:app`` in its own session."""

    def __init__(self, redis_url: str, prefix: str, log: Path) -> None:
        self.log_path = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "default::ResourceWarning",
                "-m",
                "uvicorn",
                "examples.fastapi_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "info",
            ],
            cwd=ROOT,
            env=clean_env({"REDFLOW_URL": redis_url, "REDFLOW_PREFIX": prefix}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited ({self.proc.returncode}):\n{self.log()}")
        try:
            return http("GET", f"{self.base}/health", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture()
def web(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Web]:
    server = Web(redis_url, prefix, tmp_path / "uvicorn.log")
    try:
        wait_until(server.ready, 30, 0.05, "uvicorn to answer /health")
        yield server
    finally:
        server.stop()


def test_the_fastapi_example_enqueues_and_awaits_runs(
    supervisor: Callable[..., Supervisor], web: Web, raw: redis.Redis, prefix: str
) -> None:
    sup = supervisor(procs=2, modules=["examples.web_flows"], app="web")
    sup.wait_workers(2)
    base = web.base
    wait_until(
        lambda: "web-report" in http("GET", f"{base}/health")[1]["workflows"],
        20,
        message="the supervisor's sync",
    )

    status, out = http("POST", f"{base}/reports/wait", {"name": "march", "rows": 2000})
    expected = {"name": "march", "rows": 2000, "checksum": _checksum(2000)}
    assert (status, out) == (200, expected), web.log()[-4000:]

    created = f"{{{prefix}}}:runs:created"
    before = raw.zcard(created)
    status, out = http("POST", f"{base}/reports", {"name": 7})
    assert status == 422 and "Expected `str`, got `int` - at `$.name`" in out["detail"], out
    status, out = http("POST", f"{base}/reports?priority=12", {"name": "x"})
    assert status == 422 and "priority must be from 0" in out["detail"], out
    for bad in ("-1", "nan", "inf", "1e9"):  # a timeout no wait can keep: refused first
        for path in ("/reports/wait", "/urgent/wait"):
            status, out = http("POST", f"{base}{path}?timeout={bad}", {"name": "t"})
            assert status == 422, (path, bad, status, out)
    assert raw.zcard(created) == before  # refused before anything was written

    status, out = http("POST", f"{base}/reports", {"name": "later", "rows": 10})
    assert status == 202 and out["status"] == "queued", out
    run_id = out["id"]
    state = wait_until(
        lambda: (s := http("GET", f"{base}/runs/{run_id}")[1])["status"] == "succeeded" and s,
        30,
        message="the enqueued run to succeed",
    )
    assert state["output"]["name"] == "later" and state["workflow"] == "web-report"
    assert http("GET", f"{base}/runs/no-such-run")[0] == 404

    status, out = http("POST", f"{base}/reports/wait", {"name": "neg", "rows": -1})
    assert status == 409 and out["error"]["type"] == "NonRetriableError", out

    status, out = http(
        "POST", f"{base}/reports/wait?timeout=0.01", {"name": "slow", "rows": 300_000}
    )
    assert (status, out["status"]) == (504, "still running"), out

    status, out = http("POST", f"{base}/urgent/wait", {"name": "u"})
    assert (status, out) == (200, {"urgent": True, "name": "u"})

    # Many requests at once: one client, one loop, every request awaiting its run.
    names = [f"batch-{i}" for i in range(24)]
    started = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        replies = list(
            pool.map(
                lambda n: http("POST", f"{base}/reports/wait", {"name": n, "rows": 100}), names
            )
        )
    assert [(s, o["name"]) for s, o in replies] == [(200, n) for n in names], replies
    assert time.monotonic() - started < 60

    # SIGTERM: a graceful shutdown (uvicorn re-raises the signal once done) with
    # nothing logged as an error.
    assert web.stop() in (0, -signal.SIGTERM)
    log = web.log()
    assert "Application shutdown complete." in log, log
    assert "Traceback" not in log and "nclosed" not in log and "ERROR" not in log, log
