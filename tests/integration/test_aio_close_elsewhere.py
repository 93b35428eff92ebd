"""An :class:`AsyncClient` closed from another event loop than the one it was
used on, once that loop has ended (``asyncio.run(main(ac))`` then
``asyncio.run(ac.aclose())``) or while it is not running.

``aclose()`` raised the other-loop error there, and every socket of the
client (command, pub/sub and pool connections, each shard's) stayed open
until garbage collection: the sockets of a loop that has ended cannot be
closed through that loop. ``aclose()`` now closes them directly, at once,
idempotently; any other use from a second loop still raises the documented
error. Counted on both ends: this process's open sockets (``/proc/self/fd``)
and the server's ``CLIENT LIST``."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.aio import AsyncClient, create_async_client
from redflow_mp.errors import RedflowError, ResultTimeoutError
from tests.helpers import aclose_in_fork, new_loop, wait_until

pytestmark = pytest.mark.timeout(60)


def open_sockets() -> set[str]:
    """This process's open sockets (their inodes: one that another test left
    to the garbage collector may close meanwhile; none may be added)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, gone
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


def clients_named(raw: redis.Redis, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


async def use_everything(ac: AsyncClient, registry: Registry) -> None:
    """Open every kind of connection: the pool (both shards), the command
    connection, the pub/sub connection (a wait left pending at the loop's end)."""

    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    await ac.list_runs()
    h = await idle.arun(None, client=ac)
    with pytest.raises(ResultTimeoutError):
        await h.result(timeout=0.01)
    channel = await ac.transport.subscribe(b"ac13")  # open, whatever the load
    await channel.ready
    task = asyncio.get_running_loop().create_task(h.result(timeout=30))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()


@pytest.mark.parametrize("shards", [1, 2])
def test_aclose_after_the_loop_ended_releases_every_socket(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis, shards: int
) -> None:
    name = f"ac13-{prefix[-12:]}"
    url = f"{redis_url}?client_name={name}"
    raw.ping()
    gc.collect()
    before = open_sockets()
    ac = create_async_client(url, prefix=prefix, registry=registry, default=False, shards=shards)
    asyncio.run(use_everything(ac, registry))
    assert len(open_sockets() - before) >= 3
    assert clients_named(raw, name) >= 3

    async def second(ac: AsyncClient) -> None:
        with pytest.raises(RedflowError, match="event loop that first used it"):
            await ac.list_runs()  # other use from a second loop: the documented error
        await ac.aclose()  # the assertion that failed: this raised the same error
        await ac.aclose()  # twice is fine
        with pytest.raises(RedflowError, match="is closed"):
            await ac.list_runs()

    asyncio.run(second(ac))
    assert open_sockets() <= before  # closed at once, not at garbage collection
    wait_until(lambda: clients_named(raw, name) == 0, message="the server to see them go")
    asyncio.run(ac.aclose())  # a third loop: still fine
    del ac
    gc.collect()  # no "unclosed transport" / "unclosed Connection" warning (errors here)
    assert open_sockets() <= before


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_aclose_from_another_loop_while_its_own_is_idle(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis, kind: str
) -> None:
    name = f"ac13i-{prefix[-12:]}"
    raw.ping()
    own = new_loop(kind)  # (asyncio's self-pipe is a socket pair: counted in before)
    gc.collect()
    before = open_sockets()
    ac = create_async_client(
        f"{redis_url}?client_name={name}", prefix=prefix, registry=registry, default=False
    )
    try:
        own.run_until_complete(use_everything(ac, registry))
        assert clients_named(raw, name) >= 3
        asyncio.run(ac.aclose())  # its own loop is alive but not running
        assert open_sockets() <= before  # uvloop: failed, libuv's sockets left open
        wait_until(lambda: clients_named(raw, name) == 0, message="the server to see them go")

        async def after(ac: AsyncClient) -> None:
            with pytest.raises(RedflowError, match="is closed"):
                await ac.list_runs()
            await ac.aclose()  # its own loop may close it too: nothing left to do
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                with pytest.raises(RedflowError, match="is closed"):
                    await task  # the wait pending at the close is told

        own.run_until_complete(after(ac))
    finally:
        own.close()
    del ac
    gc.collect()
    # and asyncio's loop's socket pair (uvloop's has none)
    assert len(before - open_sockets()) >= (2 if kind == "asyncio" else 0)


def test_a_sync_client_releases_its_sockets_on_close_and_with(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    name = f"sc13-{prefix[-12:]}"
    raw.ping()
    gc.collect()
    before = open_sockets()
    url = f"{redis_url}?client_name={name}"

    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    with create_client(url, prefix=prefix, registry=registry) as client:
        client.list_runs()
        with pytest.raises(ResultTimeoutError):
            idle.run(None, client=client).result(timeout=0.01)
    # a wait that left at its deadline leaves its pub/sub connect to a helper
    # thread (results._within), which closes what it opened once it is over
    wait_until(
        lambda: not any(t.name == "redflow-result-connect" for t in threading.enumerate()),
        message="the result helper thread to end",
    )
    assert open_sockets() <= before
    wait_until(lambda: clients_named(raw, name) == 0, message="the server to see them go")
    other = create_client(url, prefix=prefix, registry=registry)
    other.list_runs()
    other.close()
    other.close()
    del other
    gc.collect()
    assert open_sockets() <= before


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_releasing_a_connection_its_loop_closed_leaves_the_reused_descriptor_alone(
    redis_url: str, kind: str
) -> None:
    # The direct close (another loop's aclose(), its own not running) of a connection
    # the loop has closed already, whose descriptor number another socket of the
    # process has taken since: uvloop's socket reports fileno() -1 once libuv closed
    # it, so no /dev/null is put over the newcomer (asyncio's socket object is closed
    # once, never by number). A guard: this held when the dup2 came in.
    from redflow_mp.aio_connection import release_transport

    address = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    own = new_loop(kind)
    try:

        async def connect() -> asyncio.BaseTransport:
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, address["host"], address["port"]
            )
            return transport

        transport = own.run_until_complete(connect())
        number = transport.get_extra_info("socket").fileno()
        left, right = socket.socketpair()  # (made before: they cannot take the number)
        with left, right:
            transport.close()
            own.run_until_complete(asyncio.sleep(0.05))  # the loop closes it
            os.dup2(left.fileno(), number)  # the number reused by another socket
            try:
                release_transport(transport)
                os.write(number, b"x")  # still the newcomer: a socket, connected
                assert right.recv(1) == b"x"
            finally:
                os.close(number)
    finally:
        own.close()


def epoll_watched(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The descriptors the kernel's epoll instance of asyncio's ``loop`` watches."""
    epoll = loop._selector._selector.fileno()  # type: ignore[attr-defined]
    with open(f"/proc/self/fdinfo/{epoll}") as info:
        return sorted(line.split()[1] for line in info if line.startswith("tfd:"))


def test_aclose_in_a_child_forked_while_its_own_loop_is_idle_leaves_the_parent_alone(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    # The parent's loop is alive but not running at the fork (run_until_complete
    # calls). The child's copy shares the parent's epoll instance: closing the
    # client there "directly" (transport.abort()) unregistered its sockets from
    # that shared instance, and the parent's loop never heard them again. In a
    # forked child aclose() raises at once and touches nothing.
    own = asyncio.new_event_loop()
    ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
    try:
        own.run_until_complete(ac.list_runs())
        watched = epoll_watched(own)
        outcome = aclose_in_fork(ac)
        # the parent's loop still hears its connections (before: the child's abort()
        # took them out of the shared epoll instance: ['9', '7'] then ['7'])
        assert epoll_watched(own) == watched
        assert "RedflowError" in outcome and "forked" in outcome, outcome
        own.run_until_complete(asyncio.wait_for(ac.list_runs(), 30))
        own.run_until_complete(ac.aclose())
    finally:
        own.close()
