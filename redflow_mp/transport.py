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

import hiredis  # packs commands in C (redis[hiredis]); redis-py parses with it too
import redis
from redis import exceptions as rexc
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
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
    check_replicated,
    check_url_options,
    mask_url,
    misplaced_userinfo,
    parse_target,
    routed_connection_class,
    url_fields,
    wait_command,
    with_redirects,
)
from .directwire import request, usable
from .errors import NETWORK_ERRORS as _NETWORK_ERRORS
from .errors import RedflowError, RedisBusyError, RedisOutOfMemoryError, RedisReadOnlyError
from .options import is_text
from .sentinels import SENTINEL_RECHECK, close_sentinels, sentinel_client

__all__ = [
    "RETRIES",
    "SOCKET_TIMEOUT",
    "Transport",
    "Wire",
    "check_server_version",
    "check_url",
    "client_options",
    "closed_error",
    "mask_url",
    "parse_server_version",
    "retry_backoff",
]


class _Wire:
    """One connection used for request/reply only, on this thread's hot path.

    redis-py opens it (TLS, AUTH/ACL, HELLO, SELECT all stay redis-py's) and
    reads each reply (``read_response``: error replies raise the classes
    redis-py maps them to, e.g. LOADING a ``BusyLoadingError``, OOM an
    ``OutOfMemoryError``); hiredis packs the command, which redis-py's own
    packer does at several times the cost. redis-py closes the connection on
    any failure between sending and reading the whole reply (network error,
    timeout, a signal handler raising), so a late reply is never taken as the
    answer to the next command: the next call reconnects.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        # Any: the pool's connection class (TCP, TLS or unix socket); its
        # declared type differs between redis-py 5 and 8.
        self.conn = conn

    def request(self, args: tuple[Any, ...]) -> Any:
        conn = self.conn
        # A list: send_packed_command sends each item of an already packed command.
        conn.send_packed_command([hiredis.pack_command(args)], check_health=False)
        return conn.read_response()

    def request_packed(self, packed: bytes) -> Any:
        """:meth:`request` of a command packed already (``packed.py``)."""
        conn = self.conn
        conn.send_packed_command([packed], check_health=False)
        return conn.read_response()

    def send(self, args: tuple[Any, ...]) -> None:
        """Send ``args`` without reading its reply (see :meth:`Transport.ahead`)."""
        self.conn.send_packed_command([hiredis.pack_command(args)], check_health=False)

    def read(self) -> Any:
        """The reply of the oldest command sent and not read yet."""
        return self.conn.read_response()

    def request_waited(
        self, commands: Sequence[tuple[Any, ...]], wait: tuple[Any, ...], patience: float
    ) -> tuple[list[Any], Any]:
        """``commands`` and ``wait`` (WAIT / WAITAOF) pipelined: one round trip. Every
        reply is read (an error reply kept as its ``ResponseError``, not raised: the
        connection stays in step); the reply of ``wait`` may take ``patience`` seconds
        (its timeout plus :data:`SOCKET_TIMEOUT`): the socket's own timeout would cut
        a wait longer than itself (redis-py's ``TimeoutError`` instead of the wait's
        answer). Returns (the replies of ``commands``, that of ``wait``)."""
        conn = self.conn
        packed = [hiredis.pack_command(c) for c in commands]
        conn.send_packed_command([*packed, hiredis.pack_command(wait)], check_health=False)
        replies: list[Any] = []
        try:
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # MOVED, NOSCRIPT...: the caller decides
                    replies.append(exc)
            try:
                acked = self.read_waited(patience)
            except ResponseError as exc:  # WAIT on a node that is not the master
                acked = exc
        except BaseException:
            conn.disconnect()  # replies left unread must never answer a later command
            raise
        return replies, acked

    def read_waited(self, patience: float) -> Any:
        """The next reply, a WAIT's: allowed ``patience`` seconds to start arriving
        (``can_read``: public in redis-py 5.0 to 8), then read as any reply."""
        conn = self.conn
        try:
            ready = conn.can_read(timeout=patience)
        except BaseException:  # a signal handler raising: the reply is still due
            conn.disconnect()
            raise
        if not ready:
            conn.disconnect()  # out of step: the late reply must not answer the next call
            raise rexc.TimeoutError(f"Timeout reading from {self.where()} ({patience:g} s)")
        return conn.read_response()

    def where(self) -> str:
        conn = self.conn
        return str(getattr(conn, "path", "") or f"{conn.host}:{conn.port}")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on a broken socket
            self.conn.disconnect()

    def __del__(self) -> None:
        # The wire goes when its thread's locals go. redis-py connections sit in
        # reference cycles, so without this their sockets would wait for a GC pass
        # (and could be finalized first: "unclosed socket"). In a forked child,
        # disconnect() only closes the inherited descriptor (no shutdown).
        self.close()


Wire = _Wire
"""A thread's request/reply connection (see :meth:`Transport.ahead`)."""


def default_url() -> str:
    """The URL a client given none connects to: ``$REDFLOW_URL``, then ``$REDIS_URL``,
    else ``redis://localhost:6379/0`` (the order the CLI and the supervisor use)."""
    return (
        os.environ.get("REDFLOW_URL") or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    )


def check_url(url: object) -> str:
    """``url`` (default :func:`default_url`) if its scheme is one we connect to."""
    if url is None:
        url = default_url()
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be a non-empty redis:// or rediss:// URL")
    if "://" not in url:  # not echoed: it may be the password itself, or hold it
        raise ValueError(
            f"the Redis URL {mask_url(url)} has no scheme: write redis://[:PASSWORD@]HOST:PORT/DB "
            "(or rediss://, unix://, redis+sentinel://, rediss+sentinel://)"
        )
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    if not is_text(url):  # a password of non-UTF-8 bytes: a traceback at AUTH
        raise ValueError(
            f"the Redis URL {mask_url(url)} is not valid Unicode text (bytes that were not "
            "UTF-8); percent-encode such bytes in a password"
        )
    if misplaced_userinfo(url) is not None:  # redis-py's error would quote the password
        raise ValueError(_userinfo_problem(url))
    return url


def _userinfo_problem(url: str) -> str:
    """Why ``url``, whose user info a URL parser cannot see, is refused; the URL is
    shown with everything before its last ``@`` hidden."""
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    userinfo, shown = rest[:at], f"{scheme}://***@{rest[at + 1 :]}"
    if any(c in userinfo for c in "/?#"):
        return (
            f"the password in the Redis URL {mask_url(url)} holds '/', '?' or '#': "
            "percent-encode them (%2F, %3F, %23)"
        )
    if "[" in userinfo or "]" in userinfo:
        return (
            f"the password in the Redis URL {shown} holds '[' or ']': percent-encode "
            "them (%5B, %5D)"
        )
    return (
        f"the Redis URL {shown} does not parse: its host is not a valid IPv6 address "
        "in brackets (redis://[::1]:6379/0) or holds a stray '[' or ']'"
    )


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


def parse_server_version(info: Any) -> tuple[int, ...]:
    """The server version from ``INFO server`` (redis-py's dict, or the raw text)."""
    if isinstance(info, dict):
        raw = str(info.get("redis_version", "0.0.0"))
    else:
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        raw = "0.0.0"
        for line in text.splitlines():
            if line.startswith("redis_version:"):
                raw = line.partition(":")[2].strip()
                break
    parts = []
    for piece in raw.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_server_version(version: tuple[int, ...], where: str) -> tuple[int, ...]:
    if version < (6, 2):
        shown = ".".join(str(p) for p in version)
        raise RedflowError(f"Redis {shown} at {where} is too old: redflow-mp needs >= 6.2")
    return version


class _Local(threading.local):
    pid: int = -1
    wire: _Wire | None = None
    generation: int = 0


class Transport:
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
    def wait_args(self) -> tuple[Any, ...] | None:
        """The WAIT / WAITAOF that must end a pipeline of run-state writes sent on
        another connection than :meth:`call`'s (None for ``durability = "none"``)."""
        return self._wait

    def check_waited(self, reply: Any) -> None:
        """Raise :class:`~redflow_mp.NotReplicatedError` unless ``reply`` (that of
        :attr:`wait_args` at the end of a pipeline) confirms its writes."""
        if isinstance(reply, Exception):
            raise reply
        check_replicated(reply, self.durability, self.wait_ms, self.describe())

    def describe(self) -> str:
        """The server address for messages, with any password masked."""
        if self.router is not None:
            return self.router.describe()
        if self.url:
            return mask_url(self.url)
        kw = self._redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _wire(self) -> _Wire:
        local = self._local
        pid = procid.pid  # no system call (updated in a forked child)
        wire = local.wire
        if wire is None or local.pid != pid or local.generation != self._generation:
            if wire is not None and local.pid == pid:
                wire.close()  # opened before the master changed
            # Every thread's first call after close() comes here (close() drops
            # the thread-local wires), so the hot path itself checks nothing.
            if self._closed:
                raise closed_error("client", self.describe())
            # Not taken from the pool's in-use set: when the thread ends, its
            # local goes away and the connection is closed by garbage collection,
            # so a thread-per-request caller does not leak one connection each.
            wire = _Wire(self._redis.connection_pool.make_connection())
            local.wire = wire
            local.pid = pid
            local.generation = self._generation
            with self._held_lock:
                if pid != self._held_pid:
                    self._held = weakref.WeakSet()
                    self._held_pid = pid
                self._held.add(wire.conn)
        return wire

    def ahead(self) -> _Wire | None:
        """This thread's connection for sending commands ahead of their replies
        (``send``, then ``read`` each reply in order), or None where every command
        must go through :meth:`call` (cluster routing, sentinel rechecks, WAIT).
        The caller reads every reply it sent for, or closes the wire."""
        if (self.router is not None and self.router.cluster) or self._sentinel:
            return None
        if self._wait is not None:
            return None
        return self._wire()

    def call(self, *args: Any, retry: bool = True) -> Any:
        """Send one command on this thread's connection and return the raw reply.

        Network errors reconnect and, when ``retry`` is true (the caller's command
        is idempotent), resend once before raising.
        """
        if self.router is not None and self.router.cluster:
            return with_redirects(self.router, lambda: self._send(args, retry), lambda: None)
        if self._sentinel:
            self._recheck_master()
        return self._send(args, retry)

    def call_packed(self, packed: bytes, *, retry: bool = True) -> Any:
        """:meth:`call` of a command packed already (``packed.py``); only where
        :attr:`plain` (no WAIT to add)."""
        if self.router is not None and self.router.cluster:
            send = self._send_packed
            return with_redirects(self.router, lambda: send(packed, retry), lambda: None)
        if self._sentinel:
            self._recheck_master()
            return self._send_packed(packed, retry)
        # Off a cluster and Sentinel: sent and read by directwire.py where that is
        # equivalent (9,400 CPU instructions fewer a worker's run), else as _send_packed.
        conn = self._wire().conn
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

    def _send_packed(self, packed: bytes, retry: bool) -> Any:
        try:
            return self._wire().request_packed(packed)
        except _NETWORK_ERRORS:
            if not retry:
                raise
        return self._wire().request_packed(packed)

    def _send(self, args: tuple[Any, ...], retry: bool) -> Any:
        wire = self._wire()
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

    def _waited(self, wire: _Wire, args: tuple[Any, ...]) -> Any:
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


def is_noscript(exc: ResponseError) -> bool:
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def is_busy(exc: ResponseError) -> bool:
    """``BUSY``: a script or function runs past busy-reply-threshold; the command
    was refused (``BUSYKEY``, a RESTORE onto an existing key, is another error).
    A pipeline's reply says which of its commands got it ("... caused error: BUSY";
    redis.asyncio before 5.1 quotes the reply's args: "caused error: ('BUSY")."""
    text = str(exc)
    return (
        text.startswith("BUSY ") or "caused error: BUSY " in text or "caused error: ('BUSY " in text
    )


def is_oom(exc: ResponseError) -> bool:
    # Redis 6.2 reports a script whose first write was refused as a script error
    # wrapping "-OOM command not allowed ...".
    return (
        isinstance(exc, OutOfMemoryError)
        or "OOM command not allowed" in str(exc)
        or str(exc).startswith("OOM")
    )


# Replies of a server that accepts no writes now (a script is refused before it
# starts on Redis >= 7; on 6.2 its first write fails, before anything is applied).
_WRITES_REFUSED = ("READONLY", "MISCONF", "NOREPLICAS")


def is_read_only(exc: ResponseError) -> bool:
    """``READONLY`` (a replica), ``MISCONF`` (a failed save: writes stopped) or
    ``NOREPLICAS`` (min-replicas-to-write not met); 6.2 wraps them in a script error."""
    if isinstance(exc, rexc.ReadOnlyError):
        return True
    text = str(exc)
    return any(text.startswith(code) or f"-{code} " in text for code in _WRITES_REFUSED)


def version_refused(exc: ResponseError, where: str) -> Exception:
    """The error for the ``INFO server`` a client sends before its first script
    call, refused: ``BUSY`` (another program's script) is the
    :class:`RedisBusyError` the script call would have met, not a raw reply."""
    mapped = refused(exc, "the first call (reading the server's version)", where)
    return exc if mapped is None else mapped


def refused(exc: ResponseError, what: str, where: str) -> RedflowError | None:
    """The error for a command Redis refused without applying it and that passes by
    itself (``BUSY``, ``OOM``, a server that accepts no writes now: all in
    ``TRANSIENT_ERRORS``), or None for another error."""
    if is_busy(exc):
        return RedisBusyError(
            f"Redis at {where} is busy running a script past its busy-reply-threshold "
            f"(another program's?); {what} was refused and nothing was changed ({exc})"
        )
    if is_oom(exc):
        return RedisOutOfMemoryError(
            f"Redis at {where} is out of memory (maxmemory reached); "
            f"{what} was refused and nothing was changed"
        )
    if is_read_only(exc):
        return RedisReadOnlyError(
            f"Redis at {where} accepts no writes now (a read-only replica, a failed save "
            f"or too few replicas); {what} was refused and nothing was changed ({exc})"
        )
    return None
