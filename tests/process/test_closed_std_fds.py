"""A supervisor started with its standard descriptors closed (``2>&-``, a
careless init script or service manager): the descriptors it opened next (Redis
connections, its signal pipe) took the numbers 0, 1 and 2, and the children
inherited them. Whatever user code wrote to its stdout or stderr (a C library's
warning, a subprocess's output, ``os.write(2, ...)``) then went into a Redis
connection, as commands. The supervisor now opens ``/dev/null`` on 0, 1 and 2
when they are closed, before anything else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import ROOT, Supervisor, clean_env, wait_until

pytestmark = pytest.mark.process


@pytest.fixture()
def closed_std_supervisor(redis_url: str, prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        "sh",
        "-c",
        'exec "$@" <&- >&- 2>&-',
        "sh",
        sys.executable,
        "-m",
        "redflow_supervisor",
        "--app",
        "fds",
        "--procs",
        "1",
        "--url",
        redis_url,
        "--prefix",
        prefix,
        "--module",
        "tests.process.flows_fds",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_closed_standard_descriptors_are_opened_on_dev_null(
    closed_std_supervisor: subprocess.Popen[bytes], client: Client, raw: redis.Redis
) -> None:
    wait_until(lambda: client.get_workflow_meta("scribble"), 30, message="registry sync")
    assert client.run_by_name("std-fds").result(timeout=30) == ["/dev/null"] * 3
    assert client.run_by_name("scribble").result(timeout=20) == "written"
    assert client.run_by_name("std-fds").result(timeout=20) == ["/dev/null"] * 3
    assert not raw.exists(f"{client.keys.tag}:scribbled")
    closed_std_supervisor.send_signal(signal.SIGTERM)
    assert closed_std_supervisor.wait(timeout=20) == 0


def test_standard_descriptors_a_handler_closed_are_opened_again_before_the_next_run(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """A handler that closed its stdout or stderr (``sys.stdout.close()``, a
    ``with open(1, "w")`` block) left the numbers free for the next descriptor
    its child opened: a later run's file, a Redis connection made again after a
    blip, which then received the child's log lines and whatever code printed."""
    sup = supervisor(procs=1, modules=("tests.process.flows", "tests.process.flows_fds"))
    sup.wait_workers(1)
    wait_until(lambda: client.get_workflow_meta("open-file"), 30, message="registry sync")
    assert client.run_by_name("close-std").result(timeout=20) == "closed"
    target = tmp_path / "user-file"
    fds = client.run_by_name("open-file", str(target)).result(timeout=20)
    assert fds == ",".join(["/dev/null"] * 3), fds
