"""What a maintenance duty works on: one shard's keys, connection and scripts.

:class:`Store` is the protocol a client with one shard and each of
``client.shards`` satisfy; :func:`stores` lists a client's shards as stores, so
each duty (``maintenance.py``, ``leaderlock.py``, ``crontick.py`` and the
supervisor's duties) runs once per shard, bounded per shard.
"""

from __future__ import annotations

from typing import Any, Protocol

import redis

from .keys import Keys
from .queries import shard_views
from .scripts import Scripts

__all__ = ["Store", "stores"]


class Store(Protocol):
    """One shard's keys, connection and scripts: a client with one shard, or one
    of ``client.shards`` (each duty runs once per shard, bounded per shard)."""

    @property
    def keys(self) -> Keys: ...

    @property
    def redis(self) -> redis.Redis: ...

    @property
    def scripts(self) -> Scripts: ...


def stores(client: Any) -> list[Store]:
    """The shards of ``client`` as stores (``[client]`` with one shard)."""
    return shard_views(client)
