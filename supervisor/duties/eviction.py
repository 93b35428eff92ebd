"""Watch for keys Redis evicts while the supervisor runs.

The start-up warning (:func:`supervisor.startup.eviction_warning`) sees the
``maxmemory-policy`` once; a policy changed later (``CONFIG SET``, a managed
service's parameter group applied live) or keys evicted under load went
unnoticed, and an evicted run hash, lease or idempotency key is a run lost or
run twice. At each key check (every minute) this reads ``INFO memory`` and
``INFO stats`` of each shard's server (which every user may run: see
docs/operations.md, Redis ACL) and logs an ERROR when ``evicted_keys`` grew
since the previous look, and a WARNING when the policy turned into an evicting
one since then.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from redflow_mp.errors import NETWORK_ERRORS, TRANSIENT_ERRORS

__all__ = ["EvictionWatch"]

log = logging.getLogger("redflow_supervisor")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _where(conn: Any) -> str:
    """host:port (or the socket path) of ``conn``'s server: no password to mask."""
    kw = getattr(getattr(conn, "connection_pool", None), "connection_kwargs", {})
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


class EvictionWatch:
    """Per shard: the last ``evicted_keys`` and ``maxmemory_policy`` seen."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, str]] = {}
        self.reported = 0  # how many ERROR lines about evicted keys were logged

    def look(self, index: int, conn: Any) -> None:
        """Compare shard ``index``'s server (``conn``) with the previous look."""
        try:
            with conn.pipeline(transaction=False) as pipe:
                pipe.info("memory")
                pipe.info("stats")
                memory, stats = pipe.execute()
        except NETWORK_ERRORS:
            raise  # the caller's (the key check: a stalled server is called once a tick)
        except TRANSIENT_ERRORS:
            return  # (Redis refusing: the next look tells)
        except redis.ResponseError:
            return  # (INFO refused to this user)
        policy = _text(memory.get("maxmemory_policy", "noeviction"))
        evicted = int(stats.get("evicted_keys", 0) or 0)
        before = self._seen.get(index)
        where = _where(conn)
        self._seen[index] = (evicted, policy)
        if before is None:
            return  # the baseline (start-up warned about the policy)
        if evicted > before[0]:
            self.reported += 1
            log.error(
                "Redis at %s evicted %d keys in the last minute (maxmemory-policy %s, "
                "used_memory %s of maxmemory %s): keys of this prefix may be among them, "
                "and a run whose hash, lease or idempotency key went is lost or runs "
                "twice; set maxmemory-policy noeviction or give Redis memory",
                where,
                evicted - before[0],
                policy,
                _text(memory.get("used_memory_human", "?")),
                _text(memory.get("maxmemory_human", "?")),
            )
        if policy != "noeviction" and before[1] == "noeviction":
            log.warning(
                "Redis at %s now has maxmemory-policy %s (it had noeviction): at its "
                "memory limit it deletes keys, runs among them; set it back to noeviction",
                where,
                policy,
            )
