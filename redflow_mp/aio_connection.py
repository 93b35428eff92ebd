"""The asyncio half of ``connection.py``: the same routing for redis.asyncio's
pool (cluster pinning, MOVED/ASK/TRYAGAIN/CLUSTERDOWN, Sentinel masters), used
by ``aio_transport.py``; see ``connection.py`` for what and why."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis
import redis.asyncio
from redis import exceptions as rexc
from redis.sentinel import Sentinel

from .closing import Gate, closable_async_connection_class, cut_error
from .connection import (
    CLUSTER_PATIENCE,
    Router,
    Target,
    check_url_options,
    out_of_patience,
    redirect,
    url_fields,
)
from .listing import Batch, QueryPlan, read_error
from .sentinels import AsyncSentinel, check_sentinel_service

__all__ = [
    "ClosingPool",
    "adiscover",
    "async_client_for",
    "async_sentinel_client",
    "awith_redirects",
    "drive_query",
    "release_pool",
    "release_transport",
    "routed_async_connection_class",
]

_T = TypeVar("_T")


def _async_master_connection(base: type[Any]) -> type[Any]:
    """:func:`sentinels._master_connection` for redis.asyncio."""

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()
        await super(Master, self).send_packed_command(command, check_health)

    name = f"Master{base.__name__}"
    Master: type[Any] = type(
        name, (base,), {"send_packed_command": send_packed_command, "__qualname__": name}
    )
    return Master


def async_sentinel_client(
    target: Target, options: dict[str, Any], retry: Any, pool: dict[str, Any] | None = None
) -> Any:
    """redis.asyncio's client of the service's master, and its Sentinel. ``pool``:
    the size and timeout of a blocking pool (as for a plain URL; redis-py's own
    Sentinel pool fails the 101st concurrent query with "Too many connections")."""
    from redis.asyncio.sentinel import SentinelConnectionPool
    from redis.asyncio.sentinel import SentinelManagedConnection as AsyncManaged
    from redis.asyncio.sentinel import SentinelManagedSSLConnection as AsyncManagedSSL

    class BlockingSentinelPool(SentinelConnectionPool, ClosingPool):
        """redis-py's Sentinel pool, blocking and closing like :class:`ClosingPool`."""

    sentinel = async_sentinel(target, options)
    kwargs: dict[str, Any] = dict(options)
    kwargs.update(db=target.db, username=target.username, password=target.password)
    if pool is not None:
        kwargs.update(pool, connection_pool_class=BlockingSentinelPool)
    base = AsyncManagedSSL if target.tls else AsyncManaged
    client = sentinel.master_for(
        target.service, retry=retry, connection_class=_async_master_connection(base), **kwargs
    )
    gate = getattr(client.connection_pool, "gate", None)
    if gate is not None:  # as sentinels.sentinel_client: no lookup reopens one after aclose
        for node in sentinel.sentinels:
            node_pool = node.connection_pool
            node_pool.connection_class = closable_async_connection_class(
                node_pool.connection_class, gate
            )
    return client, sentinel


async def adiscover(router: Router) -> tuple[str, int]:
    """:meth:`Router.discover` for an event loop (redis.asyncio's RedisCluster)."""
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    make: Callable[..., AsyncClusterNode] = AsyncClusterNode  # untyped in redis-py
    opts = {
        k: v
        for k, v in router.options.items()
        if k not in ("health_check_interval", "socket_keepalive")
    }
    last: Exception | None = None
    for seed in [*([make(h, p)] for h, p in router.candidates()), None]:
        try:
            rc = AsyncRedisCluster.from_url(router.url, startup_nodes=seed, **opts)
            await rc.initialize()
        except (rexc.RedisClusterException, rexc.ConnectionError, rexc.TimeoutError) as exc:
            last = exc
            continue
        try:
            node_of: Callable[[str], Any] = rc.get_node_from_key  # untyped in redis-py
            node = node_of(router.route_key)
            found = (str(node.host), int(node.port))
            nodes = [(str(n.host), int(n.port)) for n in rc.get_nodes()]
        finally:
            await rc.aclose()
        return router.pinned(found, nodes)
    raise router.failed(last)


def routed_async_connection_class(base: type[Any], router: Router) -> type[Any]:
    """:func:`routed_connection_class` for redis.asyncio's connection classes."""
    method = "connect_check_health" if hasattr(base, "connect_check_health") else "connect"

    async def routed_connect(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.is_connected:
            return
        connect = getattr(super(Routed, self), method)
        if router.cluster is None:
            await connect(*args, **kwargs)
            try:
                await self.send_command("INFO", "cluster")
                info = await self.read_response()
            except rexc.ResponseError:  # NOPERM: a user without INFO; say cluster = true
                info = b""
            text = info.decode() if isinstance(info, bytes) else str(info)
            router.cluster = "cluster_enabled:1" in text
            if not router.cluster:
                return
            await self.disconnect()
        if not router.cluster:
            await connect(*args, **kwargs)
            return
        if router.address is None:
            await adiscover(router)
        self._route_generation = router.generation
        assert router.address is not None
        self.host, self.port = router.address
        try:
            await connect(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError):
            await adiscover(router)
            self._route_generation = router.generation
            self.host, self.port = router.address
            await connect(*args, **kwargs)

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        if router.cluster and self._route_generation != router.generation:
            await self.disconnect()
        await super(Routed, self).send_packed_command(command, check_health)

    name = f"Routed{base.__name__}"
    Routed: type[Any] = type(
        name,
        (base,),
        {
            "_route_generation": -1,
            method: routed_connect,
            "send_packed_command": send_packed_command,
            "__qualname__": name,
        },
    )
    return Routed


async def awith_redirects(
    router: Router | None, send: Callable[[], Awaitable[_T]], on_moved: Callable[[], None]
) -> _T:
    """:func:`with_redirects` for coroutines."""
    if router is None or not router.cluster:
        return await send()
    deadline = time.monotonic() + CLUSTER_PATIENCE
    delay = 0.02
    while True:
        try:
            return await send()
        except rexc.ResponseError as exc:
            kind = redirect(exc)
            if kind is None:
                raise
            if time.monotonic() >= deadline:
                raise out_of_patience(router, exc) from exc
            if kind == "retry":
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            else:
                router.moved(*kind)
                on_moved()


class RoutedAsyncRedis(redis.asyncio.Redis):
    """:class:`RoutedRedis` for redis.asyncio."""

    router: Router | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        send: Callable[..., Awaitable[Any]] = super().execute_command  # untyped in redis-py
        return await awith_redirects(self.router, lambda: send(*args, **options), lambda: None)


def async_sentinel(target: Target, options: dict[str, Any]) -> Any:
    """redis.asyncio's Sentinel for ``target`` (checked like the sync one first:
    a service nobody monitors is an error at once)."""
    checked = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": options.get("socket_timeout")},
    )
    check_sentinel_service(checked, target)
    # in the order the check left them: the sentinel that answered first
    addresses = [
        (str(kw["host"]), int(kw["port"]))
        for kw in (node.connection_pool.connection_kwargs for node in checked.sentinels)
    ]
    return AsyncSentinel(
        addresses,
        sentinel_kwargs={
            "socket_timeout": options.get("socket_timeout"),
            "socket_connect_timeout": options.get("socket_connect_timeout"),
        },
    )


class ClosingPool(redis.asyncio.BlockingConnectionPool):
    """redis.asyncio's blocking pool, closed for good by :meth:`close_for_good`.

    Closing a redis.asyncio client disconnects the connections a command in flight
    holds, but redis-py's retry then reconnects that connection and resends the
    command, and the connection, released into the closed pool, stayed open for
    the life of the process. Once closed, this pool closes a connection as it is
    released and hands out none, and its connections do not open again (a retry
    after the close raises the closed client's error: ``closing.py``).
    """

    closed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gate = Gate(lambda: "?")  # its transport names the server (aio_transport)
        base = kwargs.get("connection_class", redis.asyncio.Connection)
        kwargs["connection_class"] = closable_async_connection_class(base, self.gate)
        super().__init__(*args, **kwargs)

    async def close_for_good(self) -> None:
        self.closed = True
        self.gate.closed = True  # before the cut: a retry's reconnect is refused
        await self.disconnect()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise rexc.ConnectionError("this connection pool is closed")
        get: Callable[..., Awaitable[Any]] = super().get_connection  # untyped in redis-py
        return await get(*args, **kwargs)

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        if self.closed:
            await connection.disconnect()


def release_transport(transport: Any) -> None:
    """Close an asyncio transport's socket now, also when its event loop has ended.

    ``transport.abort()`` alone needs a live loop (it schedules the closing, and
    on a closed loop raises ``Event loop is closed`` with the socket still open
    until garbage collection). So: abort (on a loop that is alive but not
    running this takes the socket out of its selector, and the loop finishes the
    closing when it runs again), then close the socket itself. On a closed loop,
    where that closing can never run, the transport lets go of the socket (no
    second close at garbage collection, no "unclosed transport" warning). TLS
    transports are closed through the socket transport under them.

    uvloop's transports hold no Python socket (libuv owns the descriptor, and
    closes it when the loop runs the closing, or at the loop's close): while the
    descriptor is still the transport's, ``/dev/null`` is put in its place
    (``dup2``), which closes the connection now and leaves libuv a descriptor of
    its own to close later (a plain ``close`` would free the number for another
    file that libuv's own close would then hit)."""
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) or transport
    loop = getattr(inner, "_loop", None)
    with contextlib.suppress(RuntimeError):  # a closed loop: its closing cannot be scheduled
        transport.abort()
    if not hasattr(inner, "_sock"):  # uvloop
        _release_descriptor(inner)
        return
    sock = inner._sock
    if sock is None:
        return
    sock.close()  # a socket object: a second close is a no-op, never another fd's
    if loop is None or loop.is_closed():
        inner._sock = None


def _release_descriptor(transport: Any) -> None:
    """:func:`release_transport` for a transport without a Python socket (uvloop)."""
    with contextlib.suppress(Exception):  # a transport already gone: nothing to close
        fd = transport.get_extra_info("socket").fileno()  # -1 once libuv closed it
        if fd >= 0:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                os.dup2(null, fd, inheritable=False)  # the socket's last reference: closed now
            finally:
                os.close(null)


def release_pool(pool: Any) -> None:
    """Close every connection of a redis.asyncio pool now, without its event loop
    (:func:`release_transport`); a :class:`ClosingPool` stays closed for good."""
    if isinstance(pool, ClosingPool):
        pool.closed = True
        pool.gate.closed = True
    for conn in [*pool._available_connections, *pool._in_use_connections]:
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            release_transport(writer.transport)
            conn._writer = conn._reader = None


def async_client_for(
    target: Target,
    route_key: str | None,
    *,
    options: dict[str, Any],
    retry: Any,
    pool: dict[str, Any],
) -> tuple[redis.asyncio.Redis, Router | None, Any, str | None]:
    """The async transport's general client for ``target`` (one server, pinned to a
    cluster's master of the prefix's slot, or a Sentinel group's master; ``pool``:
    the blocking pool's size and timeout), its router (cluster), and its Sentinel
    and service name (Sentinel)."""
    if target.kind == "sentinel":
        client, sentinel = async_sentinel_client(target, options, retry, pool)
        return client, None, sentinel, target.service
    parse: Callable[[str], Any] = redis.asyncio.connection.parse_url  # untyped in redis-py
    url_kwargs = url_fields(parse, target.url)
    base = url_kwargs.pop("connection_class", redis.asyncio.Connection)
    check_url_options(base, url_kwargs, target.url)
    if base is redis.asyncio.UnixDomainSocketConnection:
        options = {k: v for k, v in options.items() if k != "socket_keepalive"}  # TCP only
        plain = ClosingPool.from_url(target.url, retry=retry, **pool, **options)
        return redis.asyncio.Redis(connection_pool=plain), None, None, None
    router = Router(
        target.url, route_key or "{}", forced=target.cluster, options=options, seeds=target.seeds
    )
    routed_pool = ClosingPool(
        connection_class=routed_async_connection_class(base, router),
        retry=retry,
        **pool,
        **{**url_kwargs, **options},
    )
    routed = RoutedAsyncRedis(connection_pool=routed_pool)
    routed.router = router
    return routed, router, None, None


async def _pipelined(client: redis.asyncio.Redis, batch: Batch) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for name, args in batch:
            getattr(pipe, name)(*args)
        replies: list[Any] = await pipe.execute()
        return replies


async def drive_query(client: redis.asyncio.Redis, plan: QueryPlan[_T]) -> _T:
    """Run a query plan on redis.asyncio (see ``queries.drive``): one command
    alone, several pipelined (reads only, resent whole after a cluster redirect)."""
    try:
        batch = next(plan)
        while True:
            try:
                if len(batch) == 1:
                    name, args = batch[0]
                    replies = [await getattr(client, name)(*args)]
                else:  # reads only: resent whole after a cluster redirect
                    replies = await awith_redirects(
                        getattr(client, "router", None),
                        functools.partial(_pipelined, client, batch),
                        lambda: None,
                    )
            except rexc.ResponseError as exc:
                mapped = read_error(exc, batch)
                if mapped is None:
                    raise
                raise mapped from exc
            except (rexc.ConnectionError, rexc.TimeoutError):
                # Cut by aclose(): redis-py before 5.1 raises the cut itself (no
                # retry reaches the closed gate); the documented error is ours.
                gate = getattr(client.connection_pool, "gate", None)
                if isinstance(gate, Gate) and gate.closed:
                    raise cut_error(gate.describe()) from None
                raise
            batch = plan.send(replies)
    except StopIteration as stop:
        return cast(_T, stop.value)
