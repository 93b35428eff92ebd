"""A short-bounded PING of each shard's server, for the arbiter's put-backs
(``aftermath.py``): whether Redis answers now, found out in ``PROBE_TIMEOUT_S``
at most instead of the client's socket timeouts and retries (about 10 s a call).

Each probe client copies the connection settings of a shard's pool (address,
credentials, TLS, the routed connection of a cluster) with a short connect and
read timeout and no retry. A pool it cannot copy (Sentinel's, whose address the
connection asks the Sentinels for) is not probed: its put-backs are sent at once,
as before. Fork safety: no thread; its connection is opened from the parent only.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_mp.client import Client

__all__ = ["PROBE_TIMEOUT_S", "Probe"]

log = logging.getLogger("redflow_supervisor")

#: The longest a probe's connect, then its reply, may take (s).
PROBE_TIMEOUT_S = 0.5


class Probe:
    """PINGs every shard of ``client`` with a short bound."""

    def __init__(self, client: Client, timeout: float = PROBE_TIMEOUT_S) -> None:
        self._client = client
        self._timeout = timeout
        self._quick: list[redis.Redis] | None = None

    def _clients(self) -> list[redis.Redis]:
        if self._quick is None:
            quick: list[redis.Redis] = []
            seen: set[int] = set()
            for shard in self._client.shards:
                pool = shard.redis.connection_pool
                if id(pool) in seen or type(pool) is not redis.ConnectionPool:
                    continue
                seen.add(id(pool))
                kwargs = {
                    **pool.connection_kwargs,
                    "socket_timeout": self._timeout,
                    "socket_connect_timeout": self._timeout,
                    "retry": Retry(NoBackoff(), 0),
                }
                kwargs.pop("retry_on_timeout", None)
                kwargs.pop("retry_on_error", None)
                quick.append(
                    redis.Redis(
                        connection_pool=redis.ConnectionPool(
                            connection_class=pool.connection_class, max_connections=2, **kwargs
                        )
                    )
                )
            self._quick = quick
        return self._quick

    def answers(self) -> bool:
        """Whether every probed server answered a PING within the bound (an error
        reply is an answer: a refused PING, a busy script)."""
        try:
            for quick in self._clients():
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
