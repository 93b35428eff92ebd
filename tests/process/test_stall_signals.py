"""The supervisor's parent keeps answering while ``redis-server`` is stalled
(SIGSTOP: a hung host, a long fork for a snapshot, a paused VM): its duties' Redis
calls each block until a socket timeout, and it ran every due duty in one pass of
its loop before it looked at its signals again. A TTIN took more than a minute to
add its child; a child that died was replaced as late. Default settings."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

#: A pass of the loop is at most one duty's blocked call (a socket timeout,
#: 5 s by default, and its retry), then the loop reads its signals.
BOUND_S = 15.0


def test_ttin_and_a_dead_child_are_answered_while_redis_is_stalled(
    server: RedisServer, tmp_path: Path
) -> None:
    sup = Supervisor(server.url, "stallsig", tmp_path / "sup.log", procs=1).start()
    assert server.proc is not None
    stopped = False
    try:
        (first,) = sup.wait_workers(1)
        time.sleep(1.0)  # the duties have all run once
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        time.sleep(3.0)  # the loop is now inside the duties' blocked calls
        began = time.monotonic()
        sup.send(signal.SIGTTIN)
        sup.wait_workers(2, timeout=60)
        took = time.monotonic() - began
        assert took < BOUND_S, f"TTIN answered {took:.1f} s later\n{sup.log()[-3000:]}"
        time.sleep(3.0)
        began = time.monotonic()
        first.kill()  # idle: nothing of it to put back
        wait_until(
            lambda: len(sup.workers()) == 2 and first.pid not in {p.pid for p in sup.workers()},
            60,
            message="the dead child's replacement",
        )
        took = time.monotonic() - began
        assert took < BOUND_S, f"dead child replaced {took:.1f} s later\n{sup.log()[-3000:]}"
    finally:
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        sup.stop()
