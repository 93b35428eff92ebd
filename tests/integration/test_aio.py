"""The asyncio client (``redflow_mp.aio``): the same runs, keyspace and answers as
the sync client, awaited; result waiting on the completion channel shared by
the tasks of one loop; reconnection; clear errors after ``aclose()`` and from a
second event loop. Workers are in-process threads (``workers`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
import redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError

from redflow_mp import (
    Client,
    Context,
    InputValidationError,
    NonRetriableError,
    RedflowError,
    Registry,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
    RunStatus,
    define_workflow,
)
from redflow_mp import aio_resp as wire
from redflow_mp.aio import (
    AsyncClient,
    AsyncRunHandle,
    create_async_client,
    get_default_async_client,
    set_default_async_client,
)
from tests.helpers import WorkerPool, command

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
Body = Callable[[AsyncClient], Awaitable[T]]


@pytest.fixture()
def in_loop(redis_url: str, prefix: str, registry: Registry) -> Iterator[Callable[..., Any]]:
    """``in_loop(body, **client_options)``: ``asyncio.run`` a coroutine function given
    an async client of the test's prefix and registry, closed at its end."""

    def run(body: Body[T], url: str | None = None, **kwargs: Any) -> T:
        async def main() -> T:
            kwargs.setdefault("prefix", prefix)
            kwargs.setdefault("registry", registry)
            kwargs.setdefault("default", False)
            ac = create_async_client(url or redis_url, **kwargs)
            try:
                return await body(ac)
            finally:
                await ac.aclose()

        return asyncio.run(main())

    yield run
    set_default_async_client(None)


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    """Poll ``predicate`` from inside the loop until it is truthy (or fail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def _subscribers(raw: redis.Redis, channel: str) -> int:
    return int(raw.pubsub_numsub(channel)[0][1])


class Img(msgspec.Struct):
    url: str
    width: int = 100


def _flows(registry: Registry) -> dict[str, Any]:
    @define_workflow("echo", queue="aq", max_concurrency=1000, registry=registry)
    def echo(ctx: Context[Any]) -> Any:
        ctx.step.run("seen", lambda: True)
        return ctx.input

    @define_workflow("boom", queue="aq", max_concurrency=100, registry=registry)
    def boom(ctx: Context[Any]) -> None:
        raise NonRetriableError(f"boom {ctx.input}")

    @define_workflow("img", queue="aq", schema=Img, max_concurrency=100, registry=registry)
    def img(ctx: Context[Img]) -> int:
        return ctx.input.width

    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    return {"echo": echo, "boom": boom, "img": img, "idle": idle}


def test_arun_and_result_with_the_sync_clients_answers(
    client: Client, registry: Registry, workers: WorkerPool, in_loop: Callable[..., Any]
) -> None:
    f = _flows(registry)
    client.sync_registry(registry, app="aio-test")
    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> list[str]:
        h = await f["echo"].arun({"n": 1}, client=ac)
        assert isinstance(h, AsyncRunHandle) and repr(h) == f"<AsyncRunHandle {h.id}>"
        assert await h.result(timeout=20) == {"n": 1}
        by_name = await ac.run_by_name("echo", [1, 2], idempotency_key="k")
        assert (await ac.run_by_name("echo", [3], idempotency_key="k")).id == by_name.id
        assert await ac.handle(by_name.id).result(timeout=20) == [1, 2]
        state = await h.state()
        assert state is not None and state.status is RunStatus.SUCCEEDED
        # the same answers as the sync client's, from the same keys
        assert state == client.get_run(h.id)
        assert await ac.get_run_steps(h.id) == client.get_run_steps(h.id)
        assert [s.name for s in await ac.get_run_steps(h.id) or []] == ["seen"]
        assert await ac.list_runs() == client.list_runs()
        assert await ac.list_runs(workflow="echo", status="succeeded", limit=1) == (
            client.list_runs(workflow="echo", status="succeeded", limit=1)
        )
        assert await ac.list_workflows() == client.list_workflows()
        assert await ac.get_workflow_meta("echo") == client.get_workflow_meta("echo")
        assert await ac.get_run("no-such-run") is None
        assert await ac.get_run_steps("no-such-run") is None
        assert await ac.get_workflow_meta("no-such-flow") is None
        with pytest.raises(ValueError, match="unknown status"):
            await ac.list_runs(status="done")
        return [h.id, by_name.id]

    ids = in_loop(body)
    assert [client.handle(i).result(timeout=5) for i in ids] == [{"n": 1}, [1, 2]]


def test_failures_cancellation_and_timeouts(
    client: Client, registry: Registry, workers: WorkerPool, in_loop: Callable[..., Any]
) -> None:
    f = _flows(registry)
    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> None:
        with pytest.raises(NonRetriableError, match="boom 7") as failed:
            await (await f["boom"].arun(7, client=ac)).result(timeout=20)
        assert isinstance(failed.value, RunFailedError)
        idle = await f["idle"].arun(None, client=ac)
        with pytest.raises(ResultTimeoutError, match=r"did not finish within 0\.2 s"):
            await idle.result(timeout=0.2)
        with pytest.raises(TimeoutError):  # a ResultTimeoutError is a TimeoutError too
            await idle.result(timeout=0)
        assert await idle.cancel("not needed") is True
        with pytest.raises(RunCanceledError) as canceled:
            await idle.result(timeout=5)
        assert canceled.value.reason == "not needed"
        assert await ac.cancel_run(idle.id) is client.cancel_run(idle.id)  # the same answer
        assert await ac.cancel_run("no-such-run") is False
        with pytest.raises(RedflowError, match="does not exist"):
            await ac.handle("no-such-run").result(timeout=1)
        with pytest.raises(TypeError, match="reason"):
            await ac.cancel_run(idle.id, 5)  # type: ignore[call-overload]

    in_loop(body)


def test_many_tasks_share_one_client_and_one_run(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    in_loop: Callable[..., Any],
    raw: redis.Redis,
) -> None:
    """300 concurrent arun + result on one client; 20 tasks waiting on the same run
    (one channel, reference-counted), one of them cancelled midway; afterwards no
    channel is left subscribed."""
    f = _flows(registry)
    workers.start(queues=["aq"])
    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> None:
        async def one(i: int) -> Any:
            return await (await f["echo"].arun({"i": i}, client=ac)).result(timeout=30)

        outs = await asyncio.gather(*(one(i) for i in range(300)))
        assert outs == [{"i": i} for i in range(300)]

        idle = await f["idle"].arun(None, client=ac)
        name = ac.keys.run_done(idle.id)
        waiters = [asyncio.ensure_future(idle.result(timeout=30)) for _ in range(20)]
        sub = ac.transport._sub
        await until(
            lambda: (
                sub is not None
                and name.encode() in sub.channels
                and sub.channels[name.encode()].refs == 20
                and sub.channels[name.encode()].ready.done()
            ),
            what="20 waiters on one subscription",
        )
        assert _subscribers(raw, name) == 1  # one subscription for all of them
        waiters[0].cancel()
        client.cancel_run(idle.id, "shared")  # the sync client ends it
        done = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert all(isinstance(d, RunCanceledError) and d.reason == "shared" for d in done[1:])
        assert sub is not None and sub.channels == {}
        await until(lambda: _subscribers(raw, name) == 0, what="the last waiter to unsubscribe")
        assert raw.pubsub_channels(f"{ac.keys.tag}:run-done:*") == []

    in_loop(body)


def test_a_large_output_is_read_after_the_message(
    client: Client, registry: Registry, workers: WorkerPool, in_loop: Callable[..., Any]
) -> None:
    """An output over 64 KiB is read from the run after the message, as any output is."""
    f = _flows(registry)
    workers.start(queues=["aq"])
    big = {"blob": "x" * 100_000}

    async def body(ac: AsyncClient) -> None:
        assert await (await f["echo"].arun(big, client=ac)).result(timeout=20) == big

    in_loop(body)


def test_priority_validation_and_options_on_the_async_path(
    raw: redis.Redis, client: Client, registry: Registry, in_loop: Callable[..., Any]
) -> None:
    f = _flows(registry)

    async def body(ac: AsyncClient) -> None:
        h = await f["idle"].arun(None, client=ac, priority=8, timeout=30, queue_override="q2")
        state = await h.state()
        assert state is not None
        assert (state.priority, state.timeout, state.queue) == (8, 30.0, "q2")
        with pytest.raises(ValueError, match="priority must be from 0"):
            await f["idle"].arun(None, client=ac, priority=10)
        with pytest.raises(TypeError, match="priority must be an int"):
            await ac.run_by_name("idle", None, priority=True)
        with pytest.raises(InputValidationError, match=r"Expected `str`, got `int` - at `\$.url`"):
            await f["img"].arun({"url": 5}, client=ac)
        with pytest.raises(InputValidationError, match="schema of 'img'"):
            await ac.run_by_name("img", {"width": 3})
        with pytest.raises(ValueError, match="naive datetime"):
            from datetime import datetime

            await f["idle"].arun(None, client=ac, run_at=datetime(2030, 1, 1))

    in_loop(body)
    assert raw.zcard(client.keys.runs_created) == 1


def test_run_by_name_without_the_definition_uses_the_metadata(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    in_loop: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = _flows(registry)
    client.sync_registry(registry, app="aio-test")
    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> None:
        h = await ac.run_by_name("img", {"url": 5})  # no schema here: the worker checks
        with pytest.raises(InputValidationError):
            await h.result(timeout=20)
        lost = await ac.run_by_name("nowhere", 1)
        state = await lost.state()
        assert state is not None and state.queue == "default"

    in_loop(body, registry=Registry())
    assert "neither registered in this process nor synced" in caplog.text
    _ = f


def test_the_default_async_client(
    redis_url: str, prefix: str, registry: Registry, client: Client
) -> None:
    f = _flows(registry)

    async def main() -> None:
        with pytest.raises(RedflowError, match="no async client"):
            await f["idle"].arun(None)
        with pytest.raises(TypeError, match="AsyncClient"):
            await f["idle"].arun(None, client=client)
        ac = create_async_client(redis_url, prefix=prefix, registry=registry)
        assert get_default_async_client() is ac
        h = await f["idle"].arun(None)
        assert (await ac.get_run(h.id)) is not None
        async with ac:
            pass
        assert get_default_async_client() is None  # closing the default unsets it
        theirs = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        with pytest.raises(ValueError, match="either url or redis"):
            create_async_client(redis_url, redis=theirs, default=False)
        with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
            create_async_client(redis=redis.Redis(), default=False)  # type: ignore[arg-type]
        mine = create_async_client(redis=theirs, prefix=prefix, registry=registry, default=False)
        try:
            h = await f["idle"].arun(None, client=mine)
            state = await mine.get_run(h.id)
            assert state is not None and state.id == h.id  # bytes replies, our decoding
        finally:
            await mine.aclose()
        assert await theirs.ping()  # the caller's client is not closed by ours
        await theirs.aclose()

    asyncio.run(main())


def test_a_closed_client_refuses_every_call(
    registry: Registry, in_loop: Callable[..., Any], raw: redis.Redis, prefix: str
) -> None:
    f = _flows(registry)

    async def body(ac: AsyncClient) -> None:
        idle = await f["idle"].arun(None, client=ac)
        waiting = asyncio.ensure_future(idle.result())
        name = ac.keys.run_done(idle.id)
        await until(lambda: _subscribers(raw, name) == 1, what="the waiter to subscribe")
        await ac.aclose()
        await ac.aclose()  # twice is fine
        with pytest.raises(RedflowError, match="is closed"):
            await waiting  # a waiter pending at aclose() is told
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: f["idle"].arun(None, client=ac),
            lambda: ac.run_by_name("idle", None),
            lambda: ac.get_run(idle.id),
            lambda: ac.list_runs(),
            lambda: ac.get_run_steps(idle.id),
            lambda: ac.cancel_run(idle.id),
            lambda: ac.resume_run(idle.id),
            lambda: ac.list_workflows(),
            lambda: ac.get_workflow_meta("idle"),
            lambda: idle.result(timeout=1),
            lambda: idle.state(),
        ]
        for call in calls:
            with pytest.raises(RedflowError, match=r"async client .* is closed"):
                await call()

    in_loop(body)
    assert len(raw.keys(f"{{{prefix}}}:run:*")) == 1  # only the first run was written


def test_a_second_event_loop_is_refused(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    f = _flows(registry)
    ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
    own = asyncio.new_event_loop()
    try:

        async def first() -> str:
            h = await f["idle"].arun(None, client=ac)
            with pytest.raises(ResultTimeoutError):
                await h.result(timeout=0.05)  # the pub/sub connection is open too
            return str(h.id)

        run_id = own.run_until_complete(first())

        async def second() -> None:
            with pytest.raises(RedflowError, match="event loop that first used it"):
                await f["idle"].arun(None, client=ac)
            with pytest.raises(RedflowError, match="another one"):
                await ac.get_run(run_id)
            with pytest.raises(RedflowError, match="another one"):
                await ac.handle(run_id).result(timeout=1)
            with pytest.raises(RedflowError, match="another one"):
                await ac.list_runs()
            with pytest.raises(RedflowError, match="another one"):
                await ac.resume_run(run_id)
            await ac.aclose()  # closes it (its own loop is not running)
            with pytest.raises(RedflowError, match="is closed"):
                await ac.list_runs()

        asyncio.run(second())
        assert raw.zcard(ac.keys.runs_created) == 1
        own.run_until_complete(ac.aclose())  # its own loop may close it too
    finally:
        own.close()


def test_reconnects_after_the_connections_are_killed(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    in_loop: Callable[..., Any],
    raw: redis.Redis,
) -> None:
    f = _flows(registry)
    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> None:
        await (await f["echo"].arun(1, client=ac)).result(timeout=20)  # both connections up
        # The workers do not use pub/sub: every pub/sub client is this client's.
        command_link = await ac.transport.call("CLIENT", "ID")
        raw.client_kill_filter(_id=command_link)
        raw.client_kill_filter(_type="pubsub")
        assert await (await f["echo"].arun(2, client=ac)).result(timeout=20) == 2
        assert await ac.transport.call("CLIENT", "ID") != command_link
        # The pub/sub connection dies while a task waits: the waiter subscribes again.
        idle = await f["idle"].arun(None, client=ac)
        name = ac.keys.run_done(idle.id)
        waiting = asyncio.ensure_future(idle.result(timeout=20))
        await until(lambda: _subscribers(raw, name) == 1, what="the waiter to subscribe")
        raw.client_kill_filter(_type="pubsub")
        await until(lambda: _subscribers(raw, name) == 1, what="the waiter to subscribe again")
        client.cancel_run(idle.id)
        with pytest.raises(RunCanceledError):
            await waiting

    in_loop(body)


def test_scripts_are_reloaded_and_the_eval_path_works(
    raw: redis.Redis, client: Client, registry: Registry, in_loop: Callable[..., Any]
) -> None:
    f = _flows(registry)

    async def body(ac: AsyncClient) -> None:
        await f["idle"].arun(None, client=ac)
        command(raw, "SCRIPT", "FLUSH")
        if raw.info("server")["redis_version"] >= "7":
            command(raw, "FUNCTION", "FLUSH")  # a server restarted without persistence
        await f["idle"].arun(None, client=ac)
        assert await ac.cancel_run((await f["idle"].arun(None, client=ac)).id) is True

    in_loop(body)

    async def eval_path(ac: AsyncClient) -> None:
        ac.scripts.use_functions = False
        await f["idle"].arun(None, client=ac)
        assert ac.scripts._functions is None
        command(raw, "SCRIPT", "FLUSH")
        await f["idle"].arun(None, client=ac)

    in_loop(eval_path)
    assert raw.zcard(client.keys.runs_created) == 5


def test_credentials_database_and_error_replies_as_redis_py_has_them(
    raw: redis.Redis, redis_url: str, prefix: str, registry: Registry
) -> None:
    """The wire does its own handshake (AUTH as an ACL user, SELECT) and maps error
    replies to redis-py's classes with redis-py's messages."""
    f = _flows(registry)
    user, password = f"aio-{prefix}"[:60], "pw-aio-1234"
    command(raw, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    base = redis_url.rsplit("/", 1)[0].replace("redis://", f"redis://{user}:{password}@")
    sync = redis.Redis.from_url(f"{base}/3")
    try:

        async def body() -> None:
            ac = create_async_client(f"{base}/3", prefix=prefix, registry=registry, default=False)
            try:
                h = await f["idle"].arun(None, client=ac)
                assert sync.exists(ac.keys.run(h.id)) and not raw.exists(ac.keys.run(h.id))
                sync.set("a-string", "x")
                t = ac.transport
                for cmd in (
                    ("HGET", "a-string", "f"),
                    ("EVALSHA", "0" * 40, 0),
                    ("NO-SUCH-COMMAND",),
                    ("GET",),
                ):
                    with pytest.raises(ResponseError) as ours:
                        await t.call(*cmd)
                    with pytest.raises(ResponseError) as theirs:
                        command(sync, *cmd)
                    assert type(ours.value) is type(theirs.value)
                    assert str(ours.value) == str(theirs.value)
                with pytest.raises(NoScriptError):
                    await t.call("EVALSHA", "0" * 40, 0)
            finally:
                await ac.aclose()
            bad = base.replace(password, "wrong-password")
            ac = create_async_client(f"{bad}/3", prefix=prefix, registry=registry, default=False)
            try:
                with pytest.raises(AuthenticationError):
                    await f["idle"].arun(None, client=ac)
            finally:
                await ac.aclose()

        asyncio.run(body())
    finally:
        sync.flushdb()
        sync.close()
        command(raw, "ACL", "DELUSER", user)


def test_a_reply_that_never_comes_fails_the_call(
    raw: redis.Redis, registry: Registry, in_loop: Callable[..., Any], monkeypatch: Any
) -> None:
    """The reply watchdog: a stalled server (CLIENT PAUSE) fails the pending call
    after the socket timeout (shortened here) instead of hanging it; the next call
    reconnects."""
    monkeypatch.setattr(wire, "SOCKET_TIMEOUT", 0.3)

    async def body(ac: AsyncClient) -> None:
        assert await ac.transport.call("PING") == b"PONG"
        command(raw, "CLIENT", "PAUSE", 1500, "ALL")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(redis.TimeoutError, match="Timeout reading"):
            await ac.transport.call("PING", retry=False)
        assert 0.25 <= loop.time() - started < 1.4
        assert raw.ping()  # blocks until the pause ends
        assert await ac.transport.call("PING") == b"PONG"  # on a new connection

    in_loop(body)


def test_send_event_and_the_cancel_cascade_on_the_async_client(
    client: Client, registry: Registry, workers: WorkerPool, in_loop: Callable[..., Any]
) -> None:
    from redflow_mp.wait_scripts import EventLimitError

    @define_workflow("a-listener", queue="aq", max_concurrency=100, registry=registry)
    def listener(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("ev", "go")

    @define_workflow("a-parent", queue="aq", max_concurrency=100, registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("child", listener, None)

    workers.start(queues=["aq"])

    async def body(ac: AsyncClient) -> None:
        handle = await listener.arun(None, client=ac)
        await until(lambda: (s := client.get_run(handle.id)) is not None and s.wait, 10, "wait")
        assert await handle.send_event("go", {"x": 1}) is True
        assert await handle.result(timeout=10) == {"x": 1}
        assert await handle.send_event("go", 2) is False  # finished: nothing stored
        assert await ac.send_event("no-such-run", "go") is False
        with pytest.raises(ValueError, match="event name"):
            await ac.send_event(handle.id, "")
        top = await parent.arun(None, client=ac)
        await until(lambda: len(client.list_runs(workflow="a-listener", status="suspended")) == 1)
        assert await top.cancel("enough") is True
        child = client.list_runs(workflow="a-listener", status="canceled")
        assert len(child) == 1 and child[0].parent_run_id == top.id

    in_loop(body)

    async def limit(ac: AsyncClient) -> None:
        idle = await listener.arun(None, client=ac, queue_override="nobody")
        assert await ac.send_event(idle.id, "e", 1) is True
        with pytest.raises(EventLimitError):
            await ac.send_event(idle.id, "e", 2)

    in_loop(limit, max_events_per_run=1)

    async def budget(ac: AsyncClient) -> None:
        idle = await listener.arun(None, client=ac, queue_override="nobody")
        assert await ac.send_event(idle.id, "e", "0123456789") is True  # 12 bytes of JSON
        with pytest.raises(EventLimitError, match="max_event_bytes_per_run=20"):
            await ac.send_event(idle.id, "e", "0123456789")

    in_loop(budget, max_event_bytes_per_run=20)


def test_a_first_call_from_a_second_loop_that_is_a_script_is_refused_too(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    """cancel_run / resume_run as a client's very first calls load the scripts: from a
    second loop they are refused like everything else (not an internal assertion)."""
    ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
    own = asyncio.new_event_loop()
    try:

        async def first() -> bool:
            return await ac.cancel_run("no-such-run")  # the client's first call

        assert own.run_until_complete(first()) is False

        async def second() -> None:
            for call in (lambda: ac.cancel_run("x"), lambda: ac.resume_run("x")):
                with pytest.raises(RedflowError, match="another one"):
                    await call()

        asyncio.run(second())
        own.run_until_complete(ac.aclose())
    finally:
        own.close()
    assert raw.zcard(ac.keys.runs_created) == 0


def test_the_async_cancel_cascade_sends_its_children_a_chunk_at_a_time(
    client: Client,
    registry: Registry,
    raw: redis.Redis,
    in_loop: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the sync client's (test_cancel.py): one round trip per child and a scan
    of every child before; now a pipeline per chunk, and only a child with
    children of its own is scanned."""
    from tests.helpers import command_counts, status_of

    flows = _flows(registry)
    parent = flows["idle"].run(None, client=client).id
    children = [h.id for h in flows["idle"].run_many([None] * 60, client=client)]
    grandchild = flows["idle"].run(None, client=client).id
    raw.sadd(client.keys.run_children(parent), *children)
    raw.sadd(client.keys.run_children(children[7]), grandchild)
    for run_id in children:  # what run_workflow writes: the cascade cancels its own
        raw.hset(client.keys.run(run_id), "parentRunId", parent)
    raw.hset(client.keys.run(grandchild), "parentRunId", children[7])
    singles = 0
    real = AsyncClient._cancel_one

    async def counted(self: AsyncClient, run_id: str, reason: str) -> str | None:
        nonlocal singles
        singles += 1
        return await real(self, run_id, reason)

    monkeypatch.setattr(AsyncClient, "_cancel_one", counted)

    async def body(ac: AsyncClient) -> bool:
        return await ac.cancel_run(parent)

    counts = command_counts(raw, lambda: in_loop(body))
    for run_id in (parent, *children, grandchild):
        assert status_of(raw, client, run_id) == "canceled"
    assert singles == 1  # the parent's own cancel; its children's went in a pipeline
    assert counts.get("sscan", 0) == 2, counts  # the parent and the child with a child


def test_the_async_cascade_ending_after_a_resume_and_a_second_cancel_keeps_its_record(
    client: Client,
    registry: Registry,
    raw: redis.Redis,
    in_loop: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As tests/lua/test_cascade_record.py for the async client's walk: its end
    removed the record of a cancel made after a resume while it went on."""
    from redflow_mp.cascade import finish_pending
    from redflow_mp.maintenance import stores
    from tests.helpers import status_of

    flows = _flows(registry)
    parent = flows["idle"].run(None, client=client).id
    child = flows["idle"].run(None, client=client).id
    raw.sadd(client.keys.run_children(parent), child)
    raw.hset(client.keys.run(child), "parentRunId", parent)  # as run_workflow writes it
    real = AsyncClient._cancel_many

    async def interleaved(
        self: AsyncClient, ids: list[str], why: str, parent_id: str = ""
    ) -> list[tuple[str | None, bool]]:
        out = await real(self, ids, why, parent_id)  # the first walk cancels the child...
        client.resume_run(parent)  # ...the parent is resumed (its replay resumes
        client.resume_run(child)  # the child), then canceled again by a second
        assert client.scripts.cancel(parent, "") == "canceled"  # canceller that dies
        return out

    monkeypatch.setattr(AsyncClient, "_cancel_many", interleaved)

    async def body(ac: AsyncClient) -> bool:
        return await ac.cancel_run(parent)

    assert in_loop(body)
    monkeypatch.undo()
    assert raw.zscore(client.keys.cascades, parent) is not None, "the second cancel's record"
    assert finish_pending(client, stores(client)[0], age_ms=0) == [parent]
    assert status_of(raw, client, child) == "canceled"


def test_run_with_an_async_client_is_a_type_error_not_a_silent_no_op(
    in_loop: Callable[..., Any], registry: Registry, raw: redis.Redis, prefix: str
) -> None:
    """``wf.run(x, client=aclient)`` (``arun`` meant) returned the coroutine of
    ``AsyncClient.enqueue_workflow`` un-awaited: nothing enqueued, no error, only a
    RuntimeWarning when the coroutine was collected (mypy accepts the call too)."""
    echo = _flows(registry)["echo"]

    async def body(ac: AsyncClient) -> None:
        with pytest.raises(TypeError, match=r"AsyncClient: use `await workflow.arun"):
            echo.run(1, client=ac)
        with pytest.raises(TypeError, match=r"AsyncClient: use `await workflow.arun"):
            echo.run_many([1, 2], client=ac)
        handle = await echo.arun(3, client=ac)
        assert (await ac.get_run(handle.id)) is not None

    in_loop(body)
    assert raw.zcard("{" + prefix + "}:runs:created") == 1
