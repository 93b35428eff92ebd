"""``Client.get_run_steps`` (and the async client's) of a run with big step
records reads them in pages of about a MiB, not in one reply.

A run whose steps return large outputs (each at most ``max_payload_bytes``, 8 MiB
by default) is a normal ETL run. Reading its steps by HSCAN pages of 1,000
records brought them all in one call: 48 steps of 8 MiB held Redis for 734 ms
in one HSCAN and doubled the server's memory (a 384 MB reply buffer). The
worker's own read of the same records (``Execution.load_steps``) and ``redflow
runs show`` already cut their pages by the run's ``stepBytes``.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow, queries
from redflow_mp.aio import create_async_client
from tests.helpers import HscanPages, WorkerPool, hscan_bound

pytestmark = pytest.mark.timeout(120)

STEPS = 24
#: Each step's output: about 1 MiB of JSON (a string of that many characters).
OUTPUT = "x" * (1 << 20)


def _reads(raw: redis.Redis, action: Any) -> tuple[int, int]:
    """(HSCAN calls, bytes Redis sent) while ``action`` runs."""
    raw.config_resetstat()
    before = int(raw.info("stats")["total_net_output_bytes"])
    action()
    sent = int(raw.info("stats")["total_net_output_bytes"]) - before
    calls = int(raw.info("commandstats").get("cmdstat_hscan", {}).get("calls", 0))
    return calls, sent


def test_big_step_records_are_read_in_pages_of_about_a_mib(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
) -> None:
    @define_workflow("big-steps", registry=registry)
    def big_steps(ctx: Context[Any]) -> int:
        for i in range(STEPS):
            ctx.step.run(f"part-{i:02d}", lambda: OUTPUT)
        return STEPS

    workers.start()
    handle = big_steps.run(None, client=client)
    assert handle.result(timeout=90) == STEPS
    workers.stop_all()

    bound = hscan_bound(raw, client.keys.run_steps(handle.id))
    assert bound < STEPS << 20  # (one call for all: the defect)
    got: list[Any] = []
    calls, sent = _reads(raw, lambda: got.append(client.get_run_steps(handle.id)))
    steps = got[0]
    assert steps is not None
    assert [s.name for s in steps] == [f"part-{i:02d}" for i in range(STEPS)]
    assert all(s.output == OUTPUT for s in steps)
    assert sent >= STEPS << 20  # every record came
    assert calls > 0 and sent / calls <= bound, (
        f"get_run_steps read {sent:,} bytes in {calls} HSCAN call(s): "
        f"{sent // calls:,} bytes a call, over {bound:,}"
    )

    async def read_async() -> Any:
        ac = create_async_client(url=redis_url, prefix=prefix, registry=registry, default=False)
        try:
            return await ac.get_run_steps(handle.id)
        finally:
            await ac.aclose()

    got.clear()
    calls, sent = _reads(raw, lambda: got.append(asyncio.run(read_async())))
    assert [s.name for s in got[0]] == [s.name for s in steps]
    assert calls > 0 and sent / calls <= bound, (
        f"AsyncClient.get_run_steps read {sent:,} bytes in {calls} HSCAN call(s)"
    )


#: Small steps of the run whose ``stepBytes`` is edited (a realistic ETL loop).
SMALL_STEPS = 1500


def test_a_wrong_or_missing_step_bytes_does_not_set_the_pages(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    """``stepBytes`` is a hint: absent on runs recorded before it existed, or edited
    by hand. Pages cut by it alone took about 1,000 HSCAN calls (one record
    each, or none) for a run of 1,500 small steps whose ``stepBytes`` read 10**15
    (main: 2), and read a run of big records without ``stepBytes`` in one call
    of 25 MB. The pages after the first follow the bytes that came."""

    @define_workflow("small-steps", registry=registry)
    def small(ctx: Context[Any]) -> int:
        for i in range(SMALL_STEPS):
            ctx.step.run(f"s{i:04d}", lambda i=i: i)
        return SMALL_STEPS

    @define_workflow("big-steps", registry=registry)
    def big(ctx: Context[Any]) -> int:
        for i in range(STEPS):
            ctx.step.run(f"part-{i:02d}", lambda: OUTPUT)
        return STEPS

    workers.start()
    small_run, big_run = small.run(None, client=client), big.run(None, client=client)
    assert small_run.result(timeout=90) == SMALL_STEPS
    assert big_run.result(timeout=90) == STEPS
    workers.stop_all()

    def pages(run_id: str, names: list[str]) -> list[int]:
        reader = HscanPages(client.redis)
        steps = queries.drive(cast(redis.Redis, reader), queries.get_run_steps(client.keys, run_id))
        assert steps is not None
        assert [s.name for s in steps] == names  # each once, in order
        return reader.pages

    small_names = [f"s{i:04d}" for i in range(SMALL_STEPS)]
    raw.hset(client.keys.run(small_run.id), "stepBytes", str(10**15))
    got = pages(small_run.id, small_names)
    assert len(got) <= 20, f"get_run_steps took {len(got)} HSCAN calls for {SMALL_STEPS} records"
    raw.hdel(client.keys.run(small_run.id), "stepBytes")
    got = pages(small_run.id, small_names)
    assert len(got) <= 20, f"get_run_steps took {len(got)} HSCAN calls for {SMALL_STEPS} records"

    raw.hdel(client.keys.run(big_run.id), "stepBytes")
    bound = hscan_bound(raw, client.keys.run_steps(big_run.id))
    assert bound < STEPS << 20  # (one call for all: the defect)
    got = pages(big_run.id, [f"part-{i:02d}" for i in range(STEPS)])
    assert sum(got) >= STEPS << 20  # every record came
    # (a call brings at least one bucket of the hash table: records that hash
    # together come together, 4 of the 24 in one bucket was seen)
    assert max(got) <= 2 * bound, (
        f"get_run_steps of a run without stepBytes brought {max(got):,} bytes in one "
        f"HSCAN call ({len(got)} call(s))"
    )
