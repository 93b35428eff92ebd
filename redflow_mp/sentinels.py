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
``ConnectionError``: retried wherever network errors are).

Fork safety: as redis-py's (plain data; its pools check the pid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.sentinel import Sentinel as AsyncRedisSentinel
from redis.sentinel import MasterNotFoundError, Sentinel

__all__ = ["AsyncSentinel", "SyncSentinel", "master_not_found"]

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


class SyncSentinel(Sentinel):
    """redis-py's :class:`~redis.sentinel.Sentinel`, with the short error."""

    def _master_up(self, state: Any, service_name: str) -> bool:
        check: Callable[[Any, str], bool] = self.check_master_state  # untyped in redis-py
        return check(state, service_name)

    def discover_master(self, service_name: str) -> tuple[str, int]:
        problems: list[str] = []
        for index, node in enumerate(self.sentinels):
            try:
                masters: Any = node.sentinel_masters()
            except _ASK_ERRORS as exc:
                problems.append(f"{_address(node)}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self._master_up(state, service_name):
                self.sentinels[0], self.sentinels[index] = node, self.sentinels[0]
                return state["ip"], state["port"]
            problems.append(f"{_address(node)}: {_state_problem(state)}")
        raise master_not_found(service_name, problems)


class AsyncSentinel(AsyncRedisSentinel):
    """redis.asyncio's Sentinel, with the short error."""

    def _master_up(self, state: Any, service_name: str) -> bool:
        check: Callable[[Any, str], bool] = self.check_master_state  # untyped in redis-py
        return check(state, service_name)

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        problems: list[str] = []
        for index, node in enumerate(self.sentinels):
            try:
                masters: Any = await node.sentinel_masters()
            except _ASK_ERRORS as exc:
                problems.append(f"{_address(node)}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self._master_up(state, service_name):
                self.sentinels[0], self.sentinels[index] = node, self.sentinels[0]
                return state["ip"], state["port"]
            problems.append(f"{_address(node)}: {_state_problem(state)}")
        raise master_not_found(service_name, problems)
