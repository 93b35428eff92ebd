"""Batched durable writes with ``durability_wait_ms`` longer than the socket
timeout and no replica confirming (a master and a SIGSTOPped replica, real
servers): each batch waits once, then raises ``NotReplicatedError``; nothing is
resent because the WAIT's reply was slow.

``run_many`` / ``run_many_by_name`` (a chunk per ``enqueue_runs`` call, sync and
async), ``Runs.enqueue_each`` (``step.run_workflows``: one pipeline of
``enqueue_run`` calls) and the cancel cascade (a pipeline of ``cancel_run`` calls,
sync and async). Before: a chunk was sent again after ``NotReplicatedError`` (two
waits); the pipelines read the WAIT's reply with the 5 s socket timeout, so
redis-py resent them (``enqueue_each`` without idempotency keys wrote every run
again) and then raised its ``TimeoutError``, or (the cascade) sent each cancel
alone, waiting ``durability_wait_ms`` for each.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from redflow_mp import NotReplicatedError, Registry, create_client
from redflow_mp.options import RunOptions
from redflow_mp.transport import SOCKET_TIMEOUT
from tests.cluster.durable import (
    durable_async_client,
    durable_client,
    run_count,
    trivial_flow,
)
from tests.redis_server import RedisServer

WAIT_MS = 5500  # more than SOCKET_TIMEOUT
ONE_WAIT = (WAIT_MS / 1000, WAIT_MS / 1000 + SOCKET_TIMEOUT)


def _waited_once(took: float) -> None:
    assert ONE_WAIT[0] <= took < ONE_WAIT[1], f"took {took:.1f} s, not one wait of {WAIT_MS} ms"


def test_run_many_waits_once_and_writes_once(
    stalled_replica: RedisServer, prefix: str, registry: Registry
) -> None:
    trivial_flow(registry, "durable_batch", queue="unserved")
    client = durable_client(stalled_replica.url, prefix, registry, WAIT_MS)
    client.sync_registry(registry, app="t")
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms") as caught:
            client.run_many_by_name("durable_batch", [1, 2, 3])
        _waited_once(time.monotonic() - started)
        assert getattr(caught.value, "enqueued", None) == [None, None, None]
        assert "written on the master, which no replica confirmed in time" in str(caught.value)
        assert run_count(stalled_replica, prefix) == 3
    finally:
        client.close()

    async def main() -> float:
        ac = durable_async_client(stalled_replica.url, prefix, registry, WAIT_MS)
        try:
            began = time.monotonic()
            with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
                await ac.run_many_by_name("durable_batch", [1, 2, 3])
            return time.monotonic() - began
        finally:
            await ac.aclose()

    _waited_once(asyncio.run(main()))
    assert run_count(stalled_replica, prefix) == 6


def test_enqueue_each_waits_once_and_is_never_resent(
    stalled_replica: RedisServer, prefix: str, registry: Registry
) -> None:
    """``step.run_workflows``'s batch, here without idempotency keys: a resend of
    the pipeline writes every run again."""
    flow = trivial_flow(registry, "durable_batch", queue="unserved")
    client = durable_client(stalled_replica.url, prefix, registry, WAIT_MS)
    client.sync_registry(registry, app="t")
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
            client.enqueue_each(flow, [1, 2, 3], [RunOptions.of() for _ in range(3)])
        _waited_once(time.monotonic() - started)
        assert run_count(stalled_replica, prefix) == 3
    finally:
        client.close()


def _family(master: RedisServer, prefix: str, registry: Registry) -> tuple[str, list[str]]:
    """A parent and three queued children recorded as its ``run_workflow`` children,
    written without durability (before the replica was stopped, nothing waits)."""
    plain = create_client(master.url, prefix=prefix, registry=registry, default=False)
    try:
        plain.sync_registry(registry, app="t")
        parent = plain.run_by_name("durable_batch", 0).id
        children = [h.id for h in plain.run_many_by_name("durable_batch", [1, 2, 3])]
        plain.redis.sadd(plain.keys.run_children(parent), *children)
        for child in children:  # as run_workflow writes it: the cascade cancels its own
            plain.redis.hset(plain.keys.run(child), "parentRunId", parent)
        return parent, children
    finally:
        plain.close()


def _statuses(master: RedisServer, prefix: str, ids: list[str]) -> list[Any]:
    r = master.client()
    try:
        return [r.hget(f"{{{prefix}}}:run:{run_id}", "status") for run_id in ids]
    finally:
        r.close()


def test_the_cancel_cascade_waits_once_per_chunk(
    stalled_replica: RedisServer, prefix: str, registry: Registry
) -> None:
    """The cascade's chunk of cancels, unconfirmed: NotReplicatedError after one
    wait (the cancels applied on the master), not a resent pipeline, then each
    cancel alone with a wait of its own."""
    trivial_flow(registry, "durable_batch", queue="unserved")
    parent, children = _family(stalled_replica, prefix, registry)
    client = durable_client(stalled_replica.url, prefix, registry, WAIT_MS)
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
            client.cancel_children(parent)
        _waited_once(time.monotonic() - started)
        assert _statuses(stalled_replica, prefix, children) == [b"canceled"] * 3
    finally:
        client.close()

    parent, children = _family(stalled_replica, prefix, registry)

    async def main() -> float:
        ac = durable_async_client(stalled_replica.url, prefix, registry, WAIT_MS)
        try:
            began = time.monotonic()
            with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
                await ac._cancel_children(parent, None)
            return time.monotonic() - began
        finally:
            await ac.aclose()

    _waited_once(asyncio.run(main()))
    assert _statuses(stalled_replica, prefix, children) == [b"canceled"] * 3
