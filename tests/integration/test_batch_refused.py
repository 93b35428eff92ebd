"""A batch refused part-way (Redis reaching ``maxmemory`` between two chunks) says
which of its runs were written: each chunk is atomic, the batch is not, so an
error that read "was refused and nothing was changed" after 1,500 runs had been
enqueued sent the caller into retrying them all, and every one ran twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, RedisOutOfMemoryError, Registry, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.batch import BATCH_CHUNK
from tests.helpers import texts

pytestmark = pytest.mark.timeout(120)

N = 12 * BATCH_CHUNK  # about 12 MB of inputs: Redis fills up part-way
PAD = "x" * 2000


def _job(registry: Registry) -> Any:
    @define_workflow("refused-job", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def _fill_up_part_way(raw: redis.Redis) -> None:
    """maxmemory a few chunks above what Redis holds now (noeviction): the first
    chunks are written, a later one is refused."""
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", used + 4 * BATCH_CHUNK * len(PAD))


def _inputs_written(raw: redis.Redis, client: Client, before: set[str]) -> Counter[int]:
    """How many runs of the batch hold each input index (``{"n": i}``)."""
    new = [i for i in texts(raw.zrange(client.keys.runs_created, 0, -1)) if i not in before]
    held: Counter[int] = Counter()
    for run_id in new:
        state = client.get_run(run_id)
        assert state is not None
        held[state.input["n"]] += 1
    return held


def _check_the_error_names_what_was_written(
    exc: RedisOutOfMemoryError, raw: redis.Redis, client: Client, before: set[str]
) -> list[str | None]:
    written = set(texts(raw.zrange(client.keys.runs_created, 0, -1))) - before
    assert 0 < len(written) < N, "the test did not make Redis refuse part-way"
    message = str(exc)
    assert f"{len(written):,} of the batch's {N:,} runs were enqueued" in message, message
    enqueued: list[str | None] = exc.enqueued  # type: ignore[attr-defined]
    assert len(enqueued) == N
    assert {run_id for run_id in enqueued if run_id is not None} == written
    return enqueued


def test_a_batch_refused_part_way_names_the_runs_it_wrote(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry)
    inputs = [{"n": i, "pad": PAD} for i in range(N)]
    before = set(texts(raw.zrange(client.keys.runs_created, 0, -1)))
    _fill_up_part_way(raw)
    try:
        with pytest.raises(RedisOutOfMemoryError) as refused:
            job.run_many(inputs)
    finally:
        raw.config_set("maxmemory", 0)
    enqueued = _check_the_error_names_what_was_written(refused.value, raw, client, before)
    # The caller retries exactly the inputs not written: each input runs once.
    left = [i for i, run_id in enumerate(enqueued) if run_id is None]
    job.run_many([inputs[i] for i in left])
    held = _inputs_written(raw, client, before)
    assert set(held) == set(range(N)) and set(held.values()) == {1}
    assert client.redis.ping() is True  # the connection is still in step


def test_an_async_batch_refused_part_way_names_the_runs_it_wrote(
    raw: redis.Redis, client: Client, registry: Registry, redis_url: str, prefix: str
) -> None:
    job = _job(registry)
    inputs = [{"n": i, "pad": PAD} for i in range(N)]
    before = set(texts(raw.zrange(client.keys.runs_created, 0, -1)))

    async def main() -> None:
        aclient = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            _fill_up_part_way(raw)
            try:
                with pytest.raises(RedisOutOfMemoryError) as refused:
                    await job.arun_many(inputs, client=aclient)
            finally:
                raw.config_set("maxmemory", 0)
            enqueued = _check_the_error_names_what_was_written(refused.value, raw, client, before)
            left = [i for i, run_id in enumerate(enqueued) if run_id is None]
            await job.arun_many([inputs[i] for i in left], client=aclient)
        finally:
            await aclient.aclose()

    asyncio.run(main())
    held = _inputs_written(raw, client, before)
    assert set(held) == set(range(N)) and set(held.values()) == {1}
