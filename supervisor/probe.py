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
        """Whether some probed server answers (or none is probed): False only when
        Redis as a whole is out of reach (the duties' gate, ``duties/__init__.py``)."""
        quick = self._clients()
        return not quick or any(self._ping(q) for q in quick)

    def answering(self, shards: set[int]) -> set[int]:
        """Those of ``shards`` whose server answered a PING within the bound, each
        server probed once; a shard not probed (Sentinel, a cluster shard not pinned
        yet) counts as answering (its put-backs are sent at once, as before)."""
        quick = self._clients()
        wanted = {self._of_shard[k] for k in shards if k in self._of_shard}
        up = {i for i in sorted(wanted) if self._ping(quick[i])}
        return {k for k in shards if k not in self._of_shard or self._of_shard[k] in up}

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
