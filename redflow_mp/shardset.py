"""A sync client's shards: each shard's keys, connections, scripts and result waiter.

The math (tags, placement, run ids) is ``shards.py``; this module gives each
shard what talks to Redis. Shard 0 is the client's own transport, keys,
scripts and waiter, so ``shards = 1`` adds nothing anywhere. On a Redis Cluster
shard ``k > 0`` gets its own :class:`~redflow_mp.transport.Transport` pinned to
the master serving its tag's slot (following its own MOVED / ASK / TRYAGAIN /
CLUSTERDOWN); on one server, a Sentinel group, a unix socket or a caller's
client, every shard shares shard 0's transport (one connection pool). Whether
the server is a cluster is known after the first connection: a shard ``k > 0``
is resolved at its first use (one ``PING`` on shard 0's transport if nothing
was sent yet).

Fork safety: transports are per process (``transport.py``); a forked child
resolves nothing again (the routing decision is plain data).
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from .keys import Keys
from .results import ResultWaiter
from .scripts import Scripts
from .shards import (
    SHARD_SEPARATOR,
    check_shards,
    run_id_for_shard,
    shard_index_of_run,
    shard_index_of_workflow,
    shard_tags,
)
from .transport import Transport

__all__ = ["Shard", "ShardSet"]


class Shard:
    """One shard of a sync client: ``index``, ``keys`` (its tag), and, resolved at
    first use, ``transport`` / ``redis`` (pinned to the master of its slot),
    ``scripts`` and ``waiter``."""

    __slots__ = ("_owner", "_scripts", "_transport", "_waiter", "index", "keys")

    def __init__(self, owner: ShardSet, index: int, keys: Keys) -> None:
        self._owner = owner
        self.index = index
        self.keys = keys
        self._transport: Transport | None = None
        self._scripts: Scripts | None = None
        self._waiter: ResultWaiter | None = None

    def __repr__(self) -> str:
        return f"<Shard {self.index} {self.keys.tag}>"

    @property
    def transport(self) -> Transport:
        t = self._transport
        if t is None:
            t = self._owner.resolve(self)
        return t

    @property
    def redis(self) -> redis.Redis:
        """redis-py client (bytes replies) pinned to the master serving this shard."""
        return self.transport.redis

    @property
    def scripts(self) -> Scripts:
        s = self._scripts
        if s is None:
            with self._owner.lock:
                if self._scripts is None:
                    scripts = Scripts(self.transport, self.keys, functions=self._owner.functions)
                    scripts.id_suffix = run_id_for_shard("", self.index, self._owner.count)
                    scripts.shard_count, scripts.shard_index = self._owner.count, self.index
                    self._scripts = scripts
                s = self._scripts
        return s

    @property
    def waiter(self) -> ResultWaiter:
        w = self._waiter
        if w is None:
            with self._owner.lock:
                if self._waiter is None:
                    self._waiter = ResultWaiter(
                        self.transport, self.keys, self.scripts.confirm_result
                    )
                w = self._waiter
        return w

    def run_id(self, ulid: str) -> str:
        """A fresh ULID as the id of a run of this shard."""
        return run_id_for_shard(ulid, self.index, self._owner.count)


class ShardSet:
    """The ``shards`` shards of one prefix on one sync transport."""

    def __init__(
        self,
        transport: Transport,
        prefix: str,
        shards: int,
        *,
        scripts: Scripts,
        waiter: ResultWaiter,
        functions: bool = False,
    ) -> None:
        self.count = check_shards(shards)
        self.base = transport
        self.functions = functions
        self.lock = threading.RLock()
        tags = shard_tags(prefix, self.count)
        self.shards = tuple(Shard(self, k, Keys(prefix, tag)) for k, tag in enumerate(tags))
        first = self.shards[0]
        first._transport, first._scripts, first._waiter = transport, scripts, waiter
        scripts.id_suffix = run_id_for_shard("", 0, self.count)
        scripts.shard_count, scripts.shard_index = self.count, 0
        self._own: list[Transport] = []

    def resolve(self, shard: Shard) -> Transport:
        """Shard ``k > 0``'s transport: its own on a cluster, else shard 0's."""
        with self.lock:
            if shard._transport is not None:
                return shard._transport
            base = self.base
            router = base.router
            if router is not None and router.cluster is None:
                base.redis.ping()  # the first connection detects a cluster
            if router is None or not router.cluster:
                shard._transport = base
            else:
                own = base.sibling(shard.keys.tag)
                self._own.append(own)
                shard._transport = own
            return shard._transport

    def of_workflow(self, name: str) -> Shard:
        return self.shards[shard_index_of_workflow(name, self.count)]

    def of_run(self, run_id: str) -> Shard:
        """The shard of ``run_id`` (``ValueError`` naming it for a malformed suffix,
        ``<ulid>~x``, whatever the count: with one shard, every well-formed id is
        shard 0's, and a malformed one used to be an unknown run there while
        several shards raised)."""
        if self.count == 1:  # every well-formed id, as before shards existed
            if SHARD_SEPARATOR in run_id:
                shard_index_of_run(run_id, 1)  # the same ValueError as with several
            return self.shards[0]
        return self.shards[shard_index_of_run(run_id, self.count)]

    def close(self) -> None:
        """Close the transports of shards > 0 and then their waiters (shard 0's are
        the client's, closed by it): a cut connection of a waiter must find its
        transport's gate closed (see ``Runs.close``)."""
        with self.lock:
            own, self._own = self._own, []
        for t in own:
            t.close()
        with self.lock:
            for shard in self.shards[1:]:
                if shard._waiter is not None:
                    shard._waiter.close()

    def describe(self) -> list[Any]:
        return [(s.index, s.keys.tag) for s in self.shards]
