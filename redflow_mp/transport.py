"""The Redis connection layer: one redis-py client plus a lean per-thread hot path.

Owns every socket the library opens. General commands go through a
``redis.Redis`` client (connection pool, TLS, ACL auth, RESP parsing by
hiredis). The hot paths (enqueue, claim/finish, step writes) go through
:meth:`Transport.call`, which keeps one dedicated ``redis.Connection`` per
thread and uses its public request/reply methods: redis-py's
per-command machinery around them (command-name parsing, response
callbacks, pool checkout, retry wrappers) costs about as much client CPU as
the round trip itself on loopback, and a worker makes one call per run.
One call reads redis-py's private attributes: :meth:`Transport.call_packed`
off a cluster and Sentinel, through ``directwire.py`` where that is equivalent
(docs/internals.md, "Keyspace and internals").

Replies are bytes (never decoded by redis-py); callers decode what they need.
The parts this layer uses live beside it: a thread's connection in
``wire.py``, the URL checks in ``urls.py``, what a reply means (the server's
version, refusals) in ``replies.py``; this module re-exports their names.

Fork safety: connections remember the pid that opened them. After a fork the
child never touches an inherited socket (it would interleave with the parent's
traffic); it opens its own on first use. redis-py's pool does the same for the
general client.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis import exceptions as rexc
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ResponseError
from redis.retry import Retry

from . import procid
from .closing import Gate, closable_connection_class, closed_error
from .connection import (
    DEFAULT_WAIT_MS,
    DURABLE_COMMANDS,
    NotReplicatedError,
    RoutedRedis,
    Router,
    Target,
    check_durability,
    check_url_options,
    mask_url,
    parse_target,
    routed_connection_class,
    url_fields,
    wait_command,
    with_redirects,
)
from .directwire import request, usable
from .errors import NETWORK_ERRORS as _NETWORK_ERRORS
from .replies import (
    WaitedWrites,
    check_server_version,
    is_busy,
    is_noscript,
    is_oom,
    is_read_only,
    parse_server_version,
    refused,
    version_refused,
)
from .sentinels import SENTINEL_RECHECK, close_sentinels, sentinel_client
from .urls import check_url, default_url
from .wire import Wire

_Wire = Wire  # the name tests patch (``transport._Wire.request``)

# Re-exported: the reply classifiers (``replies.py``), the URL checks
# (``urls.py``) and the wire (``wire.py``) were parts of this module, and the
# library, the supervisor and the tests import them from here.
__all__ = [
    "RETRIES",
    "SOCKET_TIMEOUT",
    "Transport",
    "Wire",
    "check_server_version",
    "check_url",
    "client_options",
    "closed_error",
    "default_url",
    "is_busy",
    "is_noscript",
    "is_oom",
    "is_read_only",
    "mask_url",
    "parse_server_version",
    "refused",
    "retry_backoff",
    "version_refused",
]


#: Seconds a reply may take before its connection is given up (both transports).
#: Bounded reads: a connection silently dropped by the network fails after this
#: long instead of hanging a worker, the arbiter or an awaiting task. Longer than
#: any blocking wait we issue (BLPOP uses at most a few seconds).
SOCKET_TIMEOUT = 5.0


#: How redis-py retries a command after a connection error (3 times, backing off).
RETRIES = 3


def retry_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=2.0, base=0.05)


def client_options(*, unix: bool = False) -> dict[str, Any]:
    """The connection settings of the library's own redis-py clients, sync and asyncio
    (each adds its own ``retry`` with :func:`retry_backoff`). ``unix``: for a unix
    socket, without TCP keepalive (redis-py's unix connection classes take no
    ``socket_keepalive``: every call failed with ``TypeError``)."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "health_check_interval": 0,
        "socket_keepalive": True,
        "socket_connect_timeout": 5.0,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if unix:
        del options["socket_keepalive"]
    return options


#: The sync transport's pools are not capped: redis-py >= 6 caps a ConnectionPool
#: at 100 connections by default (it was 2**31), and the transport opens one
#: connection per thread that calls it (counted by the pool for ever, even after
#: the thread ended and the connection was closed) and two (pub/sub, reads) per
#: thread waiting for a result. With the cap, the 100th thread of a process (a
#: thread-per-request server reaches it in minutes) got MaxConnectionsError on
#: every call, and a hundred threads awaiting results at once timed out.
SYNC_MAX_CONNECTIONS = 2**31


def _own_client(
    url: str | None,
    client: redis.Redis | None,
    target: Target | None,
    route_key: str | None,
    gate: Gate,
) -> tuple[redis.Redis, Router | None]:
    """A bytes-returning client: from ``url`` (pinned to a cluster's node serving
    ``route_key``, or through Sentinel), or cloned from a caller's client settings.
    Its connections do not open once ``gate`` is closed (``closing.py``)."""
    if client is not None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["decode_responses"] = False
        new_pool = redis.ConnectionPool(
            connection_class=closable_connection_class(pool.connection_class, gate),
            max_connections=SYNC_MAX_CONNECTIONS,
            **kwargs,
        )
        return redis.Redis(connection_pool=new_pool), None
    retry = Retry(retry_backoff(), retries=RETRIES)
    if target is None:
        target = parse_target(check_url(url))
    if target.kind == "sentinel":
        options = {**client_options(), "max_connections": SYNC_MAX_CONNECTIONS}
        return sentinel_client(target, options, retry, gate), None
    parse: Callable[[str], dict[str, Any]] = parse_url  # untyped in redis-py
    url_kwargs = url_fields(parse, target.url)
    base = url_kwargs.pop("connection_class", redis.Connection)
    check_url_options(base, url_kwargs, target.url)
    if base is redis.UnixDomainSocketConnection:
        return redis.Redis.from_url(
            target.url,
            retry=retry,
            max_connections=SYNC_MAX_CONNECTIONS,
            connection_class=closable_connection_class(base, gate),
            **client_options(unix=True),
        ), None
    router = Router(
        target.url,
        route_key or "{}",
        forced=target.cluster,
        options=client_options(),
        seeds=target.seeds,
    )
    pool = redis.ConnectionPool(
        connection_class=closable_connection_class(routed_connection_class(base, router), gate),
        retry=retry,
        **{"max_connections": SYNC_MAX_CONNECTIONS, **url_kwargs, **client_options()},
    )
    routed = RoutedRedis(connection_pool=pool)
    routed.router = router
    return routed, router


class _Local(threading.local):
    # This thread's wire, the pid that opened it and the transport's generation
    # then, as one attribute: a thread-local's attribute read finds the thread's
    # dictionary first (about 570 CPU instructions a read), and the hot path
    # (call_packed, _wire) needs all three.
    state: tuple[Wire | None, int, int] = (None, -1, 0)


class Transport(WaitedWrites):
    """Owns the Redis client and the per-thread hot-path connections."""

    def __init__(
        self,
        url: str | None = None,
        client: redis.Redis | None = None,
        *,
        cluster: bool = False,
        sentinel_master: str | None = None,
        route_key: str | None = None,
        durability: str = "none",
        durability_wait_ms: int = DEFAULT_WAIT_MS,
    ) -> None:
        self.durability, self.wait_ms = check_durability(durability, durability_wait_ms)
        self._wait = wait_command(self.durability, self.wait_ms)
        self.url = check_url(url) if client is None else None
        self.target = (
            None
            if self.url is None
            else parse_target(self.url, cluster=cluster, sentinel_master=sentinel_master)
        )
        self._gate = Gate(self.describe)
        self._redis, self.router = _own_client(url, client, self.target, route_key, self._gate)
        self._closed = False
        self._local = _Local()
        self._held: weakref.WeakSet[Any] = weakref.WeakSet()
        self._held_lock = threading.Lock()
        self._version: tuple[int, ...] | None = None
        self._held_pid = os.getpid()
        # Sentinel: the master as last asked, when to ask again, and a generation
        # that grows when it changed (this thread's wire then reconnects).
        self._sentinel = self.target is not None and self.target.kind == "sentinel"
        self._master: Any = None
        self._recheck_at = 0.0
        self._generation = 0
        #: Seconds the reply of a durable write's WAIT / WAITAOF may take: the wait
        #: itself plus the socket timeout every other reply has.
        self.wait_patience = self.wait_ms / 1000 + SOCKET_TIMEOUT
        #: No durability wait: a command is one request and one reply (routed as
        #: :meth:`call` routes it), so :meth:`call_packed` may be used.
        self.plain = self._wait is None

    def sibling(self, route_key: str) -> Transport:
        """A transport to the same cluster pinned to the master serving ``route_key``'s
        slot (another shard's tag: ``shardset.py``), with the same durability."""
        assert self.url is not None
        return Transport(
            self.url,
            cluster=True,
            route_key=route_key,
            durability=self.durability,
            durability_wait_ms=self.wait_ms,
        )

    @property
    def redis(self) -> redis.Redis:
        """The redis-py client (bytes replies); a closed transport refuses it."""
        if self._closed:
            raise closed_error("client", self.describe())
        return self._redis

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def clustered(self) -> bool:
        """True once this transport is known to talk to a Redis Cluster (detected on
        its first connection, or ``cluster=True``): its scripts start with the slot
        probe (``luafiles.SLOT_PROBE``)."""
        return self.router is not None and self.router.cluster is True

    def describe(self) -> str:
        """The server address for messages, with any password masked."""
        if self.router is not None:
            return self.router.describe()
        if self.url:
            return mask_url(self.url)
        kw = self._redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _wire(self) -> Wire:
        local = self._local
        pid = procid.pid  # no system call (updated in a forked child)
        wire, opened_in, generation = local.state
        if wire is None or opened_in != pid or generation != self._generation:
            if wire is not None and opened_in == pid:
                wire.close()  # opened before the master changed
            # Every thread's first call after close() comes here (close() drops
            # the thread-local wires), so the hot path itself checks nothing.
            if self._closed:
                raise closed_error("client", self.describe())
            # Not taken from the pool's in-use set: when the thread ends, its
            # local goes away and the connection is closed by garbage collection,
            # so a thread-per-request caller does not leak one connection each.
            wire = Wire(self._redis.connection_pool.make_connection())
            local.state = (wire, pid, self._generation)
            with self._held_lock:
                if pid != self._held_pid:
                    self._held = weakref.WeakSet()
                    self._held_pid = pid
                self._held.add(wire.conn)
        return wire

    def ahead(self) -> Wire | None:
        """This thread's connection for sending commands ahead of their replies
        (``send``, then ``read`` each reply in order), or None where every command
        must go through :meth:`call` (cluster routing, sentinel rechecks, WAIT).
        The caller reads every reply it sent for, or closes the wire."""
        if (self.router is not None and self.router.cluster) or self._sentinel:
            return None
        if self._wait is not None:
            return None
        return self._wire()

    def call(self, *args: Any, retry: bool = True, fresh: bool = True) -> Any:
        """Send one command on this thread's connection and return the raw reply.

        Network errors reconnect and, when ``retry`` is true (the caller's command
        is idempotent), resend once before raising. A command sent once (``retry``
        false) first drops a connection its server closed (``Wire.freshen``, a
        ``poll``), unless ``fresh`` is false: a caller that recovers a lost reply
        itself (a worker's claim: ``LostClaim`` resends it with its token).
        """
        if self.router is not None and self.router.cluster:
            send = self._send
            return with_redirects(self.router, lambda: send(args, retry, fresh), lambda: None)
        if self._sentinel:
            self._recheck_master()
        return self._send(args, retry, fresh)

    def call_packed(self, packed: bytes, *, retry: bool = True, fresh: bool = True) -> Any:
        """:meth:`call` of a command packed already (``packed.py``); only where
        :attr:`plain` (no WAIT to add)."""
        if self.router is not None and self.router.cluster:
            send = self._send_packed
            return with_redirects(self.router, lambda: send(packed, retry, fresh), lambda: None)
        if self._sentinel:
            self._recheck_master()
            return self._send_packed(packed, retry, fresh)
        # Off a cluster and Sentinel: sent and read by directwire.py where that is
        # equivalent (9,400 CPU instructions fewer a worker's run), else as _send_packed.
        # This thread's wire as _wire() finds it, without its frame in the usual case.
        wire, opened_in, generation = self._local.state
        if wire is None or opened_in != procid.pid or generation != self._generation:
            wire = self._wire()
        conn = wire.conn
        parser = usable(conn)
        try:
            if parser is not None:
                return request(conn, parser, packed)
            conn.send_packed_command([packed], check_health=False)
            return conn.read_response()
        except _NETWORK_ERRORS:
            if not retry:
                raise
        return self._wire().request_packed(packed)

    def _send_packed(self, packed: bytes, retry: bool, fresh: bool = True) -> Any:
        wire = self._wire()
        if not retry and fresh:
            wire.freshen()  # sent once: not into a connection its server closed
        try:
            return wire.request_packed(packed)
        except _NETWORK_ERRORS:
            if not retry:
                raise
        return self._wire().request_packed(packed)

    def _send(self, args: tuple[Any, ...], retry: bool, fresh: bool = True) -> Any:
        wire = self._wire()
        if not retry and fresh:
            wire.freshen()  # sent once: not into a connection its server closed
        if self._wait is not None and args[0] in DURABLE_COMMANDS:
            try:
                return self._waited(wire, args)
            except NotReplicatedError:
                # both replies were read (the connection is in step): a resend would
                # only wait durability_wait_ms again for the same replica
                raise
            except _NETWORK_ERRORS:
                if not retry:
                    raise
            return self._waited(wire, args)
        try:
            return wire.request(args)
        except _NETWORK_ERRORS:
            if not retry:
                raise
        return wire.request(args)

    def _waited(self, wire: Wire, args: tuple[Any, ...]) -> Any:
        assert self._wait is not None
        (reply,), acked = wire.request_waited((args,), self._wait, self.wait_patience)
        if isinstance(reply, ResponseError):
            raise reply  # the first error is the one that counts (MOVED, NOSCRIPT...)
        self.check_waited(acked)
        return reply

    def call_waited(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Durable writes in one round trip (a batch of script calls): ``commands``
        then :attr:`wait_args`, pipelined on this thread's connection; their replies
        in order, an error reply as its exception (not raised). Never resent: the
        WAIT's reply may take ``durability_wait_ms`` plus the socket timeout, and
        :class:`NotReplicatedError` (every reply read, the writes applied on the
        master) or a network error is raised to the caller."""
        assert self._wait is not None
        if self._sentinel:
            self._recheck_master()
        replies, acked = self._wire().request_waited(commands, self._wait, self.wait_patience)
        self.check_waited(acked)
        return replies

    def _recheck_master(self) -> None:
        """Sentinel: at most once a second, ask which server is the master; when it
        changed, every connection of this process moves there (redis-py's pool drops
        its idle ones; the wires reconnect at their next command)."""
        if self._closed:  # the sentinels' connections are closed: not reopened here
            raise closed_error("client", self.describe())
        now = time.monotonic()
        if now < self._recheck_at:
            return
        self._recheck_at = now + SENTINEL_RECHECK
        pool: Any = self._redis.connection_pool
        try:
            master = pool.get_master_address()
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.ResponseError):
            return  # no sentinel answers now: the command itself will tell
        if self._master is not None and master != self._master:
            self._generation += 1
        self._master = master

    def server_version(self) -> tuple[int, ...]:
        """The server's version, asked once (``INFO server``) on this thread's hot-path
        connection: the one the scripts use next, so that a process whose first
        command is a script call (a supervisor child's claim) opens one connection."""
        if self._version is None:
            try:
                info = self.call("INFO", "server")
            except ResponseError as exc:
                raise version_refused(exc, self.describe()) from exc
            version = parse_server_version(info)
            self._version = check_server_version(version, self.describe())
        return self._version

    def close(self) -> None:
        """Close this process's connections (safe to call more than once); any later
        use raises :class:`RedflowError`, and so does a call in flight in another
        thread: its connection, cut here, does not open again (``closing.py``)."""
        self._closed = True
        self._gate.closed = True  # before any cut: a retry's reconnect is refused
        pid = os.getpid()
        with self._held_lock:
            held, self._held = list(self._held), weakref.WeakSet()
            owned = self._held_pid == pid
        if owned:
            for conn in held:
                with contextlib.suppress(Exception):  # best effort on a broken socket
                    conn.disconnect()
        self._local = _Local()
        self._redis.close()
        pool: Any = self._redis.connection_pool
        pool.disconnect()
        if self._sentinel:
            close_sentinels(pool.sentinel_manager)
