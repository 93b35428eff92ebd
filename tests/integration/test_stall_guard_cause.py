"""The reaper's hold after a gap names its cause: a supervisor stopped (SIGSTOP)
while one of its reaper's calls was in flight (Redis ran it at once, the reply
was read after SIGCONT) did not run; Redis was not out of reach. Default lease
and reaper interval. The stop is played by a store whose reaper call returns
only after the pause, the call itself made on the real server."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from redflow_mp import Client
from redflow_mp.maintenance import StallGuard, reap_expired

pytestmark = pytest.mark.timeout(60)

LEASE_MS = 5000  # the default lease_ms
REAPER_MS = 500  # the default reaper_interval_ms
PAUSE_S = 3.0  # longer than the gap (a third of the lease)


class _Scripts:
    def __init__(self, scripts: Any) -> None:
        self._scripts = scripts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scripts, name)

    def reap_guarded(self, *args: Any) -> Any:
        got = self._scripts.reap_guarded(*args)  # Redis ran it now
        time.sleep(PAUSE_S)  # the process stopped before it read the reply
        return got


class _StoppedMidCall:
    def __init__(self, client: Client) -> None:
        self.keys = client.keys
        self.redis = client.redis
        self.scripts = _Scripts(client.scripts)


def test_a_stop_during_a_reap_call_is_not_blamed_on_redis(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "Redis was out of reach for longer than 1666 ms" (the flaky
    test_a_stopped_supervisor_says_it_was_stopped_not_that_redis_was_out_of_reach,
    when the SIGSTOP landed mid-call)."""
    guard = StallGuard(LEASE_MS, REAPER_MS)
    reap_expired(client, guard=guard)  # the gap's start
    time.sleep(REAPER_MS / 1000)
    reap_expired(_StoppedMidCall(client), guard=guard)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="redflow_mp.maintenance"):
        reap_expired(client, guard=guard)  # at once after SIGCONT
    held = [r.getMessage() for r in caplog.records if "leases are not reaped" in r.getMessage()]
    assert len(held) == 1, held
    assert "did not run for" in held[0], held[0]
    assert "out of reach" not in held[0], held[0]


def test_a_gap_while_this_process_ran_is_still_redis_out_of_reach(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The other side: the previous call quick, the next one at once, and still a
    gap on the server (its reply seen late: a failing call in between reset the
    idle time) is Redis's."""
    guard = StallGuard(LEASE_MS, REAPER_MS)
    reap_expired(client, guard=guard)
    time.sleep(PAUSE_S)
    guard.failed()  # a duty's call failed meanwhile: the process ran
    with caplog.at_level(logging.WARNING, logger="redflow_mp.maintenance"):
        reap_expired(client, guard=guard)
    held = [r.getMessage() for r in caplog.records if "leases are not reaped" in r.getMessage()]
    assert len(held) == 1, held
    assert "out of reach" in held[0], held[0]
