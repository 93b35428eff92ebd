"""``resume_run`` of a run with many (or big) step records does not read them
all in one Redis call: like the claim, it goes by pages (HSCAN) past 1,000
records or 1 MiB, and keeps the succeeded records and drops the others all the
same (sync and asyncio clients)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, NonRetriableError, Registry, Worker, define_workflow
from redflow_mp.aio import create_async_client
from tests.helpers import command_counts

pytestmark = pytest.mark.timeout(120)

ROWS = 1_500  # past the 1,000 step records read in one call


def _failed_run(
    client: Client, registry: Registry, name: str, step_output: Callable[[int], Any], rows: int
) -> tuple[str, Counter[int]]:
    """A run of ``name`` that recorded ``rows`` steps, then a failed one (it ends failed)."""
    calls: Counter[int] = Counter()

    def row(i: int) -> Any:
        calls[i] += 1
        return step_output(i)

    def bad() -> None:
        raise NonRetriableError("the last step fails once")

    @define_workflow(name, registry=registry)
    def flow(ctx: Context[Any]) -> int:
        for i in range(rows):
            ctx.step.run(f"row-{i}", row, i)
        if ctx.run.attempt == 1:
            ctx.step.run("bad", bad)
        return rows

    handle = flow.run(client=client)
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=60) == 1
    finally:
        worker.close()
    state = client.get_run(handle.id)
    assert state is not None and state.status == "failed"
    return handle.id, calls


def _check_resumed(client: Client, raw: redis.Redis, run_id: str, calls: Counter[int]) -> None:
    steps = client.keys.run_steps(run_id)
    records = raw.hgetall(steps)
    assert b"bad" not in records and len(records) == len(calls)
    size = sum(len(k) + len(v) for k, v in records.items())
    assert raw.hget(client.keys.run(run_id), "stepBytes") == str(size).encode()
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=60) == 1
    finally:
        worker.close()
    assert client.handle(run_id).result(timeout=5) == len(calls)
    assert set(calls.values()) == {1}, "a recorded step ran again"


def test_resume_of_a_run_with_many_steps_reads_them_by_pages(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """resume_run read every step record in one HGETALL inside the script: a run
    with a million steps held Redis for seconds."""
    run_id, calls = _failed_run(client, registry, "many", lambda i: i, ROWS)
    counts = command_counts(raw, lambda: client.resume_run(run_id))
    assert "hgetall" not in counts, f"resume_run read {ROWS} step records in one call: {counts}"
    assert counts.get("hscan", 0) >= 2, counts
    _check_resumed(client, raw, run_id, calls)


def test_resume_of_a_run_with_big_steps_reads_them_by_pages(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """A few big records (2 MB in all) are read by pages of about 1 MiB too."""
    run_id, calls = _failed_run(client, registry, "big", lambda i: str(i) * 400_000, 5)
    counts = command_counts(raw, lambda: client.resume_run(run_id))
    assert "hgetall" not in counts, f"resume_run read 2 MB of step records in one call: {counts}"
    assert "hscan" in counts, counts
    _check_resumed(client, raw, run_id, calls)


def test_async_resume_of_a_run_with_many_steps_reads_them_by_pages(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    run_id, calls = _failed_run(client, registry, "many-aio", lambda i: i, ROWS)

    async def resume() -> None:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            await ac.resume_run(run_id)
        finally:
            await ac.aclose()

    counts = command_counts(raw, lambda: asyncio.run(resume()))
    assert "hgetall" not in counts, counts
    assert counts.get("hscan", 0) >= 2, counts
    _check_resumed(client, raw, run_id, calls)


def test_resume_of_a_run_with_few_steps_is_one_call(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """Below the page size nothing changes: one script call reads them."""
    run_id, calls = _failed_run(client, registry, "few", lambda i: i, 10)
    counts = command_counts(raw, lambda: client.resume_run(run_id))
    assert "hscan" not in counts, counts
    _check_resumed(client, raw, run_id, calls)
