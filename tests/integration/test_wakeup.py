"""Idle workers block on bell lists; an enqueue rings only when a ready list goes
from empty to non-empty, and each woken worker rings again while work remains,
so a burst wakes every idle worker (not one per block timeout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.ids import new_run_id
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)


def _blocked(raw: redis.Redis) -> int:
    return sum(1 for c in raw.client_list() if c.get("cmd") == "blpop")


def test_a_burst_wakes_every_idle_worker(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    starts: list[float] = []
    ends: list[float] = []
    lock = threading.Lock()

    @define_workflow("nap", registry=registry, max_concurrency=10)
    def nap(ctx: Context[Any]) -> None:
        with lock:
            starts.append(time.monotonic())
        time.sleep(1.5)  # under the 4 s block timeout: a worker it woke overlaps
        with lock:
            ends.append(time.monotonic())

    for _ in range(3):
        workers.start(maintenance=False, block_timeout=4.0)
    wait_until(lambda: _blocked(raw) == 3, 10, message="three idle workers blocked on bells")
    # Three runs land in one MULTI (as from a fast producer): the list goes from
    # empty to three at once, so the enqueue script rings exactly one bell.
    warm = nap.run(None)
    warm.result(timeout=20)
    starts.clear()
    ends.clear()
    wait_until(lambda: _blocked(raw) == 3, 10, message="the workers to be idle again")
    # The same call the client makes (FCALL on Redis 7, EVALSHA on 6.2), three times
    # inside one MULTI.
    scripts = client.scripts
    functions = scripts._functions
    ids = [new_run_id() for _ in range(3)]
    with raw.pipeline(transaction=True) as pipe:
        send: Callable[..., Any] = pipe.execute_command  # untyped in redis-py
        for rid in ids:
            keys, call = scripts.enqueue_call(
                rid, "nap", "default", b"null", 1, 0, "", 1000, "", "", 10, None
            )
            args = (len(keys), *keys, *call)
            if functions is not None:
                send("FCALL", functions["enqueue_run"], *args)
            else:
                send("EVALSHA", scripts._shas["enqueue_run"], *args)
        pipe.execute()
    for rid in ids:
        client.handle(rid).result(timeout=20)
    assert len(starts) == 3
    # Woken by bells, not by their 4 s block timeout: all three ran at once (each
    # started before any ended; an order of events, where "the starts within
    # 0.4 s" was a wall-clock bound a loaded machine could miss).
    assert max(starts) < min(ends), (starts, ends)
    # Only the first enqueue rang (the list was empty); the rest were chained.
    assert raw.llen(client.keys.q_bell("default")) <= 1


def test_enqueue_on_a_non_empty_ready_list_does_not_ring(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    @define_workflow("quiet", registry=registry)
    def quiet(ctx: Context[Any]) -> None:
        return None

    for _ in range(20):
        quiet.run(None)
    assert raw.zcard(client.keys.q_ready("default")) == 20
    assert raw.llen(client.keys.q_bell("default")) == 1
