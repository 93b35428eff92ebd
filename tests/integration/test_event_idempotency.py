"""send_event with an idempotency key: at most one event per (run, key), so a
resend (after a lost reply, or a step that sends it and is retried) delivers it
once. Without a key an event sent twice is stored twice (unchanged)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Registry,
    Retries,
    create_client,
    define_workflow,
    get_default_client,
)
from redflow_mp.aio import create_async_client
from redflow_mp.errors import WrongTypeError
from tests.faults.proxy import Proxy
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _queued(registry: Registry, name: str) -> Any:
    @define_workflow(name, registry=registry)
    def flow(ctx: Context[Any]) -> list[Any]:
        return [ctx.step.wait_for_event(f"w{i}", "go") for i in range(2)]

    return flow


def test_an_event_sent_twice_with_one_key_is_stored_once(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """Before: the second send (a resend) stored the event again, so the run's second
    wait took the duplicate (result [1, 1] instead of [1, 2])."""
    flow = _queued(registry, "ev-idem")
    handle = flow.run()  # queued: events wait for the run
    k = client.keys
    assert client.send_event(handle.id, "go", 1, idempotency_key="order-7:paid") is True
    assert client.send_event(handle.id, "go", 1, idempotency_key="order-7:paid") is True
    assert handle.send_event("go", 1, idempotency_key="order-7:paid") is True
    assert raw.llen(k.run_events(handle.id, "go")) == 1
    assert raw.hget(k.run(handle.id), "eventsPending") == b"1"
    assert handle.send_event("go", 2, idempotency_key="order-7:shipped") is True
    workers.start()
    assert handle.result(timeout=20) == [1, 2]
    # a resend after the run finished is still acknowledged (it was delivered)
    assert client.send_event(handle.id, "go", 1, idempotency_key="order-7:paid") is True
    assert client.send_event(handle.id, "go", 3, idempotency_key="new") is False
    assert client.send_event(handle.id, "go", 3) is False


def test_without_a_key_two_sends_store_two_events(raw: redis.Redis, client: Client) -> None:
    handle = client.run_by_name("ev-nokey", None, queue_override="nowhere")
    assert client.send_event(handle.id, "go", 1) is True
    assert client.send_event(handle.id, "go", 1) is True
    assert raw.llen(client.keys.run_events(handle.id, "go")) == 2
    assert not raw.exists(client.keys.run_event_keys(handle.id))


def test_a_keyed_send_is_resent_after_a_cut_connection_and_stored_once(
    raw: redis.Redis, redis_url: str, prefix: str, make_client: Any
) -> None:
    """With a key the client resends after a network error (the script stores the
    event once); the proxy cuts every connection while the call is in flight."""
    owner = make_client()
    handle = owner.run_by_name("ev-cut", None, queue_override="nowhere")
    proxy = Proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])).start()
    client = create_client(proxy.url(redis_url), prefix=prefix, default=False)
    try:
        assert client.send_event(handle.id, "go", "warm", idempotency_key="k0") is True
        proxy.cut()  # resets the client's connection: its next call meets a dead
        proxy.restore()  # socket, and (keyed) is resent on a new connection
        assert client.send_event(handle.id, "go", "x", idempotency_key="k1") is True
        assert client.send_event(handle.id, "go", "x", idempotency_key="k1") is True
    finally:
        client.close()
        proxy.stop()
    assert [v for v in raw.lrange(owner.keys.run_events(handle.id, "go"), 0, -1)] == [
        b'"warm"',
        b'"x"',
    ]


def test_bad_event_keys_are_refused_and_nothing_is_stored(raw: redis.Redis, client: Client) -> None:
    handle = client.run_by_name("ev-badkey", None, queue_override="nowhere")
    for key, exc in [("", ValueError), (5, TypeError), ("k" * 4097, ValueError)]:
        with pytest.raises(exc, match="idempotency_key"):
            client.send_event(handle.id, "go", 1, idempotency_key=key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not valid Unicode"):
        client.send_event(handle.id, "go", 1, idempotency_key="k\udcff")
    assert not raw.exists(client.keys.run_events(handle.id, "go"))
    # a neighbour's key of another type under the run's event-keys name: refused,
    # nothing stored or counted, and the error names the key
    raw.set(client.keys.run_event_keys(handle.id), "not a set")
    with pytest.raises(WrongTypeError, match="event-keys"):
        client.send_event(handle.id, "go", 1, idempotency_key="k")
    assert not raw.exists(client.keys.run_events(handle.id, "go"))
    assert raw.hget(client.keys.run(handle.id), "eventsPending") is None
    assert client.send_event(handle.id, "go", 1) is True  # keyless sends are unaffected


def test_the_async_client_keeps_one_event_per_key(
    raw: redis.Redis, client: Client, redis_url: str, prefix: str
) -> None:
    handle = client.run_by_name("ev-aio", None, queue_override="nowhere")

    async def main() -> list[bool]:
        aio = create_async_client(redis_url, prefix=prefix, default=False)
        try:
            ahandle = aio.handle(handle.id)
            return [
                await aio.send_event(handle.id, "go", 1, idempotency_key="a"),
                await ahandle.send_event("go", 1, idempotency_key="a"),
                await ahandle.send_event("go", 2, idempotency_key="b"),
            ]
        finally:
            await aio.aclose()

    assert asyncio.run(main()) == [True, True, True]
    assert raw.lrange(client.keys.run_events(handle.id, "go"), 0, -1) == [b"1", b"2"]


def test_retention_removes_the_event_keys_with_the_run(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    flow = _queued(registry, "ev-retained")
    handle = flow.run()
    handle.send_event("go", 1, idempotency_key="a")
    handle.send_event("go", 2, idempotency_key="b")
    workers.start()
    assert handle.result(timeout=20) == [1, 2]
    assert raw.scard(client.keys.run_event_keys(handle.id)) == 2
    assert raw.lrange(client.keys.run_event_key_order(handle.id), 0, -1) == [b"a", b"b"]
    time.sleep(0.01)  # older than the 1 ms retention below
    while client.scripts.sweep(1, 100) == 100:
        pass
    assert not raw.exists(client.keys.run(handle.id))
    assert not raw.exists(client.keys.run_event_keys(handle.id))
    assert not raw.exists(client.keys.run_event_key_order(handle.id))


def test_a_step_that_signals_another_run_and_runs_again_delivers_once(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """The guide's pattern: send from a step with a key made of the sender's run id
    and step name. The step sends, then fails (as a crash after the send would) and
    the run's retry sends again: the receiver gets the event once."""
    receiver = _queued(registry, "ev-receiver")
    target = receiver.run()
    sends: list[int] = []

    def notify(run_id: str, key: str) -> bool:
        default = get_default_client()
        assert default is not None
        sent = default.send_event(run_id, "go", "paid", idempotency_key=key)
        sends.append(1)
        if len(sends) == 1:
            raise ConnectionError("lost after the send")
        return sent

    @define_workflow(
        "ev-sender", retries=Retries(max_attempts=2, initial_delay=0.01), registry=registry
    )
    def sender(ctx: Context[Any]) -> bool:
        return ctx.step.run("notify", notify, ctx.input, f"{ctx.run.id}:notify")

    workers.start()
    assert sender.run(target.id).result(timeout=20) is True
    assert len(sends) == 2
    # delivered twice, the receiver's second wait would take the copy: ["paid", "paid"]
    assert target.send_event("go", "second") is True
    assert target.result(timeout=20) == ["paid", "second"]
