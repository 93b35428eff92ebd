"""An :class:`AsyncClient` used on a background event loop (``run_forever`` in a
thread of its own) and closed from the caller's loop in the main thread: the
pattern of an application that keeps its async client on a loop thread.

``aclose()`` raised the other-loop error there and closed nothing (touching
that loop's transports from another thread is unsafe: asyncio is not
thread-safe). It now hands the closing to the client's own loop and waits for
it: the calls in flight there fail with the closed client's error, as for an
``aclose()`` on that loop, and the server sees every connection go. If that
loop stops before or while it closes the client, the sockets are closed
directly (``release_now``), as for a loop that has ended; if it is blocked past
the patience, ``aclose()`` raises and the loop closes the client when it runs.

Also here: ``aclose()`` from another task of the client's own loop while
``result()`` waits (the async twin of the sync close-while-waiting race that
redis-py 5.0.8 showed, ``results.py``): at every point of the wait, the wait
ends with the closed client's error (this held before: the async waiter's
futures are failed by the close itself, on the same loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis

from redflow_mp import Context, Registry, Workflow, aio_elsewhere, define_workflow
from redflow_mp.aio import AsyncClient, AsyncRunHandle, create_async_client
from redflow_mp.errors import RedflowError
from tests.helpers import aclose_in_fork, new_loop, wait_until

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


def clients_named(raw: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in raw.client_list() if c.get("name") == name]


def idle_workflow(registry: Registry) -> Workflow[Any, None]:
    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    return idle


class LoopThread:
    """An event loop (asyncio's or uvloop's) running in a thread of its own
    (``run_forever``)."""

    def __init__(self, kind: str) -> None:
        self.loop = new_loop(kind)
        self.thread = threading.Thread(target=self.loop.run_forever, name="ac-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(params=["asyncio", "uvloop"])
def background(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    lt = LoopThread(request.param)
    try:
        yield lt
    finally:
        lt.stop()
        lt.loop.close()


async def calls_in_flight(ac: AsyncClient, registry: Registry) -> list[asyncio.Task[Any]]:
    """Every kind of connection open, with calls waiting on them: result() waits
    (pub/sub and command connections) and a BLPOP (the redis.asyncio pool), last."""
    await ac.list_runs()
    handle: AsyncRunHandle[None] = await idle_workflow(registry).arun(None, client=ac)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(handle.result(timeout=60)) for _ in range(3)]

    async def blpop() -> Any:
        return await ac.redis.blpop([f"{ac.prefix}:nothing"], 60)

    tasks.append(loop.create_task(blpop()))
    return tasks


def in_flight_seen(raw: redis.Redis, name: str) -> bool:
    """The server sees the BLPOP blocked and the run-done subscription."""
    clients = clients_named(raw, name)
    return any(c.get("cmd") == "blpop" for c in clients) and any(
        int(c.get("sub", 0)) >= 1 for c in clients
    )


#: redis-py before 5.1 raises the cut itself from a raw ``client.redis`` call cut by
#: the close (no retry reaches the closed gate); the library's own queries turn it
#: into the closed client's error (``aio_connection.drive_query``).
OLD_REDIS_PY = tuple(int(part) for part in redis.__version__.split(".")[:2]) < (5, 1)
CUT_RAW = (RedflowError, redis.ConnectionError) if OLD_REDIS_PY else (RedflowError,)


def assert_closed_error(error: BaseException | None, raw_call: bool = False) -> None:
    """The closed client's error (a raw redis.asyncio call: see CUT_RAW)."""
    assert isinstance(error, CUT_RAW if raw_call else RedflowError), repr(error)
    if isinstance(error, RedflowError):
        assert "is closed" in str(error)


async def outcome_of(task: asyncio.Task[Any]) -> BaseException | None:
    try:
        await task
    except BaseException as exc:
        return exc
    return None


async def the_rest() -> None:
    """Every other task of the running loop, to its end."""
    while rest := asyncio.all_tasks() - {asyncio.current_task()}:  # (some start others)
        await asyncio.gather(*rest, return_exceptions=True)


@pytest.mark.parametrize("shards", [1, 2])
def test_aclose_from_the_callers_loop_while_the_clients_loop_runs_in_its_thread(
    redis_url: str,
    prefix: str,
    registry: Registry,
    raw: redis.Redis,
    background: LoopThread,
    shards: int,
) -> None:
    name = f"act-{prefix[-12:]}"
    ac = create_async_client(
        f"{redis_url}?client_name={name}",
        prefix=prefix,
        registry=registry,
        default=False,
        shards=shards,
    )
    tasks = background.run(calls_in_flight(ac, registry)).result(timeout=60)
    wait_until(lambda: in_flight_seen(raw, name), message="the calls to be in flight")
    assert len(clients_named(raw, name)) >= 3

    async def close_here() -> None:
        await ac.aclose()  # the assertion that failed: this raised the other-loop error
        await ac.aclose()  # twice is fine

    asyncio.run(close_here())  # no exception
    for i, task in enumerate(tasks):  # the calls in flight there end with the closed error
        error = background.run(outcome_of(task)).result(timeout=60)
        assert_closed_error(error, raw_call=i == len(tasks) - 1)
    wait_until(lambda: not clients_named(raw, name), message="the server to see them all go")
    with pytest.raises(RedflowError, match="is closed"):
        background.run(ac.list_runs()).result(timeout=60)
    assert background.loop.is_running()  # the loop itself goes on


def test_aclose_when_the_clients_loop_stops_before_it_closes_it(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis, background: LoopThread
) -> None:
    name = f"acs-{prefix[-12:]}"
    ac = create_async_client(
        f"{redis_url}?client_name={name}", prefix=prefix, registry=registry, default=False
    )
    tasks = background.run(calls_in_flight(ac, registry)).result(timeout=60)
    wait_until(lambda: in_flight_seen(raw, name), message="the calls to be in flight")
    entered, held = threading.Event(), threading.Event()
    loop = background.loop

    def busy_then_stop() -> None:  # the loop is busy in sync code, then stops
        entered.set()
        held.wait()
        loop.stop()  # before it gets to the callbacks queued meanwhile

    loop.call_soon_threadsafe(busy_then_stop)
    assert entered.wait(timeout=30)

    async def close_here() -> None:
        closing = asyncio.get_running_loop().create_task(ac.aclose())
        await asyncio.sleep(0)  # the closing is handed to that loop (queued behind)
        held.set()
        await closing  # that loop stopped: closed from here, without it

    asyncio.run(close_here())  # no exception
    background.thread.join(timeout=30)
    assert not loop.is_running()
    wait_until(lambda: not clients_named(raw, name), message="the server to see them all go")
    # the loop runs again (its pending calls are told), then ends cleanly
    for i, task in enumerate(tasks):
        error = loop.run_until_complete(outcome_of(task))
        assert_closed_error(error, raw_call=i == len(tasks) - 1)
    # and so does the closing handed to it (it finds the sockets closed already)
    loop.run_until_complete(the_rest())


def test_aclose_from_another_task_at_every_point_of_a_result_wait(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    idle = idle_workflow(registry)

    async def main() -> None:
        for ticks in range(40):  # the close lands at each step of the wait in turn
            ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
            handle = await idle.arun(None, client=ac)
            waiting = asyncio.get_running_loop().create_task(handle.result(timeout=60))
            for _ in range(ticks):
                await asyncio.sleep(0)
            await ac.aclose()
            error = await outcome_of(waiting)
            assert isinstance(error, RedflowError), (ticks, repr(error))
            assert "is closed" in str(error)

    asyncio.run(main())


def test_aclose_when_the_clients_loop_is_blocked_past_the_patience(
    redis_url: str,
    prefix: str,
    registry: Registry,
    raw: redis.Redis,
    background: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the patience made short (10 s by default): the loop stays blocked until told
    monkeypatch.setattr(aio_elsewhere, "CLOSE_PATIENCE", 0.2)
    name = f"acb-{prefix[-12:]}"
    ac = create_async_client(
        f"{redis_url}?client_name={name}", prefix=prefix, registry=registry, default=False
    )
    tasks = background.run(calls_in_flight(ac, registry)).result(timeout=60)
    wait_until(lambda: in_flight_seen(raw, name), message="the calls to be in flight")
    entered, held = threading.Event(), threading.Event()

    def busy() -> None:  # sync code blocking the client's loop
        entered.set()
        held.wait()

    background.loop.call_soon_threadsafe(busy)
    assert entered.wait(timeout=30)
    try:
        with pytest.raises(RedflowError, match="did not close it within"):
            asyncio.run(ac.aclose())
        assert len(clients_named(raw, name)) >= 3  # nothing touched from here
    finally:
        held.set()
    # the closing stayed handed to that loop: done once it runs again
    for i, task in enumerate(tasks):
        error = background.run(outcome_of(task)).result(timeout=60)
        assert_closed_error(error, raw_call=i == len(tasks) - 1)
    wait_until(lambda: not clients_named(raw, name), message="the server to see them all go")


def test_aclose_in_a_forked_child_of_a_process_whose_loop_thread_runs_the_client(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis, background: LoopThread
) -> None:
    # The client's loop runs in a thread of the parent; a child forked then has a copy
    # of that loop, marked running, with no thread left to run it: nothing closes the
    # client there. aclose() in the child says so at once (it waited the whole patience,
    # 10 s, then blamed a blocked loop), and the parent's connections are left alone.
    name = f"acf-{prefix[-12:]}"
    ac = create_async_client(
        f"{redis_url}?client_name={name}", prefix=prefix, registry=registry, default=False
    )
    background.run(ac.list_runs()).result(timeout=60)
    opened = {c["id"] for c in clients_named(raw, name)}
    assert opened
    outcome = aclose_in_fork(ac)
    # the assertion that failed: "...did not close it within 10 s (blocked?)..."
    assert "RedflowError" in outcome and "forked" in outcome, outcome
    assert {c["id"] for c in clients_named(raw, name)} == opened  # the parent's, untouched
    background.run(ac.list_runs()).result(timeout=60)  # and still in use there
    background.run(ac.aclose()).result(timeout=60)
    wait_until(lambda: not clients_named(raw, name), message="the server to see them all go")
