"""An asyncio client's shards (the sync side is ``shardset.py``; the math ``shards.py``).

Shard 0 is the client's own transport and scripts. Shard ``k > 0`` shares them
on a Sentinel group, a unix socket, a caller's client, or a server already
known not to be a cluster; otherwise it gets its own
:class:`~redflow_mp.aio_transport.AsyncTransport` routed by its tag (on a
cluster: pinned to the master serving its slot; on one server not yet
contacted it detects that by itself, and is simply a second pool to the same
server). Nothing connects before the first call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio

from .aio_transport import AsyncTransport
from .keys import Keys
from .options import check_run_id
from .shards import (
    SHARD_SEPARATOR,
    check_shards,
    run_id_for_shard,
    shard_index_of_run,
    shard_index_of_workflow,
    shard_tags,
)

__all__ = ["AsyncShard", "AsyncShardSet", "ShardAccess"]


class AsyncShard:
    """One shard of an async client: ``index``, ``keys``, and (resolved at first use)
    ``transport`` / ``redis`` / ``scripts``."""

    __slots__ = ("_owner", "_scripts", "_transport", "index", "keys")

    def __init__(self, owner: AsyncShardSet, index: int, keys: Keys) -> None:
        self._owner = owner
        self.index = index
        self.keys = keys
        self._transport: AsyncTransport | None = None
        self._scripts: Any = None

    def __repr__(self) -> str:
        return f"<AsyncShard {self.index} {self.keys.tag}>"

    @property
    def transport(self) -> AsyncTransport:
        if self._transport is None:
            self._transport = self._owner.resolve(self)
        return self._transport

    @property
    def redis(self) -> redis.asyncio.Redis:
        """redis.asyncio client (bytes replies) routed to this shard's master."""
        return self.transport.redis

    @property
    def scripts(self) -> Any:
        """This shard's :class:`~redflow_mp.aio_scripts.AsyncScripts`."""
        if self._scripts is None:
            scripts = self._owner.make_scripts(self.transport, self.keys)
            scripts.id_suffix = run_id_for_shard("", self.index, self._owner.count)
            self._scripts = scripts
        return self._scripts

    def run_id(self, ulid: str) -> str:
        return run_id_for_shard(ulid, self.index, self._owner.count)


class AsyncShardSet:
    def __init__(
        self,
        transport: AsyncTransport,
        prefix: str,
        shards: int,
        *,
        scripts: Any,
        make_scripts: Callable[[AsyncTransport, Keys], Any],
    ) -> None:
        self.count = check_shards(shards)
        self.base = transport
        self.make_scripts = make_scripts
        tags = shard_tags(prefix, self.count)
        self.shards = tuple(AsyncShard(self, k, Keys(prefix, tag)) for k, tag in enumerate(tags))
        self.shards[0]._transport = transport
        self.shards[0]._scripts = scripts
        scripts.id_suffix = run_id_for_shard("", 0, self.count)
        self._own: list[AsyncTransport] = []

    def resolve(self, shard: AsyncShard) -> AsyncTransport:
        base = self.base
        router = base.router
        if router is None or router.cluster is False:
            return base
        own = base.sibling(shard.keys.tag)
        self._own.append(own)
        return own

    def of_workflow(self, name: str) -> AsyncShard:
        return self.shards[shard_index_of_workflow(name, self.count)]

    def of_run(self, run_id: str) -> AsyncShard:
        if self.count == 1:  # every well-formed id (ShardSet.of_run)
            if SHARD_SEPARATOR in run_id:
                shard_index_of_run(run_id, 1)  # the same ValueError as with several
            return self.shards[0]
        return self.shards[shard_index_of_run(run_id, self.count)]

    def transports(self) -> list[AsyncTransport]:
        """Every transport of the client: the base one, then the shards' own."""
        return [self.base, *self._own]

    async def aclose(self) -> None:
        # every closing begun before the first wait: a caller cancelled while it
        # waits leaves none of them unstarted (each goes on in its own task)
        for t in self._own:
            t.begin_close()
        for t in self._own:
            await t.aclose()


class ShardAccess:
    """An async client's way to its shards (``shard_set``), shared by the parts of
    :class:`~redflow_mp.aio.AsyncClient` (``aio_cancel.py``, ``aio_results.py``)."""

    shard_set: AsyncShardSet

    @property
    def shards(self) -> tuple[AsyncShard, ...]:
        """The namespace's shards (``shards`` setting); shard 0 is :attr:`keys`."""
        return self.shard_set.shards

    @property
    def shard_count(self) -> int:
        return self.shard_set.count

    def shard_of_workflow(self, name: str) -> AsyncShard:
        """The shard holding workflow ``name``'s keys and runs."""
        return self.shard_set.of_workflow(name)

    def shard_of_run(self, run_id: str) -> AsyncShard:
        """The shard a run id names (``ValueError`` for a malformed id)."""
        return self.shard_set.of_run(check_run_id(run_id))
