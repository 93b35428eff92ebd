"""A run with thousands of steps (one per row of an ETL loop): its claim does
not read them all in one Redis call, and its replay still runs none again."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    NonRetriableError,
    Registry,
    Retries,
    Worker,
    define_workflow,
)
from redflow_mp.maintenance import promote_due
from tests.helpers import monitor, wait_until

pytestmark = pytest.mark.timeout(120)

ROWS = 1_500  # past the 1,000 step records a claim's reply carries


def test_a_run_with_many_steps_is_claimed_without_one_hgetall_of_them(
    client: Client, registry: Registry, redis_url: str
) -> None:
    """The claim read every step record with one HGETALL inside claim_run: Redis
    was blocked 0.26 s by each claim of a run with 100,000 steps, 3.1 s with a
    million (each retry, each resume after a durable wait). Past 1,000 records
    the claim sends their count and the worker reads them by HSCAN pages."""
    calls: Counter[int] = Counter()

    def row(i: int) -> int:
        calls[i] += 1
        return i

    @define_workflow(
        "many-steps",
        retries=Retries(max_attempts=2, initial_delay=0.001, jitter=0),
        registry=registry,
    )
    def flow(ctx: Context[Any]) -> int:
        total = sum(ctx.step.run(f"row-{i}", row, i) for i in range(ROWS))
        if ctx.run.attempt == 1:
            raise ConnectionError("flaky after the loop")
        return total

    handle = flow.run()
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=60) == 1  # attempt 1: records, then fails
        wait_until(lambda: promote_due(client)[0] == 1, message="the retry promoted")
        with monitor(redis_url) as mon:
            assert worker.run_until_idle(timeout=60) == 1  # attempt 2: replays
            # MONITOR lines arrive on their own connection: wait for the run's
            # finish (its PUBLISH) before reading them, or a loaded machine
            # gives a snapshot without the HSCAN pages yet.
            done = f"run-done:{handle.id}"
            wait_until(lambda: any(done in ln for ln in mon.snapshot()), 10)
            lines = mon.snapshot()
    finally:
        worker.close()
    assert handle.result(timeout=5) == sum(range(ROWS))
    assert set(calls.values()) == {1}, "a recorded step ran again"
    steps_key = f':run:{handle.id}:steps"'
    reads = [ln.split('"')[1].lower() for ln in lines if steps_key in ln]
    assert "hgetall" not in reads, f"the claim read {ROWS} step records in one call"
    assert reads.count("hscan") >= 2, reads[:5]


def test_a_run_with_big_step_outputs_is_claimed_without_one_hgetall_of_them(
    client: Client, registry: Registry, redis_url: str, raw: redis.Redis
) -> None:
    """A few big records cost the claim as much as many small ones: 100 steps of
    1 MiB held Redis 0.8 s in claim_run's HGETALL. Past 1 MiB of records in all
    (the run's stepBytes) the worker reads them by pages of about 1 MiB."""
    calls: Counter[int] = Counter()

    def chunk(i: int) -> str:
        calls[i] += 1
        return str(i) * 400_000

    @define_workflow(
        "big-steps",
        retries=Retries(max_attempts=2, initial_delay=0.001, jitter=0),
        registry=registry,
    )
    def flow(ctx: Context[Any]) -> int:
        total = sum(len(ctx.step.run(f"chunk-{i}", chunk, i)) for i in range(5))
        if ctx.run.attempt == 1:
            raise ConnectionError("flaky after the loop")
        return total

    handle = flow.run()
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=60) == 1
        records = raw.hgetall(client.keys.run_steps(handle.id))
        size = sum(len(k) + len(v) for k, v in records.items())
        assert raw.hget(client.keys.run(handle.id), "stepBytes") == str(size).encode()
        wait_until(lambda: promote_due(client)[0] == 1, message="the retry promoted")
        with monitor(redis_url) as mon:
            assert worker.run_until_idle(timeout=60) == 1
            lines = mon.snapshot()
    finally:
        worker.close()
    assert handle.result(timeout=5) == 5 * 400_000
    assert set(calls.values()) == {1}, "a recorded step ran again"
    steps_key = f':run:{handle.id}:steps"'
    reads = [ln.split('"')[1].lower() for ln in lines if steps_key in ln]
    assert "hgetall" not in reads, "the claim read 2 MB of step records in one call"
    assert "hscan" in reads, reads
    # Pages of about 1 MiB: each HSCAN asks for 2 of the 400 KB records. COUNT is
    # only a hint, and how many records a page holds is the server's choice: Redis
    # answers a bucket of its hash table at a time, and with a random hash seed
    # per server start the 5 records share one bucket (one page) in about 2% of
    # layouts (7 of 400 measured on Redis 7.0: this asserted two pages or more and
    # failed so, ['hlen', 'hscan']); Valkey 8.1+ scans a bucket of up to 7 entries
    # at a time, so a hash of 5 always comes in one page there.
    scans = [ln.split('"')[1::2] for ln in lines if steps_key in ln and '"hscan"' in ln.lower()]
    assert scans and all(a[3].upper() == "COUNT" and a[4] == "2" for a in scans), scans


def test_step_bytes_follow_the_records_a_resume_drops(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """resume_run drops the failed step records; the run's stepBytes (what the
    claim goes by) drops with them instead of counting them forever."""

    def bad() -> None:
        raise NonRetriableError("x" * 5_000)

    @define_workflow("resumable", registry=registry)
    def flow(ctx: Context[Any]) -> None:
        ctx.step.run("ok", lambda: "fine")
        ctx.step.run("bad", bad)

    handle = flow.run()
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=20) == 1
    finally:
        worker.close()
    client.resume_run(handle.id)
    records = raw.hgetall(client.keys.run_steps(handle.id))
    assert list(records) == [b"ok"]
    size = sum(len(k) + len(v) for k, v in records.items())
    assert raw.hget(client.keys.run(handle.id), "stepBytes") == str(size).encode()
