"""A closed sync client's connections never open again.

``Transport.close()`` cuts every socket the client holds, including those of
calls in flight in other threads (a ``BLPOP``, a ``result()`` wait, any
command). Cutting alone is not enough: redis-py's retry (and the transport's
own resend, and a pub/sub's reconnect) then reconnected the very connection
object that was cut and sent its command again, after ``close()``: the call
went on (a blocked read waited on, up to the socket timeout and three
retries), and the new connection stayed open in the closed client's pool,
one server-side client left behind per close with a call in flight.

Every connection class a sync transport uses (TCP, TLS, unix socket, cluster
pinned, Sentinel, or a caller's client's class) is wrapped here so that
opening a connection first asks the transport's :class:`Gate`, and asks again
once it is open: a connection that finished opening after the close is closed
at once. Either way the call raises :func:`cut_error`'s
:class:`~redflow_mp.errors.RedflowError` (not a connection error, so no retry
catches it). A connection opened before the close is cut by the close itself
(every one of them is reachable from the transport: its pool's sets, the
threads' wires, the waiter's). Cost: redis-py's pool calls ``connect()`` at
every checkout; on an open connection of an open transport it returns after
two attribute reads (cheaper than redis-py's own no-op ``connect()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RedflowError

__all__ = [
    "Gate",
    "closable_async_connection_class",
    "closable_connection_class",
    "closed_error",
    "connected",
    "cut_error",
]


def closed_error(what: str, where: str) -> RedflowError:
    """The error for a client used after it was closed."""
    return RedflowError(
        f"this {what} ({where}) is closed; create a new one instead of using it after close"
    )


def cut_error(where: str) -> RedflowError:
    """The error of a call whose connection would open again after close()."""
    return RedflowError(
        f"this client ({where}) is closed: close() cut the connection this call "
        "needed, and it does not open again (a command cut that way may or may not "
        "have been applied; it was not sent again); create a new client instead"
    )


class Gate:
    """Whether a transport is closed, shared by all of its connections."""

    __slots__ = ("closed", "describe")

    def __init__(self, describe: Callable[[], str]) -> None:
        self.closed = False
        self.describe = describe

    def check(self, conn: Any) -> None:
        """Raise :func:`cut_error` once closed, closing ``conn`` first."""
        if self.closed:
            conn.disconnect()
            raise cut_error(self.describe())


def connected(conn: Any) -> bool:
    """Whether a redis-py connection is open (``is_connected``: redis.asyncio's,
    and the sync one's from redis-py 5.1; 5.0's sync connection has only its socket)."""
    flag = getattr(conn, "is_connected", None)
    if flag is not None:
        return bool(flag)
    return getattr(conn, "_sock", None) is not None


def closable_connection_class(base: type[Any], gate: Gate) -> type[Any]:
    """``base`` made to refuse to open once ``gate`` is closed (see the module's
    docstring). redis-py 6+ opens through ``connect_check_health`` (which
    ``connect`` calls), 5.x through ``connect``: both are wrapped where present;
    Sentinel's ``connect`` asks the sentinels first, so it is checked before that."""

    def wrapped(opener: Callable[..., Any]) -> Callable[..., Any]:
        def open_checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            # redis-py's pool calls connect() at every checkout: an open connection
            # of an open transport returns at once, as redis-py's own would
            if not gate.closed and connected(self):
                return None
            gate.check(self)
            try:
                result = opener(self, *args, **kwargs)
            except Exception:
                gate.check(self)  # the close cut the handshake: say so
                raise
            gate.check(self)  # opened while the close ran: closed now
            return result

        return open_checked

    return _closable(base, wrapped)


def closable_async_connection_class(base: type[Any], gate: Gate) -> type[Any]:
    """:func:`closable_connection_class` for redis.asyncio's connection classes
    (the async client's redis.asyncio pool: ``aio_connection.ClosingPool``)."""

    async def check(conn: Any) -> None:
        if gate.closed:
            await conn.disconnect()
            raise cut_error(gate.describe())

    def wrapped(opener: Callable[..., Any]) -> Callable[..., Any]:
        async def open_checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not gate.closed and connected(self):  # each checkout: as redis-py's own
                return None
            await check(self)
            try:
                result = await opener(self, *args, **kwargs)
            except Exception:
                await check(self)
                raise
            await check(self)
            return result

        return open_checked

    return _closable(base, wrapped)


def _closable(base: type[Any], wrapped: Callable[[Callable[..., Any]], Any]) -> type[Any]:
    """A subclass of ``base`` whose opening methods (``connect``, and
    ``connect_check_health`` where present) are ``wrapped(base's own method)``."""
    openers = ("connect", "connect_check_health")
    methods = {m: wrapped(getattr(base, m)) for m in openers if hasattr(base, m)}
    name = f"Closable{base.__name__}"
    closable: type[Any] = type(name, (base,), {**methods, "__qualname__": name})
    return closable
