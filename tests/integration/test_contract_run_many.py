"""Acceptance checks written from issue 13's text for batch enqueue:
``Workflow.run_many(inputs, *, run_at=None, queue_override=None,
idempotency_keys=None, client=None) -> list[RunHandle]`` and
``client.run_many_by_name(name, inputs, ...)``, driven exactly as named there, and
SPEC §2's "every method has a clear error for bad arguments"."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, InputValidationError, Registry, RunHandle, define_workflow
from redflow_mp.aio import create_async_client

pytestmark = pytest.mark.timeout(60)


class Item(msgspec.Struct):
    n: int


def _job(registry: Registry) -> Any:
    @define_workflow("contract-batch", registry=registry, schema=Item)
    def job(ctx: Context[Item]) -> int:
        return ctx.input.n

    return job


def test_run_many_with_the_issue_keywords_returns_a_handle_per_input_and_honours_keys(
    client: Client, registry: Registry, redis_url: str, prefix: str
) -> None:
    job = _job(registry)
    first = job.run({"n": 0}, idempotency_key="k0")
    handles = job.run_many(
        [{"n": 0}, {"n": 1}, {"n": 2}],
        run_at=None,
        queue_override=None,
        idempotency_keys=["k0", None, "k2"],
        client=client,
    )
    assert all(isinstance(h, RunHandle) for h in handles) and len(handles) == 3
    assert handles[0].id == first.id  # an existing key returns the existing run in its place
    assert len({h.id for h in handles}) == 3
    again = client.run_many_by_name("contract-batch", [{"n": 5}], idempotency_keys=["k2"])
    assert [h.id for h in again] == [handles[2].id]


def test_a_bad_item_is_named_and_nothing_of_the_batch_is_written(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    job = _job(registry)
    inputs: list[Any] = [{"n": i} for i in range(600)]
    inputs[550] = {"n": "not a number"}
    with pytest.raises(InputValidationError, match=r"inputs\[550\]"):
        job.run_many(inputs)
    assert raw.zcard(client.keys.runs_created) == 0


@pytest.mark.parametrize("inputs", [None, 5, 3.5])
def test_inputs_that_are_not_an_iterable_get_an_error_naming_inputs(
    client: Client, registry: Registry, raw: redis.Redis, inputs: Any
) -> None:
    job = _job(registry)
    with pytest.raises(TypeError) as by_workflow:
        job.run_many(inputs)
    assert "inputs must be" in str(by_workflow.value), str(by_workflow.value)
    with pytest.raises(TypeError) as by_name:
        client.run_many_by_name("contract-batch", inputs)
    assert "inputs must be" in str(by_name.value), str(by_name.value)
    assert raw.zcard(client.keys.runs_created) == 0


@pytest.mark.parametrize("keys", [5, object()])
def test_idempotency_keys_that_are_not_an_iterable_get_an_error_naming_them(
    client: Client, registry: Registry, raw: redis.Redis, keys: Any
) -> None:
    job = _job(registry)
    with pytest.raises(TypeError) as exc:
        job.run_many([{"n": 1}], idempotency_keys=keys)
    assert "idempotency_keys must be" in str(exc.value), str(exc.value)
    assert raw.zcard(client.keys.runs_created) == 0


@pytest.mark.parametrize("inputs", [None, 5])
def test_the_async_twins_name_inputs_that_are_not_an_iterable(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str, inputs: Any
) -> None:
    job = _job(registry)

    async def main() -> tuple[str, str]:
        aclient = create_async_client(redis_url, prefix, registry=registry, default=False)
        try:
            with pytest.raises(TypeError) as by_workflow:
                await job.arun_many(inputs, client=aclient)
            with pytest.raises(TypeError) as by_name:
                await aclient.run_many_by_name("contract-batch", inputs)
            return str(by_workflow.value), str(by_name.value)
        finally:
            await aclient.aclose()

    for message in asyncio.run(main()):
        assert "inputs must be" in message, message
    assert raw.zcard(client.keys.runs_created) == 0
