"""Text that is not valid Unicode (a lone surrogate: what Python makes of bytes that
are not UTF-8, e.g. ``os.fsdecode`` of a file name or a surrogateescape'd header)
in a name, a key, an id, a reason or an input: a clear ``ValueError`` naming the
argument before anything is written, never redis-py's ``UnicodeEncodeError`` from
half-way through a write, and never a batch left half-written."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, RedflowError, Registry, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.keys import Keys

pytestmark = pytest.mark.timeout(60)

BAD = "caf\udce9"  # b"caf\xe9" (Latin-1) decoded with surrogateescape


def _job(registry: Registry) -> Any:
    @define_workflow("job", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def test_a_bad_idempotency_key_in_a_later_chunk_writes_nothing(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry)
    keys: list[str | None] = [f"k{i}" for i in range(1000)]
    keys[700] = BAD  # the second chunk of 500
    with pytest.raises(ValueError) as raised:
        job.run_many(list(range(1000)), idempotency_keys=keys)
    assert raw.zcard(client.keys.runs_created) == 0, "the first chunk was written"
    assert str(raised.value).startswith("idempotency_keys[700] is not valid Unicode"), raised.value


def test_the_async_batch_writes_nothing_either(
    raw: redis.Redis, redis_url: str, prefix: str, registry: Registry
) -> None:
    import asyncio

    _job(registry)
    keys: list[str | None] = [None] * 1000
    keys[999] = BAD

    async def main() -> None:
        aclient = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            with pytest.raises(ValueError, match=r"idempotency_keys\[999\] is not valid Unicode"):
                await aclient.run_many_by_name("job", list(range(1000)), idempotency_keys=keys)
        finally:
            await aclient.aclose()

    asyncio.run(main())
    assert raw.zcard(Keys(prefix).runs_created) == 0, "the first chunks were written"


@pytest.mark.parametrize("what", ["workflow name", "queue", "idempotency_key", "event name"])
def test_bad_names_and_keys_are_a_clear_value_error(
    raw: redis.Redis, client: Client, registry: Registry, what: str
) -> None:
    job = _job(registry)
    pattern = rf"^{what} is not valid Unicode"
    with pytest.raises(ValueError, match=pattern):
        if what == "workflow name":
            client.run_by_name(BAD)
        elif what == "queue":
            job.run(1, queue_override=BAD)
        elif what == "idempotency_key":
            job.run(1, idempotency_key=BAD)
        else:
            client.send_event(job.run(1).id, BAD)
    assert not raw.keys(client.keys.tag.replace("{", "[{]") + ":idempo:*")


def test_bad_run_ids_are_unknown_runs_and_a_bad_reason_is_refused(
    client: Client, registry: Registry
) -> None:
    job = _job(registry)
    assert client.get_run(BAD) is None
    assert client.get_run_steps(BAD) is None
    assert client.cancel_run(BAD) is False
    assert client.send_event(BAD, "go") is False
    with pytest.raises(ValueError, match=r"^reason is not valid Unicode"):
        client.cancel_run(job.run(1).id, BAD)


def test_bad_prefix_is_refused_as_a_prefix() -> None:
    with pytest.raises(ValueError, match=r"^prefix .* is not valid Unicode"):
        Keys(BAD)


def test_a_ten_megabyte_run_id_is_an_unknown_run_without_a_round_trip(
    raw: redis.Redis, client: Client
) -> None:
    """A run id from a request path or body (10 MB here) was sent to Redis as a
    key (HGETALL, LRANGE, EXISTS, the cancel script) and subscribed to as a
    pub/sub channel by ``result()``, whose error then quoted all 10 MB."""
    huge = "z" * 10_000_000
    calls = _command_calls(raw)
    assert client.get_run(huge) is None
    assert client.get_run_steps(huge) is None
    assert client.cancel_run(huge) is False
    assert client.send_event(huge, "go") is False
    with pytest.raises(RedflowError) as unknown:
        client.handle(huge).result(timeout=1)
    assert len(str(unknown.value)) < 200 and "does not exist" in str(unknown.value)
    assert _command_calls(raw) == calls + 1  # the INFO of the first count


def _command_calls(raw: redis.Redis) -> int:
    stats = raw.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())
