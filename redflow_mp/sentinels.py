"""redis-py's Sentinel managers (sync and asyncio) with a "no master" error an operator can read.

Same lookup as redis-py's ``discover_master``: ask each sentinel in turn for the
masters it monitors, take the first that names the service's master up (not
``s_down``/``o_down``), and ask that sentinel first from then on. What differs
is the error when none does: redis-py's message held the repr of each
sentinel's client (about 1.2 KB each: its connection pool and every connection
setting), and the supervisor logged it every few seconds while it waited. Here
each sentinel is named by its address with what it answered, for example
``no Sentinel named a master for 'svc' that is up (127.0.0.1:26379: Error 111
connecting to 127.0.0.1:26379. Connection refused.; 127.0.0.1:26380: the master
is down)``. The error stays redis-py's ``MasterNotFoundError`` (a
``ConnectionError``: retried wherever network errors are). The sync and async
managers share the lookup (order, answers, error: :class:`MasterSearch`) and
differ only in their calls to the sentinels.

Also the rest of the Sentinel plumbing the transports share (moved from
``connection.py``): the sync client whose connections find the master before
every (re)connection (:func:`sentinel_client`), the check that some sentinel
knows the service (:func:`check_sentinel_service`), the closing of the
connections to the sentinels (:func:`close_sentinels`), and how often a
transport asks again where the master is (:data:`SENTINEL_RECHECK`).

Fork safety: as redis-py's (plain data; its pools check the pid).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from redis import exceptions as rexc
from redis.asyncio.sentinel import Sentinel as AsyncRedisSentinel
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from .closing import Gate, closable_connection_class
from .closing import connected as _connected
from .connection import Target, mask_url
from .errors import RedflowError

__all__ = [
    "SENTINEL_RECHECK",
    "AsyncSentinel",
    "MasterSearch",
    "SyncSentinel",
    "check_sentinel_service",
    "close_sentinels",
    "master_not_found",
    "sentinel_client",
]

_ASK_ERRORS = (rexc.ConnectionError, rexc.ResponseError, rexc.TimeoutError)


def _address(node: Any) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _state_problem(state: Any) -> str:
    if not state:
        return "monitors no such service"
    if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
        return "the master is down"
    return "sees too few other sentinels"


def master_not_found(service: str, problems: list[str]) -> MasterNotFoundError:
    return MasterNotFoundError(
        f"no Sentinel named a master for {service!r} that is up ({'; '.join(problems)})"
    )


class MasterSearch:
    """One master lookup without I/O, what the sync and async managers share: the
    order the sentinels are asked in, what each answer means, and the error when
    none names the master. The managers only ask (``sentinel_masters()``, awaited
    or not) and hand over each answer or error.

    ``sentinels`` is the manager's own list: the one that names the master is
    moved to the front, so it is asked first from then on (as redis-py does)."""

    def __init__(self, sentinels: list[Any], service: str, up: Callable[[Any, str], bool]) -> None:
        self.sentinels = sentinels
        self.service = service
        self._up = up
        self.problems: list[str] = []

    def failed(self, node: Any, exc: Exception) -> None:
        """``node`` could not be asked (one of ``_ASK_ERRORS``)."""
        self.problems.append(f"{_address(node)}: {exc}")

    def answered(self, index: int, node: Any, masters: Any) -> tuple[str, int] | None:
        """``node`` (at ``index``) listed ``masters``: the master's address when it
        names the service's master up, else None (the problem is kept)."""
        state = masters.get(self.service)
        if state and self._up(state, self.service):
            self.sentinels[0], self.sentinels[index] = node, self.sentinels[0]
            return state["ip"], state["port"]
        self.problems.append(f"{_address(node)}: {_state_problem(state)}")
        return None

    def not_found(self) -> MasterNotFoundError:
        return master_not_found(self.service, self.problems)


class SyncSentinel(Sentinel):
    """redis-py's :class:`~redis.sentinel.Sentinel`, with the short error."""

    def _master_up(self, state: Any, service_name: str) -> bool:
        check: Callable[[Any, str], bool] = self.check_master_state  # untyped in redis-py
        return check(state, service_name)

    def discover_master(self, service_name: str) -> tuple[str, int]:
        search = MasterSearch(self.sentinels, service_name, self._master_up)
        for index, node in enumerate(self.sentinels):
            try:
                masters: Any = node.sentinel_masters()
            except _ASK_ERRORS as exc:
                search.failed(node, exc)
                continue
            found = search.answered(index, node, masters)
            if found is not None:
                return found
        raise search.not_found()


class AsyncSentinel(AsyncRedisSentinel):
    """redis.asyncio's Sentinel, with the short error."""

    def _master_up(self, state: Any, service_name: str) -> bool:
        check: Callable[[Any, str], bool] = self.check_master_state  # untyped in redis-py
        return check(state, service_name)

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        search = MasterSearch(self.sentinels, service_name, self._master_up)
        for index, node in enumerate(self.sentinels):
            try:
                masters: Any = await node.sentinel_masters()
            except _ASK_ERRORS as exc:
                search.failed(node, exc)
                continue
            found = search.answered(index, node, masters)
            if found is not None:
                return found
        raise search.not_found()


#: With Sentinel, each process asks a sentinel which server is the master at most
#: this often (seconds), on its next hot-path command: after a promotion it moves
#: to the new master within about this long, even while the old one still accepts
#: writes (sentinels demote it only when they next reconfigure it, ~10 s).
SENTINEL_RECHECK = 1.0


def sentinel_client(target: Target, options: dict[str, Any], retry: Any, gate: Gate) -> redis.Redis:
    """A redis-py client whose connections go to the service's current master and
    do not open once ``gate`` is closed; a service no sentinel knows is refused at
    once (:func:`check_sentinel_service`)."""
    assert target.service is not None
    sentinel = SyncSentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": options.get("socket_timeout"),
            "socket_connect_timeout": options.get("socket_connect_timeout"),
        },
    )
    # The sentinels' connections are gated too: a master lookup that close() cut
    # (or that was between sentinels when it ran) went on to the next sentinel and
    # opened a connection there after close() had returned, left open for as long
    # as the closed client lived (close_sentinels had closed those before it).
    for node in sentinel.sentinels:
        node_pool = node.connection_pool
        node_pool.connection_class = closable_connection_class(node_pool.connection_class, gate)
    check_sentinel_service(sentinel, target)
    kwargs: dict[str, Any] = dict(options)
    kwargs.update(db=target.db, username=target.username, password=target.password)
    base = SentinelManagedSSLConnection if target.tls else SentinelManagedConnection
    client: redis.Redis = sentinel.master_for(
        target.service,
        retry=retry,
        connection_class=closable_connection_class(_master_connection(base), gate),
        **kwargs,
    )
    return client


def close_sentinels(sentinels: Any) -> None:
    """Close the connections a redis-py :class:`~redis.sentinel.Sentinel` opened to
    the sentinels (each asked where the master is): a client's close() closed only
    those to the master, and one per sentinel asked stayed open for as long as the
    closed client object lived."""
    for node in getattr(sentinels, "sentinels", ()):
        with contextlib.suppress(Exception):  # best effort on a broken socket
            node.connection_pool.disconnect()


def _master_connection(base: type[Any]) -> type[Any]:
    """redis-py's Sentinel connection class, made to find the master before every
    (re)connection. Its own class asks the sentinels only in ``connect()``; a
    connection that reconnects by itself (``send_packed_command`` on a closed
    socket: a retry after a network error, or a connection made with
    ``make_connection()`` as the hot path does) would otherwise dial its default
    address, ``localhost:6379``."""

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        if not _connected(self):
            self.connect()  # asks the sentinels for the master
        super(Master, self).send_packed_command(command, check_health)

    name = f"Master{base.__name__}"
    Master: type[Any] = type(
        name, (base,), {"send_packed_command": send_packed_command, "__qualname__": name}
    )
    return Master


def check_sentinel_service(sentinel: Sentinel, target: Target) -> None:
    """Raise :class:`RedflowError` when every sentinel that answers says it does
    not know the service. Unreachable sentinels are not an error here (the
    commands that follow fail, and are retried, like any connection error)."""
    answered = False
    for index, node in enumerate(sentinel.sentinels):
        try:
            execute: Callable[..., Any] = node.execute_command  # untyped in redis-py
            addr = execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.service)
        except rexc.AuthenticationError as exc:
            # A ConnectionError subclass: taken as "unreachable", every command
            # then failed with a retried MasterNotFoundError that buried the cause.
            raise RedflowError(
                f"the Sentinel at {mask_url(target.url)} requires a password ({exc}): "
                "sentinels are asked without one (the URL's user and password go to "
                "the master and its replicas); let them answer without AUTH"
            ) from None
        except (rexc.ConnectionError, rexc.TimeoutError):
            continue
        finally:
            node.close()
        answered = True
        if addr:
            # asked first from now on, as redis-py's own lookups do: a sentinel that
            # never answers cost its socket timeout here and again at the first lookup
            nodes = sentinel.sentinels
            nodes[0], nodes[index] = nodes[index], nodes[0]
            return
    if answered:
        raise RedflowError(
            f"no Sentinel at {mask_url(target.url)} monitors a master named "
            f"{target.service!r} (SENTINEL MASTERS lists the names they know)"
        )
