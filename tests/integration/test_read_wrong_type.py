"""A read of the client API (``list_runs``, ``get_run``...) meeting a key of
another type under the prefix (a neighbour's key, a hand edit) raised the
server's bare ``WRONGTYPE Operation against a key holding the wrong kind of
value``: for a read sent alone (``list_runs`` walks ``runs:created`` by itself)
nothing said which key, and ``redflow runs list`` printed the same line. The
error now names the command and the key; it is a ``WrongTypeError``, still a
``ResponseError`` (``test_read_errors.py`` holds every read to the class)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, WrongTypeError, define_workflow
from redflow_mp.aio import create_async_client

pytestmark = pytest.mark.timeout(60)


def _flow(registry: Registry) -> Any:
    @define_workflow("wt-read", registry=registry)
    def flow(ctx: Any) -> int:
        return 1

    return flow


def test_a_read_meeting_a_key_of_another_type_names_the_key(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    _flow(registry).run(None)
    key = client.keys.runs_created
    raw.delete(key)
    raw.set(key, "a neighbour's value")
    with pytest.raises(redis.ResponseError) as caught:
        client.list_runs()
    assert "WRONGTYPE" in str(caught.value)
    assert key in str(caught.value), str(caught.value)


def test_an_async_read_meeting_a_key_of_another_type_names_the_key(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    _flow(registry).run(None)
    key = client.keys.runs_created
    raw.delete(key)
    raw.set(key, "a neighbour's value")

    async def main() -> str:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            with pytest.raises(redis.ResponseError) as caught:
                await ac.list_runs()
            return str(caught.value)
        finally:
            await ac.aclose()

    message = asyncio.run(main())
    assert "WRONGTYPE" in message
    assert key in message, message


def test_a_result_wait_meeting_a_run_key_of_another_type_names_it(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """``handle.result()`` (sync and async) on a run whose record a neighbour
    replaced by a string raised the bare ``WRONGTYPE`` reply (a ``ResponseError``
    naming no key), while ``get_run`` and ``cancel_run`` on the same id raised a
    ``WrongTypeError`` naming it."""
    handle = _flow(registry).run(None)
    key = client.keys.run(handle.id)
    raw.delete(key)
    raw.set(key, "a neighbour's value")
    with pytest.raises(redis.ResponseError) as caught:
        handle.result(timeout=5)
    assert isinstance(caught.value, WrongTypeError), repr(caught.value)
    assert key in str(caught.value), str(caught.value)

    async def main() -> BaseException:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            with pytest.raises(redis.ResponseError) as caught:
                await ac.handle(handle.id).result(timeout=5)
            return caught.value
        finally:
            await ac.aclose()

    error = asyncio.run(main())
    assert isinstance(error, WrongTypeError), repr(error)
    assert key in str(error), str(error)


def test_a_cancel_meeting_a_children_key_of_another_type_names_it(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """``cancel_run`` (sync and async) of a run whose ``run:<id>:children`` a
    neighbour replaced by a string canceled the run, then raised redis-py's bare
    ``ResponseError`` from the cascade's SSCAN (the async client its bare
    ``WRONGTYPE`` reply, naming no key). It raises a ``WrongTypeError`` naming
    the key and saying the run itself was canceled."""
    flow = _flow(registry)

    def cancel(cancel_call: Any) -> tuple[str, BaseException]:
        handle = flow.run(None)
        key = client.keys.run_children(handle.id)
        raw.set(key, "a neighbour's value")
        with pytest.raises(redis.ResponseError) as caught:
            cancel_call(handle.id)
        state = client.get_run(handle.id)
        assert state is not None and state.status == "canceled"
        return key, caught.value

    key, error = cancel(client.cancel_run)
    assert isinstance(error, WrongTypeError), repr(error)
    assert key in str(error) and "was canceled" in str(error), str(error)

    async def main(run_id: str) -> bool:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            return await ac.cancel_run(run_id)
        finally:
            await ac.aclose()

    key, error = cancel(lambda run_id: asyncio.run(main(run_id)))
    assert isinstance(error, WrongTypeError), repr(error)
    assert key in str(error) and "was canceled" in str(error), str(error)


def test_get_run_steps_of_a_run_key_of_another_type_names_it(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """``get_run_steps`` (sync and async) of a run whose record a neighbour replaced
    by a string answered ``[]`` (it read the record's existence, then the step
    hash), while ``get_run`` raised a ``WrongTypeError`` naming the key. It now
    reads the record's ``stepBytes`` (its page size) and raises the same error."""
    handle = _flow(registry).run(None)
    key = client.keys.run(handle.id)
    raw.delete(key, client.keys.run_steps(handle.id))
    raw.set(key, "a neighbour's value")
    with pytest.raises(WrongTypeError) as caught:
        client.get_run_steps(handle.id)
    assert key in str(caught.value), str(caught.value)

    async def main() -> str:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            with pytest.raises(WrongTypeError) as caught:
                await ac.get_run_steps(handle.id)
            return str(caught.value)
        finally:
            await ac.aclose()

    assert key in asyncio.run(main())
