"""A short-bounded PING of each shard's server, for the arbiter's put-backs
(``aftermath.py``): whether Redis answers now, found out in ``PROBE_TIMEOUT_S``
at most instead of the client's socket timeouts and retries (about 10 s a call).

Each probe client copies the connection settings of a shard's pool (address,
credentials, TLS; on a cluster, the master the client's router pinned, probed again
once it re-pins) with a short connect and read timeout and no retry, through
redis-py's own connection class: a routed connection's failed connect asks the
cluster where the slot is, with the client's timeouts (seconds per node). A pool
it cannot copy (Sentinel's, whose address the connection asks the Sentinels for)
is not probed: its put-backs are sent at once, as before. Fork safety: no
thread; its connection is opened from the parent only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_mp.client import Client

__all__ = ["PROBE_TIMEOUT_S", "Probe"]

log = logging.getLogger("redflow_supervisor")

#: The longest a probe's connect, then its reply, may take (s).
PROBE_TIMEOUT_S = 0.5


def _plain_class(cls: type[Any]) -> type[Any]:
    """redis-py's own connection class under the transport's wrappers (routed,
    closable): connecting must never ask a cluster where a slot is (``Router.discover``,
    with the client's 5 s timeouts and retries per node), only open one socket."""
    for klass in cls.__mro__:
        if klass.__module__.startswith("redis."):
            return klass
    return cls  # pragma: no cover - every pool's class derives from redis-py's


class Probe:
    """PINGs the shards of ``client`` with a short bound: every shard
    (:meth:`answers`), or the servers of some (:meth:`answering`, each server
    once however many of those shards it holds)."""

    def __init__(self, client: Client, timeout: float = PROBE_TIMEOUT_S) -> None:
        self._client = client
        self._timeout = timeout
        self._quick: list[redis.Redis] | None = None
        self._pins: list[tuple[Any, int]] = []  # (router, its generation) when built
        self._of_shard: dict[int, int] = {}  # shard index -> its server's probe in _quick
        self._probed_at: dict[int, float] = {}  # server (in _quick) -> when last probed
        self._last_up: int | None = None  # the server that answered last

    def _clients(self) -> list[redis.Redis]:
        if self._quick is not None and any(r.generation != g for r, g in self._pins):
            self.close()  # a cluster's slot moved: probe its new master
        if self._quick is None:
            quick: list[redis.Redis] = []
            pins: list[tuple[Any, int]] = []
            seen: dict[object, int] = {}
            of_shard: dict[int, int] = {}
            for shard in self._client.shards:
                pool = shard.redis.connection_pool
                if type(pool) is not redis.ConnectionPool:
                    continue
                kwargs = {
                    **pool.connection_kwargs,
                    "socket_timeout": self._timeout,
                    "socket_connect_timeout": self._timeout,
                    "retry": Retry(NoBackoff(), 0),
                }
                router = getattr(shard.redis, "router", None)
                if router is not None and router.cluster:
                    if router.address is None:
                        continue  # not pinned yet: its put-backs are sent at once
                    kwargs["host"], kwargs["port"] = router.address
                    pins.append((router, router.generation))
                where = (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"))
                if where in seen:
                    of_shard[shard.index] = seen[where]
                    continue
                seen[where] = of_shard[shard.index] = len(quick)
                kwargs.pop("retry_on_timeout", None)
                kwargs.pop("retry_on_error", None)
                quick.append(
                    redis.Redis(
                        connection_pool=redis.ConnectionPool(
                            connection_class=_plain_class(pool.connection_class),
                            max_connections=2,
                            **kwargs,
                        )
                    )
                )
            self._quick, self._pins, self._of_shard = quick, pins, of_shard
        return self._quick

    def answers(self) -> bool:
        """Whether every probed server answered a PING within the bound (an error
        reply is an answer: a refused PING, a busy script)."""
        return all(self._ping(quick) for quick in self._clients())

    def any_answers(self) -> bool:
        """Whether some probed server answers (or none is probed): False when none
        reached within one budget answered (the duties' gate, ``duties/__init__.py``).
        The server that answered last is tried first, then the least recently probed."""
        quick = self._clients()
        if not quick:
            return True
        order = sorted(range(len(quick)), key=lambda i: (i != self._last_up, self._at(i)))
        return any(self._within_budget(quick, order, stop_at_first=True).values())

    def answering(self, shards: set[int], *, whole: bool = False) -> tuple[set[int], set[int]]:
        """Those of ``shards`` whose server answered a PING within the bound, and
        those whose server did not, each server probed once, the least recently
        probed first, within one budget: a shard whose server was not reached is
        in neither (probed first next time; ``whole``: no budget, each is reached,
        the stop's last try). A shard not probed at all (Sentinel,
        a cluster shard not pinned yet) counts as answering (its put-backs are
        sent at once, as before)."""
        quick = self._clients()
        wanted = sorted({self._of_shard[k] for k in shards if k in self._of_shard}, key=self._at)
        found = self._within_budget(quick, wanted, whole=whole)
        up = {k for k in shards if k not in self._of_shard or found.get(self._of_shard[k])}
        down = {k for k in shards if k in self._of_shard and found.get(self._of_shard[k]) is False}
        return up, down

    def _at(self, server: int) -> float:
        return self._probed_at.get(server, float("-inf"))

    def _within_budget(
        self,
        quick: list[redis.Redis],
        order: list[int],
        *,
        stop_at_first: bool = False,
        whole: bool = False,
    ) -> dict[int, bool]:
        """PING the servers in ``order`` until one call's budget (``timeout``) is
        spent (at least one; a refused connect costs nothing, a stalled server its
        bound): however many servers stall, one call blocks about one bound."""
        found: dict[int, bool] = {}
        start = time.monotonic()
        for i in order:
            if found and not whole and time.monotonic() - start >= self._timeout:
                break
            found[i] = self._ping(quick[i])
            self._probed_at[i] = time.monotonic()
            if found[i]:
                self._last_up = i
                if stop_at_first:
                    break
        return found

    @staticmethod
    def _ping(quick: redis.Redis) -> bool:
        try:
            with contextlib.suppress(redis.ResponseError):
                quick.ping()
        except (redis.RedisError, OSError) as exc:
            log.debug("Redis probe: %s", exc)
            return False
        return True

    def close(self) -> None:
        for quick in self._quick or ():
            with contextlib.suppress(Exception):
                quick.close()
                quick.connection_pool.disconnect()
        self._quick, self._pins, self._of_shard = None, [], {}
        self._probed_at, self._last_up = {}, None
