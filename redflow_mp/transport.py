"""The Redis connection layer: one redis-py client plus a lean per-thread hot path.

Owns every socket the library opens. General commands go through a
``redis.Redis`` client (connection pool, TLS, ACL auth, RESP parsing by
hiredis). The hot paths (enqueue, claim/finish, step writes) go through
:meth:`Transport.call`, which keeps one pooled connection per thread and talks
to it directly: redis-py's per-command machinery costs about as much as the
round trip itself on loopback, and a worker makes one call per run.

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
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import RedflowError

__all__ = ["Transport", "mask_url"]

_NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
NETWORK_ERRORS = _NETWORK_ERRORS

try:  # hiredis packs a command in C, several times faster than redis-py's encoder
    from hiredis import pack_command as _hiredis_pack

    def _pack_hiredis(args: tuple[Any, ...]) -> list[bytes]:
        return [_hiredis_pack(args)]

    _pack: Callable[[tuple[Any, ...]], list[bytes]] | None = _pack_hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack = None


def mask_url(url: str) -> str:
    """``url`` with any password (user info or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{user}:***@{host}" if user else f":***@{host}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            key, sep, _value = piece.partition("=")
            pairs.append(f"{key}=***" if sep and key.lower() == "password" else piece)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _own_client(url: str | None, client: redis.Redis | None) -> redis.Redis:
    """A bytes-returning client: from ``url``, or cloned from a caller's client settings."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    if client is not None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["decode_responses"] = False
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        return redis.Redis(connection_pool=new_pool)
    if url is None:
        url = "redis://localhost:6379/0"
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be a non-empty redis:// or rediss:// URL")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        retry=retry,
        health_check_interval=0,
        socket_keepalive=True,
        socket_connect_timeout=5.0,
        # Bounded reads: a connection silently dropped by the network fails after
        # this long instead of hanging a worker or the arbiter. Longer than any
        # blocking wait we issue (BLPOP uses at most a few seconds).
        socket_timeout=5.0,
    )


class _Local(threading.local):
    pid: int = -1
    conn: Any = None


class Transport:
    """Owns the Redis client and the per-thread hot-path connections."""

    def __init__(self, url: str | None = None, client: redis.Redis | None = None) -> None:
        self.url = url if client is None else None
        self.redis: redis.Redis = _own_client(url, client)
        self._local = _Local()
        self._held: weakref.WeakSet[Any] = weakref.WeakSet()
        self._held_lock = threading.Lock()
        self._version: tuple[int, ...] | None = None
        self._held_pid = os.getpid()

    def describe(self) -> str:
        """The server address for messages, with any password masked."""
        if self.url:
            return mask_url(self.url)
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _connection(self) -> Any:
        local = self._local
        pid = os.getpid()
        if local.conn is None or local.pid != pid:
            # Not taken from the pool's in-use set: when the thread ends, its
            # local goes away and the connection is closed by garbage collection,
            # so a thread-per-request caller does not leak one connection each.
            conn = self.redis.connection_pool.make_connection()
            local.conn = conn
            local.pid = pid
            with self._held_lock:
                if pid != self._held_pid:
                    self._held = weakref.WeakSet()
                    self._held_pid = pid
                self._held.add(conn)
        return local.conn

    def _drop(self, conn: Any) -> None:
        with contextlib.suppress(Exception):  # best effort on a broken socket
            conn.disconnect()

    def call(self, *args: Any, retry: bool = True) -> Any:
        """Send one command on this thread's connection and return the raw reply.

        Network errors reconnect and, when ``retry`` is true (the caller's command
        is idempotent), resend once before raising.
        """
        conn = self._connection()
        packed = _pack(args) if _pack is not None else conn.pack_command(*args)
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response(disable_decoding=True)
        except _NETWORK_ERRORS:
            self._drop(conn)
            if not retry:
                raise
        conn.connect()
        conn.send_packed_command(packed, check_health=False)
        return conn.read_response(disable_decoding=True)

    def server_version(self) -> tuple[int, ...]:
        if self._version is None:
            info = self.redis.info("server")
            raw = str(info.get("redis_version", "0.0.0"))
            parts = []
            for piece in raw.split(".")[:3]:
                digits = "".join(ch for ch in piece if ch.isdigit())
                parts.append(int(digits or 0))
            self._version = tuple(parts)
            if self._version < (6, 2):
                raise RedflowError(
                    f"Redis {raw} at {self.describe()} is too old: redflow-mp needs >= 6.2"
                )
        return self._version

    def close(self) -> None:
        """Close this process's connections (safe to call more than once)."""
        pid = os.getpid()
        with self._held_lock:
            held, self._held = list(self._held), weakref.WeakSet()
            owned = self._held_pid == pid
        if owned:
            for conn in held:
                self._drop(conn)
        self._local = _Local()
        self.redis.close()
        self.redis.connection_pool.disconnect()


def is_noscript(exc: ResponseError) -> bool:
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def is_oom(exc: ResponseError) -> bool:
    # Redis 6.2 reports a script whose first write was refused as a script error
    # wrapping "-OOM command not allowed ...".
    return (
        isinstance(exc, OutOfMemoryError)
        or "OOM command not allowed" in str(exc)
        or str(exc).startswith("OOM")
    )
