"""A slot's restart is not held up by a duty call blocked on a stalled Redis
(``supervisor/duties/__init__.py``: while Redis is known out of reach, a pass
of the duties first asks a 0.5 s probe, and calls none when no server answers).

Before, with ``redis-server`` stopped (SIGSTOP) each pass of the parent's loop
called one duty, which blocked two socket timeouts (about 10 s): a child that
died before it was ready (a replacement waiting for Redis, killed) was replaced
after its 1 s backoff only once that call gave up, about 10 s late.

Default settings. The bound is the contract: the replacement comes after its
backoff, not a socket timeout later."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from redflow_mp import create_client
from redflow_mp.transport import SOCKET_TIMEOUT
from supervisor.restart import RestartPolicy
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.process.test_putback_stall import _stopped
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

#: What the parent logs once a duty found Redis out of reach.
DOWN = "Redis not answering while running duty"


def _worker_pids(sup: Supervisor) -> set[int]:
    return {p.pid for p in sup.workers()}


def test_a_slot_restart_is_not_held_behind_a_duty_blocked_by_a_stalled_redis(
    server: RedisServer, tmp_path: Path
) -> None:
    policy = RestartPolicy()  # the defaults: restart_backoff 1 s, its jitter
    bound = policy.base * (1 + policy.jitter) + SOCKET_TIMEOUT
    sup = Supervisor(server.url, "rstall", tmp_path / "sup.log", procs=1).start()
    try:
        (first,) = sup.wait_workers(1)
        client = create_client(server.url, prefix="rstall", default=False)
        try:
            assert flows.pid.run(None, client=client).result(timeout=60) == first.pid  # ready
        finally:
            client.close()
        with _stopped(server):
            wait_until(lambda: DOWN in sup.log(), 120, message=f"down\n{sup.log()}")
            os.kill(first.pid, signal.SIGKILL)  # ready: replaced at once
            booting = wait_until(
                lambda: _worker_pids(sup) - {first.pid}, 120, message=f"b\n{sup.log()}"
            )
            (b,) = booting
            # it waits for Redis before it is ready: killed, a start failure (1 s backoff)
            os.kill(b, signal.SIGKILL)
            wait_until(
                lambda: f"(pid {b}) killed by SIGKILL" in sup.log(),
                120,
                message=f"b's exit\n{sup.log()}",
            )
            seen = time.monotonic()
            wait_until(lambda: _worker_pids(sup) - {first.pid, b}, 120, message=f"c\n{sup.log()}")
            late = time.monotonic() - seen
            assert late < bound, (
                f"the replacement came {late:.1f} s after the exit (backoff "
                f"{policy.base:g} s): it waited for a duty's call\n{sup.log()[-3000:]}"
            )
        sup.send(signal.SIGTERM)
        assert sup.wait(60) == 0, sup.log()[-3000:]
    finally:
        sup.stop()
