"""The asyncio connection layer of :class:`~redflow_mp.aio.AsyncClient`.

Owns every socket an async client opens, in three parts:

- ``redis.asyncio``'s client for general commands (queries, pipelines, INFO),
  with the same settings as the sync client's (``transport.client_options``);
- one **command connection** for the hot calls (enqueue, cancel, reading a
  run's end): a small asyncio protocol (``aio_resp.py``) that packs with ``hiredis.pack_command``
  and parses with ``hiredis.Reader``, shared by every task. Requests are
  pipelined on it: each gets a future, replies resolve them in order. redis.asyncio's
  per-command path (pool checkout, Python packing, a stream reader, timeout
  scopes) costs about 130 µs of CPU per command on loopback against about
  35 µs here, which is the difference between the async round trip meeting
  its latency target and missing it (docs/internals.md, "Keyspace and internals");
- one **pub/sub connection** for result waiting, read by the same protocol:
  channels are reference-counted (the first waiter of a run subscribes, the
  last one unsubscribes), each ``SUBSCRIBE`` is answered in order, and
  messages go to the channel's waiters.

Connections are opened lazily with the settings redis-py parsed from the URL
(host and port or unix path, TLS context, credentials, database, client name;
read from redis-py's public connection attributes), reconnected after a
failure, and give up on a reply that takes longer than
:data:`~redflow_mp.transport.SOCKET_TIMEOUT` (the connection is closed and every
request on it fails with ``redis.TimeoutError``). Error replies raise the
classes redis-py maps them to, with the same messages.

A transport is bound to the event loop that first uses it; used from another
loop, or after :meth:`AsyncTransport.aclose`, it raises :class:`RedflowError`.
Nothing here is thread-safe: one loop, one thread (an ``aclose()`` from another
thread's loop hands the closing to the transport's own: ``aio_elsewhere.py``).

Fork safety: an event loop does not survive a fork, and neither does a client
bound to one; a forked process creates its own (the supervisor never uses
this module). ``aclose()`` in a forked child raises and touches nothing while
the parent's loop was alive at the fork (``aio_elsewhere.check_not_forked``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis import exceptions as rexc
from redis.asyncio.retry import Retry as AsyncRetry

from .aio_connection import (
    ClosingPool,
    adiscover,
    async_client_for,
    awith_redirects,
    release_pool,
    release_transport,
)
from .aio_elsewhere import check_not_forked, close_on_owner
from .aio_resp import Channel, Resp, Subscriber, consume_exception, wait_for_future
from .connection import (
    DEFAULT_WAIT_MS,
    DURABLE_COMMANDS,
    NotReplicatedError,
    Router,
    check_durability,
    check_replicated,
    mask_url,
    parse_target,
    wait_command,
)
from .errors import RedflowError
from .replies import WaitedWrites, check_server_version, parse_server_version, version_refused
from .sentinels import SENTINEL_RECHECK
from .transport import RETRIES, SOCKET_TIMEOUT, client_options, closed_error, retry_backoff
from .urls import check_url

__all__ = ["MAX_CONNECTIONS", "AsyncTransport", "Channel", "consume_exception", "wait_for_future"]


#: Connections of the general (redis.asyncio) pool; more concurrent queries wait.
MAX_CONNECTIONS = 50
#: Seconds a query waits for a free connection of that pool before failing.
POOL_TIMEOUT = 20.0


def _nothing() -> None:
    pass


class AsyncTransport(WaitedWrites):
    """Owns an async client's connections; bound to one event loop."""

    def __init__(
        self,
        url: str | None = None,
        client: redis.asyncio.Redis | None = None,
        *,
        cluster: bool = False,
        sentinel_master: str | None = None,
        route_key: str | None = None,
        durability: str = "none",
        durability_wait_ms: int = DEFAULT_WAIT_MS,
    ) -> None:
        self.durability, self.wait_ms = check_durability(durability, durability_wait_ms)
        self._wait = wait_command(self.durability, self.wait_ms)
        self._master: Any = None
        self._recheck_at = 0.0
        self.url = check_url(url) if client is None else None
        self.router: Router | None = None
        self._sentinel: Any = None
        self._service: str | None = None
        # A blocking pool: a burst of concurrent queries waits for a free
        # connection instead of failing with "Too many connections".
        if client is not None:
            if not isinstance(client, redis.asyncio.Redis):
                raise TypeError("redis must be a redis.asyncio.Redis client")
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            kwargs["decode_responses"] = False
            new_pool = ClosingPool(
                connection_class=pool.connection_class,
                max_connections=MAX_CONNECTIONS,
                timeout=POOL_TIMEOUT,
                **kwargs,
            )
            self._redis = redis.asyncio.Redis(connection_pool=new_pool)
        else:
            own = async_client_for(
                parse_target(check_url(url), cluster=cluster, sentinel_master=sentinel_master),
                route_key,
                options=client_options(),
                retry=AsyncRetry(retry_backoff(), retries=RETRIES),
                pool={"max_connections": MAX_CONNECTIONS, "timeout": POOL_TIMEOUT},
            )
            self._redis, self.router, self._sentinel, self._service = own
        pool = self._redis.connection_pool
        if isinstance(pool, ClosingPool):
            pool.gate.describe = self.describe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()  # the process whose loop it is (set again with _loop)
        self._closed = False
        self._version: tuple[int, ...] | None = None
        self._cmd: Resp | None = None
        self._sub: Subscriber | None = None
        self._opening: dict[str, asyncio.Task[Resp]] = {}
        self._closing: asyncio.Task[None] | None = None  # aclose()'s, once started

    def sibling(self, route_key: str) -> AsyncTransport:
        """A transport to the same server or cluster routed by ``route_key`` (another
        shard's tag: ``aio_shards.py``), with the same durability; a cluster is
        named as such when this transport already knows it is one."""
        assert self.url is not None and self.router is not None
        return AsyncTransport(
            self.url,
            cluster=bool(self.router.cluster),
            route_key=route_key,
            durability=self.durability,
            durability_wait_ms=self.wait_ms,
        )

    def describe(self) -> str:
        """The server address for messages, with any password masked."""
        if self.router is not None:
            return self.router.describe()
        if self.url:
            return mask_url(self.url)
        kw = self._redis.connection_pool.connection_kwargs
        return str(kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def clustered(self) -> bool:
        """True once this transport is known to talk to a Redis Cluster (detected on
        its first connection, or ``cluster=True``): its scripts start with the slot
        probe (``luafiles.SLOT_PROBE``)."""
        return self.router is not None and self.router.cluster is True

    def enter(self) -> None:
        """Check the transport may be used here and now: not closed, same loop."""
        if self._closed:
            raise closed_error("async client", self.describe())
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                raise RedflowError(
                    f"this AsyncClient ({self.describe()}) belongs to the event loop that "
                    "first used it and was used from another one; create one client per "
                    "event loop (each asyncio.run() starts a new loop)"
                )
            self._loop = loop
            self._pid = os.getpid()

    @property
    def own_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this transport belongs to, None before its first use."""
        return self._loop

    @property
    def own_pid(self) -> int:
        """The process whose event loop :attr:`own_loop` is (a forked child has a
        copy of that loop, which nothing runs there)."""
        return self._pid

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this transport belongs to (after :meth:`enter`)."""
        assert self._loop is not None
        return self._loop

    @property
    def redis(self) -> redis.asyncio.Redis:
        """redis.asyncio's client (bytes replies), for general commands."""
        self.enter()
        return self._redis

    # --- connections -------------------------------------------------------

    async def _open(self, kind: str) -> Resp:
        """Open a connection (one at a time per kind: concurrent callers share it).

        The connecting runs in a task of its own, which stores the connection: a
        caller cancelled meanwhile (a dropped web request, a ``wait_for`` timeout)
        only stops waiting, instead of failing every caller that shares the
        connection with its ``CancelledError``.
        """
        opening = self._opening.get(kind)
        if opening is None:
            loop = asyncio.get_running_loop()
            opening = self._opening[kind] = loop.create_task(self._opened(kind, loop))
            opening.add_done_callback(consume_exception)
        await wait_for_future(opening, None)
        return opening.result()

    async def _opened(self, kind: str, loop: asyncio.AbstractEventLoop) -> Resp:
        """:meth:`_open`'s task: connect, then become the ``kind`` connection."""
        try:
            resp = await self._connect(loop)
            if self._closed:  # closed while connecting
                resp.close(closed_error("async client", self.describe()))
                raise closed_error("async client", self.describe())
            if kind == "cmd":
                self._cmd = resp
            else:
                self._sub = Subscriber(resp)
            return resp
        finally:
            del self._opening[kind]

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Resp:
        """A connection to where commands go now: the server, the master a Sentinel
        group names, or the cluster master serving the prefix's slot (detected with
        ``INFO cluster`` on the first connection unless ``cluster=True``)."""
        pool: Any = self._redis.connection_pool
        conn: Any = pool.make_connection()  # redis-py's parsed settings; never connected
        if self._sentinel is not None:
            host, port = await self._sentinel.discover_master(self._service)
            return await self._dial(loop, conn, host, port)
        router = self.router
        if router is None or router.cluster is False:  # a unix socket has no host: its path
            return await self._dial(loop, conn, getattr(conn, "host", ""), getattr(conn, "port", 0))
        if router.cluster is None:
            resp = await self._dial(loop, conn, conn.host, conn.port)
            try:
                info = await resp.request(("INFO", "cluster"))
            except rexc.ResponseError:  # NOPERM: a user without INFO; say cluster = true
                info = b""
            router.cluster = b"cluster_enabled:1" in info
            if not router.cluster:
                return resp
            resp.close(rexc.ConnectionError("re-pinned to the slot's master"))
        if router.address is None:
            await adiscover(router)
        generation = router.generation
        assert router.address is not None
        try:
            resp = await self._dial(loop, conn, *router.address)
        except (rexc.ConnectionError, rexc.TimeoutError):
            await adiscover(router)  # the pinned master is gone: where is the slot now?
            generation = router.generation
            resp = await self._dial(loop, conn, *router.address)
        resp.generation = generation
        return resp

    async def _dial(self, loop: asyncio.AbstractEventLoop, conn: Any, host: str, port: int) -> Resp:
        where = self.describe()
        timeout = conn.socket_connect_timeout or SOCKET_TIMEOUT
        path = getattr(conn, "path", None)
        try:
            async with asyncio.timeout(timeout):
                if path:
                    _, resp = await loop.create_unix_connection(lambda: Resp(loop, where), path)
                else:
                    ssl_context = getattr(conn, "ssl_context", None)
                    _, resp = await loop.create_connection(
                        lambda: Resp(loop, where),
                        host,
                        port,
                        ssl=ssl_context.get() if ssl_context is not None else None,
                    )
                await self._handshake(resp, conn)
        except TimeoutError:
            raise rexc.TimeoutError(f"Timeout connecting to {where}") from None
        except OSError as exc:
            raise rexc.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        return resp

    async def _handshake(self, resp: Resp, conn: Any) -> None:
        """AUTH, SELECT, CLIENT SETNAME as redis-py would send them, pipelined."""
        commands: list[tuple[Any, ...]] = []
        if conn.credential_provider is not None:
            commands.append(("AUTH", *conn.credential_provider.get_credentials()))
        elif conn.password:
            if conn.username:
                commands.append(("AUTH", conn.username, conn.password))
            else:
                commands.append(("AUTH", conn.password))
        if conn.db:
            commands.append(("SELECT", conn.db))
        if conn.client_name:
            commands.append(("CLIENT", "SETNAME", conn.client_name))
        replies = [resp.request(c) for c in commands]
        try:
            for fut in replies:
                await fut
        except BaseException:  # also cancelled (a loop's end cancels the opening task)
            resp.close(rexc.ConnectionError(f"handshake with {self.describe()} failed"))
            raise

    async def _command(self) -> Resp:
        resp = self._cmd
        if resp is None or resp.lost is not None:
            resp = self._cmd = await self._open("cmd")
        return resp

    # --- hot calls -----------------------------------------------------------

    async def call(self, *args: Any, retry: bool = True) -> Any:
        """Send one command on the command connection and return the raw reply.

        Network errors reconnect and, when ``retry`` is true (the command is
        idempotent), resend once before raising.
        """
        self.enter()
        router = self.router
        if router is not None and router.cluster:
            return await awith_redirects(router, lambda: self._send(args, retry), _nothing)
        if self._sentinel is not None:
            await self._recheck_master()
        return await self._send(args, retry)

    async def _recheck_master(self) -> None:
        """Sentinel: at most once a second, ask which server is the master; when it
        changed, close the command and pub/sub connections (they reopen there)."""
        now = time.monotonic()
        if now < self._recheck_at:
            return
        self._recheck_at = now + SENTINEL_RECHECK
        try:
            master = await self._sentinel.discover_master(self._service)
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.ResponseError):
            return
        if self._master is not None and master != self._master:
            moved = rexc.ConnectionError("the Sentinel master changed")
            for resp in (self._cmd, self._sub.resp if self._sub is not None else None):
                if resp is not None and resp.lost is None:
                    resp.close(moved)
        self._master = master

    async def _request(self, resp: Resp, args: tuple[Any, ...]) -> Any:
        """One command; a durable write has WAIT / WAITAOF pipelined behind it."""
        if self._wait is None or args[0] not in DURABLE_COMMANDS:
            return await resp.request(args)
        fut = resp.request(args)
        # its reply may take the wait's own timeout on top of SOCKET_TIMEOUT
        acked = resp.request(self._wait, self.wait_ms / 1000)
        acked.add_done_callback(consume_exception)
        reply = await fut
        check_replicated(await acked, self.durability, self.wait_ms, self.describe())
        return reply

    async def _send(self, args: tuple[Any, ...], retry: bool) -> Any:
        resp = self._cmd
        if resp is None or resp.lost is not None or self._stale(resp):
            if resp is not None and resp.lost is None:
                resp.close(rexc.ConnectionError("re-pinned to the slot's master"))
            resp = await self._command()
        try:
            if self._wait is not None and args[0] in DURABLE_COMMANDS:
                return await self._request(resp, args)
            fut = resp.request(args)
            if resp.paused:
                await resp.drained()
            return await fut
        except rexc.ReadOnlyError:
            if self._sentinel is None:
                raise
            # a master demoted by a failover: nothing was run; reconnect to the new one
            resp.close(rexc.ConnectionError("the master was demoted"))
        except NotReplicatedError:
            raise  # answered, in step: a resend would only wait for the same replica
        except (rexc.ConnectionError, rexc.TimeoutError):
            if not retry:
                raise
        resp = await self._command()
        return await self._request(resp, args)

    async def call_waited(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Durable writes in one round trip (a batch of script calls): ``commands``
        then :attr:`wait_args`, pipelined on the command connection; their replies
        in order, an error reply as its exception (not raised). Never resent: the
        WAIT's reply may take ``durability_wait_ms`` plus the socket timeout, and
        :class:`NotReplicatedError` (every reply read, the writes applied on the
        master) or a network error is raised to the caller."""
        assert self._wait is not None
        self.enter()
        if self._sentinel is not None:
            await self._recheck_master()
        resp = self._cmd
        if resp is None or resp.lost is not None or self._stale(resp):
            if resp is not None and resp.lost is None:
                resp.close(rexc.ConnectionError("re-pinned to the slot's master"))
            resp = await self._command()
        futs = [resp.request(c) for c in commands]
        acked = resp.request(self._wait, self.wait_ms / 1000)
        for fut in (*futs, acked):
            fut.add_done_callback(consume_exception)
        if resp.paused:
            await resp.drained()
        replies: list[Any] = []
        for fut in futs:
            try:
                replies.append(await fut)
            except rexc.ResponseError as exc:  # MOVED, NOSCRIPT...: the caller decides
                replies.append(exc)
        self.check_waited(await acked)
        return replies

    def _stale(self, resp: Resp) -> bool:
        """A cluster connection opened before the router last re-pinned."""
        router = self.router
        return router is not None and bool(router.cluster) and resp.generation != router.generation

    async def server_version(self) -> tuple[int, ...]:
        if self._version is None:
            try:
                info = await self.redis.info("server")
            except rexc.ResponseError as exc:
                raise version_refused(exc, self.describe()) from exc
            version = parse_server_version(info)
            self._version = check_server_version(version, self.describe())
        return self._version

    # --- pub/sub -------------------------------------------------------------

    async def subscribe(self, name: bytes) -> Channel:
        """A subscription to ``name`` (shared with the other waiters of the channel);
        :meth:`unsubscribe` it when done. Wait for ``channel.ready`` before relying
        on it."""
        self.enter()
        sub = self._sub
        if sub is not None and sub.resp.lost is None and self._stale(sub.resp):
            sub.resp.close(rexc.ConnectionError("re-pinned to the slot's master"))
        if sub is None or sub.resp.lost is not None:
            # Concurrent first subscribers share the one connection opened, and
            # the one wrapper the opening made (a second would take its messages).
            resp = await self._open("sub")
            sub = self._sub
            if sub is None or sub.resp is not resp:  # lost and replaced meanwhile
                raise rexc.ConnectionError("the pub/sub connection was replaced")
        channel = sub.channels.get(name)
        if channel is not None:
            channel.refs += 1
            return channel
        assert self._loop is not None
        channel = Channel(name, sub.resp, self._loop)
        sub.channels[name] = channel
        sub.resp.send(("SUBSCRIBE", name), channel.ready)
        return channel

    def unsubscribe(self, channel: Channel) -> None:
        """Drop one reference; the last one unsubscribes (no wait for the reply)."""
        channel.refs -= 1
        if channel.refs > 0:
            return
        sub = self._sub
        if sub is None or sub.channels.get(channel.name) is not channel:
            return  # its connection is gone, and the subscription with it
        del sub.channels[channel.name]
        if sub.resp.lost is None and not self._closed:
            sub.resp.send(("UNSUBSCRIBE", channel.name), None)

    # --- closing -------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection (safe to call more than once); pending calls and
        waiters fail (a query in flight on the redis.asyncio pool too: its cut
        connection does not open again), and any later use raises
        :class:`RedflowError`.

        The closing of the redis.asyncio pool and the Sentinels' connections runs
        in a task of its own: a caller cancelled meanwhile (an ``asyncio.wait_for``
        around it, a shutdown cancelling the closing task) only stops waiting, and
        a later ``aclose()`` waits for that closing to end.

        From another loop than the transport's own (a second ``asyncio.run()``
        after the first has ended), while the own one is not running, every
        socket is closed at once without it (:meth:`release_now`); while the own
        loop runs (in another thread) the closing is handed to it and waited for
        (``aio_elsewhere.close_on_owner``)."""
        check_not_forked(self._loop, self._pid, self.describe())  # touches nothing
        closing = self._closing
        owner = closing.get_loop() if closing is not None else self._loop
        if owner is not None and owner is not asyncio.get_running_loop():
            if closing is not None and closing.done():
                return  # closed before: nothing to wait for
            if owner.is_running():
                await close_on_owner(
                    owner, self.aclose, self.release_now, self.describe(), self._pid
                )
                return
            self.release_now()
            return
        if closing is None:
            if self._closed:
                return
            closing = self.begin_close()
            assert closing is not None
        elif closing.done():  # closed before: nothing to wait for
            return
        await wait_for_future(closing, None)
        closing.result()

    def begin_close(self) -> asyncio.Task[None] | None:
        """:meth:`aclose` without the wait: close the connections now, and start
        the task that closes the pools (the one already started, if any). From
        another loop while the own one is not running: :meth:`release_now`, and
        no task (None)."""
        if self._closing is not None:
            return self._closing
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            if self._loop.is_running():
                self.enter()  # raises the other-loop error
            self.release_now()
            return None
        self._closed = True
        error = closed_error("async client", self.describe())
        for resp in (self._cmd, self._sub.resp if self._sub is not None else None):
            if resp is not None:
                resp.close(error)
        self._cmd = self._sub = None
        closing = self._closing = asyncio.get_running_loop().create_task(self._close_pools())
        closing.add_done_callback(consume_exception)
        return closing

    def release_now(self) -> None:
        """Close every socket of this transport at once, without its event loop
        (ended, or not running): the command and pub/sub connections, the
        redis.asyncio pool's connections and the Sentinels' (each socket closed
        directly: ``aio_connection.release_transport``). Safe to repeat."""
        self._closed = True
        error = closed_error("async client", self.describe())
        for resp in (self._cmd, self._sub.resp if self._sub is not None else None):
            if resp is not None:
                resp.release(error, release_transport)
        self._cmd = self._sub = None
        release_pool(self._redis.connection_pool)
        if self._sentinel is not None:  # those that asked where the master is
            for node in self._sentinel.sentinels:
                release_pool(node.connection_pool)

    async def _close_pools(self) -> None:
        """:meth:`aclose`'s task: the redis.asyncio pool and the Sentinels' connections."""
        # The pool is ours (built in __init__), so it goes too, for good: a query
        # in flight does not reopen a connection that outlives the client.
        pool = self._redis.connection_pool
        if isinstance(pool, ClosingPool):
            await pool.close_for_good()
        await self._redis.aclose(close_connection_pool=True)
        if self._sentinel is not None:  # those that asked where the master is
            for node in self._sentinel.sentinels:
                with contextlib.suppress(Exception):  # best effort on a broken socket
                    await node.connection_pool.disconnect()
