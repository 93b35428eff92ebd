"""The asyncio client under cancellation (``task.cancel()``, ``asyncio.wait_for``
timeouts, a web framework dropping the request of a client that went away):
one task's cancellation is that task's alone. Its connection, its script
loading and its subscriptions are shared with the loop's other tasks, which go
on as if it had never called; no reply is handed to the wrong caller.

Cancellation points are reached deterministically: tasks are stepped with
``asyncio.sleep(0)`` and the state they reached is asserted before cancelling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from redflow_mp import Context, Registry, ResultTimeoutError, define_workflow
from redflow_mp.aio import AsyncClient, create_async_client, set_default_async_client
from redflow_mp.errors import RedflowError
from redflow_mp.transport import SOCKET_TIMEOUT

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def in_loop(redis_url: str, prefix: str, registry: Registry) -> Iterator[Callable[..., Any]]:
    def run(body: Callable[[AsyncClient], Any], **kwargs: Any) -> Any:
        async def main() -> Any:
            kwargs.setdefault("prefix", prefix)
            kwargs.setdefault("registry", registry)
            kwargs.setdefault("default", False)
            ac = create_async_client(redis_url, **kwargs)
            try:
                return await body(ac)
            finally:
                await ac.aclose()

        return asyncio.run(main())

    yield run
    set_default_async_client(None)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate`` (a server-side state with no event to wait on) from the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def _blpops(raw: redis.Redis) -> int:
    """BLPOPs the server has run (the server is shared by a worker's tests)."""
    return int(raw.info("commandstats").get("cmdstat_blpop", {}).get("calls", 0))


async def _steps(n: int = 1) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_cancelled_first_caller_does_not_fail_the_callers_sharing_its_connection(
    in_loop: Callable[..., Any],
) -> None:
    async def body(ac: AsyncClient) -> None:
        t = ac.transport
        first = asyncio.ensure_future(t.call("PING"))
        second = asyncio.ensure_future(t.call("PING"))
        await _steps()
        assert "cmd" in t._opening  # the first is connecting, the second waits for it
        first.cancel()
        assert await second == b"PONG"
        assert first.cancelled()
        assert await t.call("PING") == b"PONG"

    in_loop(body)


def test_a_cancelled_first_subscriber_does_not_fail_the_other_waiters(
    in_loop: Callable[..., Any], raw: redis.Redis
) -> None:
    async def body(ac: AsyncClient) -> None:
        t = ac.transport
        await t.call("PING")  # the command connection is up; the pub/sub one is not
        first = asyncio.ensure_future(t.subscribe(b"c1"))
        second = asyncio.ensure_future(t.subscribe(b"c2"))
        await _steps()
        assert "sub" in t._opening
        first.cancel()
        channel = await second
        await channel.ready
        assert raw.pubsub_numsub("c2")[0][1] == 1
        t.unsubscribe(channel)

    in_loop(body)


def test_a_cancelled_script_loader_does_not_fail_the_concurrent_first_calls(
    in_loop: Callable[..., Any],
) -> None:
    async def body(ac: AsyncClient) -> None:
        await ac.transport.call("PING")  # connected; the scripts are not loaded yet
        first = asyncio.ensure_future(ac.cancel_run("01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        second = asyncio.ensure_future(ac.cancel_run("01ARZ3NDEKTSV4RRFFQ69G5FAW"))
        await _steps()
        assert ac.scripts._loading is not None  # the first loads, the second waits
        first.cancel()
        assert await second is False
        assert first.cancelled()

    in_loop(body)


def test_result_with_a_timeout_returns_at_its_deadline_while_redis_does_not_answer(
    in_loop: Callable[..., Any], raw: redis.Redis, registry: Registry, redis_url: str
) -> None:
    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    async def body(ac: AsyncClient) -> None:
        handle = await idle.arun(None, client=ac)
        with pytest.raises(ResultTimeoutError):  # both connections are up
            await handle.result(timeout=0.05)
        loop = asyncio.get_running_loop()
        raw.client_pause(8000, all=True)  # no command is answered for 8 s (not even UNPAUSE)
        try:
            start = loop.time()
            with pytest.raises(ResultTimeoutError):
                await handle.result(timeout=0.3)
            took = loop.time() - start
        finally:  # the pause's end, for the next test
            with redis.Redis.from_url(redis_url, socket_timeout=10) as patient:
                patient.ping()
        # not when the server answers again (8 s) or the reply watchdog's 5 s (with
        # room for a loaded machine: 1.5 s, then 2.5 s under a 3 s pause, left it
        # 1.2 s and 2.2 s; now 4.2 s, still short of both)
        assert took < 4.5, f"result(timeout=0.3) returned after {took:.2f} s"

    in_loop(body)


def test_aclose_leaves_no_connection_open_behind_a_query_in_flight(
    in_loop: Callable[..., Any], raw: redis.Redis
) -> None:
    """A query in flight when the client closes (here a BLPOP, blocked in the server)
    is not resent on a connection that outlives the client: redis-py's retry used
    to reconnect it, and the connection stayed open once the call had returned.
    Nothing is pushed: the query must end because of the close, with the closed
    client's error, at once (before, its BLPOP was sent three times more, each
    waiting out the socket timeout: a TimeoutError 16 s later)."""

    async def body(ac: AsyncClient) -> None:
        others = len(raw.client_list())  # before the client opens any
        sent = _blpops(raw)
        blocked = asyncio.ensure_future(ac.redis.blpop(["aclose-probe"], 0))
        await until(lambda: raw.info("clients")["blocked_clients"] == 1, "BLPOP to block")
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await ac.aclose()
        (outcome,) = await asyncio.gather(blocked, return_exceptions=True)
        took = loop.time() - closed_at
        if hasattr(redis.asyncio.Redis, "_disconnect_raise"):  # redis-py 5: no retry
            assert isinstance(outcome, redis.ConnectionError), outcome
        else:
            assert isinstance(outcome, RedflowError), outcome
            assert "is closed" in str(outcome)
        assert took < SOCKET_TIMEOUT, f"the query ended {took:.2f} s after aclose()"
        await until(lambda: len(raw.client_list()) == others, "the client's connections to close")
        assert _blpops(raw) - sent <= 1  # the BLPOP was not sent again

    in_loop(body)


def test_an_arun_cancelled_after_its_request_left_is_retried_safely_with_its_key(
    in_loop: Callable[..., Any], registry: Registry
) -> None:
    """Cancelled once its enqueue is on the wire, the run may exist; a retry with the
    same idempotency key gives that run (no second one), and the connection's next
    replies go to their own callers."""

    @define_workflow("keyed", queue="nobody", registry=registry)
    def keyed(ctx: Context[Any]) -> None:
        return None

    async def body(ac: AsyncClient) -> None:
        await keyed.arun(None, client=ac, idempotency_key="warm-up")  # connected, loaded
        cmd = ac.transport._cmd
        assert cmd is not None
        first = asyncio.ensure_future(keyed.arun({"n": 1}, client=ac, idempotency_key="k"))
        while not cmd._waiting:  # the enqueue is sent, its reply not read
            await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        again = await keyed.arun({"n": 1}, client=ac, idempotency_key="k")
        other = await keyed.arun({"n": 2}, client=ac, idempotency_key="other")
        runs = await ac.list_runs(workflow="keyed", limit=10)
        assert sorted(r.id for r in runs) == sorted(
            [again.id, other.id, (await keyed.arun(None, client=ac, idempotency_key="warm-up")).id]
        )
        state = await again.state()
        assert state is not None and state.input == {"n": 1}

    in_loop(body)


def test_an_aclose_cancelled_midway_still_closes_every_connection(
    in_loop: Callable[..., Any], raw: redis.Redis
) -> None:
    """``aclose()`` cancelled while it waits for its connections to close (an
    ``asyncio.wait_for`` around it, a shutdown cancelling the task that closes):
    the closing goes on, and a second ``aclose()`` returns once it is done. Before,
    the pool's connections stayed open for the life of the client, and the second
    call returned at once (the client was marked closed)."""

    async def body(ac: AsyncClient) -> None:
        others = len(raw.client_list())  # before the client opens any
        await asyncio.gather(*(ac.get_run("01ARZ3NDEKTSV4RRFFQ69G5FAV") for _ in range(20)))
        await ac.transport.call("PING")
        opened = len(raw.client_list()) - others
        assert opened > 2, opened  # the command connection and the pool's
        closing = asyncio.ensure_future(ac.aclose())
        await _steps()
        assert not closing.done()  # it waits for the pool's connections to close
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await ac.aclose()  # again: it returns when the first one's closing is done
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0  # the server sees the sockets close
        while (left := len(raw.client_list()) - others) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert left == 0, f"{left} of the client's {opened} connections open after aclose()"

    in_loop(body)


def test_an_aclose_cancelled_midway_closes_every_shard_s_connections_too(
    redis_cluster: Any, registry: Registry
) -> None:
    """The same on a cluster with shards on several masters: the shards' own
    connections close too, those whose closing had not begun when the caller was
    cancelled included."""
    nodes = [n.client() for n in redis_cluster.nodes]

    def count() -> int:
        return sum(len(r.client_list()) for r in nodes)

    async def main() -> tuple[int, int]:
        others = count()  # the nodes' clients' own connections
        ac = create_async_client(
            redis_cluster.url, prefix="aclose-shards", registry=registry, default=False, shards=6
        )
        for shard in ac.shard_set.shards:  # each shard's transport and pool connect
            await ac.get_run(shard.run_id("01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        opened = count() - others
        closing = asyncio.ensure_future(ac.aclose())
        await _steps()
        assert not closing.done()  # it waits for connections to close
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0  # no second aclose(): the closing goes on
        while (left := count() - others) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await ac.aclose()
        return opened, left

    try:
        opened, left = asyncio.run(main())
    finally:
        for r in nodes:
            r.close()
    assert opened > 3, opened  # several shards' transports
    assert left == 0, f"{left} of the client's {opened} connections open after aclose()"
