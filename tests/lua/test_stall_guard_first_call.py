"""The reaper's stall guard on its first call: a supervisor SIGSTOPped with its
children (a group stop, a frozen cgroup) before its reaper's first tick, then
continued a moment before them, put back the run of its own live child: the
first call had no previous one to measure a gap from, so every lease that
expired during the stop was reaped, and the run executed twice (the flaky
tests/process/test_operations_stalls.py::
test_children_stopped_with_their_parent_are_kept_when_the_parent_resumes_first:
``{'slept': 25, 'pid': 8197} == {'slept': 25, 'pid': 8198}``, the log:
"lease expired (worker lost or cut off); requeued" at the parent's resume, and
the child "lease lost and its result was discarded"). Default lease and reaper
interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from redflow_mp.maintenance import StallGuard, reap_expired
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(60)

LEASE_MS = 5000  # the default lease_ms
REAPER_MS = 500  # the default reaper_interval_ms


def _expired_claim(raw: redis.Redis, client: Client, enq: Callable[..., str]) -> tuple[str, str]:
    """A run claimed by a live worker whose lease lapsed while it was stopped."""
    rid = enq()
    token = new_token()
    _, got = client.scripts.claim(("q",), LEASE_MS, token)
    assert got is not None and got.id == rid
    raw.zadd(client.keys.leases, {rid: client.server_time_ms() - 1}, xx=True)
    return rid, got.token


def test_a_first_call_later_than_the_gap_holds_and_the_live_holder_keeps_its_run(
    raw: redis.Redis,
    client: Client,
    enq: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the first call put the run back, ``assert ['01...'] == []``."""
    guard = StallGuard(LEASE_MS, REAPER_MS)  # the supervisor sets up its duties
    rid, token = _expired_claim(raw, client, enq)
    time.sleep(guard.gap_ms / 1000 + 0.3)  # stopped before the reaper's first tick
    with caplog.at_level(logging.WARNING, logger="redflow_mp.maintenance"):
        assert reap_expired(client, guard=guard)[1] == []
    held = [r.getMessage() for r in caplog.records if "leases are not reaped" in r.getMessage()]
    assert len(held) == 1 and "first look at the leases" in held[0], held
    assert status_of(raw, client, rid) == "running"
    # the child runs again and renews: its run stays its own
    assert client.scripts.renew(LEASE_MS, [(rid, token)])[0][0] is True
    assert reap_expired(client, guard=guard)[1] == []
    assert status_of(raw, client, rid) == "running"


def test_a_first_call_at_once_takes_a_dead_holders_run_back_at_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The other side: a supervisor started after another one died reaps the dead
    one's expired leases at its first tick, with no hold."""
    rid, _ = _expired_claim(raw, client, enq)
    assert reap_expired(client, guard=StallGuard(LEASE_MS, REAPER_MS))[1] == [rid]
    assert status_of(raw, client, rid) == "queued"
