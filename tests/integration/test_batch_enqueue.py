"""Batch enqueue (``Workflow.run_many``, ``Client.run_many_by_name`` and their async
twins): the handles in the order of the inputs, runs written exactly as ``run``
writes them, chunks of 500 (one ``enqueue_runs`` call each) at and around their
boundaries, idempotency keys per item, priorities, scheduled batches, and a bad
item that stops the whole batch before anything is written."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    InputValidationError,
    PayloadTooLargeError,
    Registry,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from redflow_mp.batch import BATCH_CHUNK
from tests.helpers import WorkerPool, texts

pytestmark = pytest.mark.timeout(60)


class Item(msgspec.Struct, forbid_unknown_fields=True):
    n: int


def _job(registry: Registry, name: str = "job", **kw: Any) -> Any:
    @define_workflow(name, registry=registry, **kw)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def _ready(raw: redis.Redis, client: Client, queue: str = "default") -> list[str]:
    return texts(raw.zrange(client.keys.tag + f":q:{queue}:ready", 0, -1))


@pytest.mark.parametrize("n", [0, 1, 499, 500, 501, 1001])
def test_chunk_boundaries_every_run_once_in_order(
    raw: redis.Redis, client: Client, registry: Registry, n: int
) -> None:
    job = _job(registry)
    commands = raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    handles = job.run_many([{"n": i} for i in range(n)])
    calls = raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) - commands
    assert calls == -(-n // BATCH_CHUNK)  # one script call per chunk, none for 0 inputs
    assert handles == [] if n == 0 else len(handles) == n
    ids = [h.id for h in handles]
    assert len(set(ids)) == n
    assert raw.zcard(client.keys.runs_created) == n
    assert raw.zcard(client.keys.runs_status("queued")) == n
    # Ready in the order given (equal priority: older first, ids are time-ordered).
    assert _ready(raw, client) == ids
    for i in sorted({0, n // 2, n - 1}) if n else []:
        state = handles[i].state()
        assert state is not None and state.input == {"n": i} and state.status == "queued"


def test_a_batch_run_is_written_as_run_writes_it(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry, queue="q1", timeout=30, max_concurrency=7)
    one = job.run({"n": 1}, idempotency_key="single")
    (many,) = job.run_many([{"n": 1}], idempotency_keys=["batched"])
    ha, hb = raw.hgetall(client.keys.run(one.id)), raw.hgetall(client.keys.run(many.id))
    a = dict(zip(texts(list(ha)), ha.values(), strict=True))
    b = dict(zip(texts(list(hb)), hb.values(), strict=True))
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k]}
    assert differ <= {"id", "idempotencyKey", "createdAt", "availableAt", "updatedAt"}
    assert {"id", "idempotencyKey"} <= differ
    for index in (client.keys.runs_created, client.keys.runs_status("queued")):
        assert raw.zscore(index, many.id) is not None
    assert raw.sismember(client.keys.queues, "q1")
    # One bell for the burst (the queue was empty before the first run).
    assert raw.llen(client.keys.tag + ":q:q1:bell") == 1
    job.run_many([{"n": 2}] * 3)
    assert raw.llen(client.keys.tag + ":q:q1:bell") == 1  # not empty: no new bell


def test_idempotency_keys_per_item(raw: redis.Redis, client: Client, registry: Registry) -> None:
    job = _job(registry)
    before = job.run({"n": -1}, idempotency_key="k-old")
    keys = ["k-old", None, "k-new", "k-new", None]
    hs = job.run_many([{"n": i} for i in range(5)], idempotency_keys=keys)
    assert hs[0].id == before.id  # an existing key: the existing run in its place
    assert hs[2].id == hs[3].id  # the same key twice in one batch: one run
    assert len({hs[1].id, hs[2].id, hs[4].id, before.id}) == 4
    assert raw.zcard(client.keys.runs_created) == 4
    state = hs[3].state()
    assert state is not None and state.input == {"n": 2}
    assert state.idempotency_key == "k-new"
    # Keys across a chunk boundary, with the same key on both sides.
    keys2 = [f"x{i}" for i in range(BATCH_CHUNK + 3)]
    keys2[-1] = "x0"
    hs2 = job.run_many([{}] * len(keys2), idempotency_keys=keys2)
    assert hs2[-1].id == hs2[0].id
    assert len({h.id for h in hs2}) == BATCH_CHUNK + 2
    # Again: every item names an existing run, nothing new is written.
    total = raw.zcard(client.keys.runs_created)
    assert [h.id for h in job.run_many([{}] * len(keys2), idempotency_keys=keys2)] == [
        h.id for h in hs2
    ]
    assert raw.zcard(client.keys.runs_created) == total


@pytest.mark.parametrize("bad_at", [0, 3, BATCH_CHUNK - 1, BATCH_CHUNK, 700])
def test_a_bad_item_raises_naming_it_and_nothing_is_written(
    raw: redis.Redis, client: Client, registry: Registry, bad_at: int
) -> None:
    @define_workflow("typed", schema=Item, registry=registry)
    def typed(ctx: Context[Item]) -> int:
        return ctx.input.n

    inputs: list[Any] = [{"n": i} for i in range(1001)]
    inputs[bad_at] = {"n": "not a number"}
    keys_before = raw.dbsize()
    with pytest.raises(InputValidationError, match=rf"^inputs\[{bad_at}\]: input does not"):
        typed.run_many(inputs)
    with pytest.raises(InputValidationError, match=rf"^inputs\[{bad_at}\]"):
        client.run_many_by_name("typed", inputs)
    inputs[bad_at] = {"n": object()}
    with pytest.raises(TypeError, match=rf"^inputs\[{bad_at}\]: input is not JSON"):
        typed.run_many(inputs)
    inputs[bad_at] = {"n": 1, "pad": "x" * 2_000_000}
    small = Client(
        client.transport, prefix=client.prefix, registry=registry, max_payload_bytes=1024 * 1024
    )
    with pytest.raises(PayloadTooLargeError, match=rf"^inputs\[{bad_at}\]"):
        small.run_many_by_name("typed", inputs)
    inputs[bad_at] = {"n": 1}
    keys: list[Any] = [None] * len(inputs)
    keys[bad_at] = ""
    with pytest.raises(ValueError, match=rf"idempotency_keys\[{bad_at}\]"):
        typed.run_many(inputs, idempotency_keys=keys)
    assert raw.dbsize() == keys_before
    assert raw.zcard(client.keys.runs_created) == 0


def test_argument_errors(raw: redis.Redis, client: Client, registry: Registry) -> None:
    job = _job(registry)
    with pytest.raises(ValueError, match="idempotency_keys has 1 items for 2 inputs"):
        job.run_many([{}, {}], idempotency_keys=["a"])
    with pytest.raises(TypeError, match="idempotency_keys must be a list"):
        job.run_many([{}], idempotency_keys="a")
    with pytest.raises(TypeError, match="inputs must be a list"):
        job.run_many({"n": 1})
    with pytest.raises(ValueError, match="priority must be from 0"):
        job.run_many([{}], priority=10)
    with pytest.raises(TypeError, match="workflow name must be a str"):
        client.run_many_by_name(3, [{}])  # type: ignore[arg-type]
    assert raw.zcard(client.keys.runs_created) == 0
    # Any iterable, e.g. a generator, is taken.
    assert len(job.run_many({"n": i} for i in range(3))) == 3


def test_priorities_queues_and_schedule_are_honoured(
    raw: redis.Redis, client: Client, registry: Registry, make_client: Callable[..., Client]
) -> None:
    low = _job(registry, "low", queue="pq")
    high = _job(registry, "high", queue="pq", priority=7)
    lows = low.run_many([{}] * 3)
    highs = high.run_many([{}] * 2)
    boosted = low.run_many([{}] * 2, priority=9)
    assert _ready(raw, client, "pq") == [h.id for h in boosted + highs + lows]
    assert [h.state().priority for h in highs] == [7, 7]
    moved = low.run_many([{}] * 2, queue_override="other")
    assert _ready(raw, client, "other") == [h.id for h in moved]
    # By name, from a process without the definition: the synced metadata.
    client.sync_registry(registry, app="batch-test")
    other = make_client(registry=Registry())
    by_name = other.run_many_by_name("high", [{"a": 1}])
    state = other.get_run(by_name[0].id)
    assert state is not None and (state.queue, state.priority) == ("pq", 7)
    # A future run_at schedules the whole batch; the queue is marked due once.
    at = client.server_time_ms() / 1000 + 3600
    later = low.run_many([{}] * 3, run_at=at)
    assert {h.state().status for h in later} == {"scheduled"}
    sched = texts(raw.zrange(client.keys.tag + ":q:pq:scheduled", 0, -1))
    assert sched == [h.id for h in later]
    assert raw.zscore(client.keys.due_queues, "pq") == pytest.approx(at * 1000, abs=1)


def test_batch_runs_execute(client: Client, registry: Registry, workers: WorkerPool) -> None:
    job = _job(registry, max_concurrency=100)
    workers.start()
    handles = job.run_many([{"n": i} for i in range(50)])
    assert [h.result(timeout=20) for h in handles] == [{"n": i} for i in range(50)]


def test_async_run_many(
    raw: redis.Redis, redis_url: str, prefix: str, client: Client, registry: Registry
) -> None:
    job = _job(registry)

    async def main() -> list[str]:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            hs = await job.arun_many([{"n": i} for i in range(BATCH_CHUNK + 1)], client=ac)
            again = await ac.run_many_by_name("job", [{}, {}], idempotency_keys=["same", "same"])
            assert again[0].id == again[1].id
            with pytest.raises(TypeError, match=r"^inputs\[2\]"):
                await job.arun_many([{}, {"x": [[]]}, object()], client=ac)
            return [h.id for h in hs]
        finally:
            await ac.aclose()

    ids = asyncio.run(main())
    assert len(ids) == BATCH_CHUNK + 1
    assert _ready(raw, client) == ids + _ready(raw, client)[len(ids) :]
    assert raw.zcard(client.keys.runs_created) == BATCH_CHUNK + 2
