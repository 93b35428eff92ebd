"""A concurrency slot (``wf-running:<wf>``) held by a run that can no longer give
it back: its record deleted, overwritten or finished behind our back by another
program writing into the prefix, or its ``leases`` entry removed. With the
default ``max_concurrency`` of 1 every later run of the workflow parked for good;
the reaper (a worker's maintenance, the supervisor's reaper duty) now frees such
slots of a parked workflow and puts back a running run that lost its lease entry."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.keys import Keys
from redflow_mp.maintenance import StallGuard, reap_expired
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _delete(raw: redis.Redis, keys: Keys, run_id: str) -> None:
    raw.delete(keys.run(run_id))


def _finish_by_hand(raw: redis.Redis, keys: Keys, run_id: str) -> None:
    raw.hset(keys.run(run_id), "status", "succeeded")


def _other_type(raw: redis.Redis, keys: Keys, run_id: str) -> None:
    raw.delete(keys.run(run_id))
    raw.set(keys.run(run_id), "not a hash")


def _drop_lease_entry(raw: redis.Redis, keys: Keys, run_id: str) -> None:
    raw.zrem(keys.leases, run_id)


@pytest.mark.parametrize(
    "attack",
    [_delete, _finish_by_hand, _other_type, _drop_lease_entry],
    ids=["record-deleted", "status-overwritten", "record-of-another-type", "lease-entry-removed"],
)
def test_a_slot_whose_run_was_tampered_with_is_freed_for_the_next_runs(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    attack: Callable[[redis.Redis, Keys, str], None],
) -> None:
    started = threading.Event()
    go_on = threading.Event()

    @define_workflow("gated", registry=registry)  # default max_concurrency: 1
    def gated(ctx: Context[Any]) -> str:
        if ctx.input and ctx.input.get("hold") and ctx.run.attempt == 1:
            started.set()
            go_on.wait(20)
        return "done"

    client.sync_registry(registry, app="stale-slots")
    first = gated.run({"hold": True})
    workers.start()
    assert started.wait(10)
    attack(raw, client.keys, first.id)
    go_on.set()
    # Before the fix: the tampered run's id stayed in wf-running:gated for good,
    # every later run parked behind it, and these waited until the timeout.
    later = [gated.run({"n": i}) for i in range(3)]
    assert [h.result(timeout=20) for h in later] == ["done"] * 3
    assert raw.smembers(client.keys.wf_running("gated")) <= {first.id.encode()}
    assert workers.alive() == [True]


def test_a_worker_whose_run_record_became_another_type_goes_on_claiming(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    started = threading.Event()
    go_on = threading.Event()

    @define_workflow("held", registry=registry, max_concurrency=10)
    def held(ctx: Context[Any]) -> str:
        started.set()
        go_on.wait(20)
        return "held"

    @define_workflow("other", registry=registry, max_concurrency=10)
    def other(ctx: Context[Any]) -> str:
        return "other"

    first = held.run()
    workers.start()
    assert started.wait(10)
    _other_type(raw, client.keys, first.id)
    go_on.set()
    # Before the fix: the finish of `first` (sent with the next claim) failed
    # with WRONGTYPE at every resend, so this worker never claimed again.
    assert other.run().result(timeout=15) == "other"
    assert workers.alive() == [True]


def test_a_freed_slot_is_logged_with_its_whole_workflow_name(
    raw: redis.Redis, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The script names a freed slot as "<workflow> <run id>", and the log line
    split it at the first space: a slot of workflow ``send email`` was logged as
    "run email 01... held a max_concurrency slot of workflow send"."""
    wf, ghost = "send email", "01M977JRVEBW27D7FAPQ2JGN0M"
    raw.sadd(client.keys.wf_running(wf), ghost)  # its run is gone (evicted, deleted)
    raw.zadd(client.keys.wf_waiting(wf), {"01M977JRVEBW27D7FAPQ2JGN0N": 1})
    raw.sadd(client.keys.parked, wf)
    with caplog.at_level(logging.WARNING, logger="redflow_mp.maintenance"):
        reap_expired(client, guard=StallGuard(5000, 500))
    assert not raw.sismember(client.keys.wf_running(wf), ghost)
    line = f"run {ghost} held a max_concurrency slot of workflow {wf} but is gone"
    assert any(line in r.getMessage() for r in caplog.records), caplog.text
