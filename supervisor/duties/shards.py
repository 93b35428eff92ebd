"""A duty's tick over the shards blocks at most once per stalled server.

Each duty (promoter, reaper, relist, cron, retention, cascades, key check, and
the leader lock's copies) loops over the shards and keeps a shard's Redis
trouble (``TRANSIENT_ERRORS``) to raise after the loop, so a shard that is
down (a cluster master killed: the connection refused at once) stops none of
the others, which are served in the same tick. A STALLED server (SIGSTOP, a
hung host: connections time out instead of being refused) made the same loop
block one call's socket timeouts (two with the retry, about 10 s; four for a
pipeline, 20.7 s) per shard it holds: with ``--shards 8`` on one
stopped server the first duty of the outage blocked 80 s before
:class:`~supervisor.duties.Schedule` could arm its probe gate, the parent's
signals (TERM) waiting meanwhile.

:class:`ServerStalls` remembers, for one tick, the servers a call timed out on
(``redis.TimeoutError``, or any network error that took at least ``STALL_S``):
the loop wraps each shard's calls in :meth:`ServerStalls.call`, which raises
:class:`ServerStalled` (a ``redis.TimeoutError``: the loop keeps it like the
timeout it stands for) instead of calling a shard whose server already timed
out this tick. A refused connection marks nothing (it costs nothing; the
shard's neighbours on that server are still tried). Shards on other servers
(other cluster masters) are served in the same tick. The schedule clears the
marks before each tick (one that returns early, the lead lost, met no stall:
kept, the last tick's stall failed the duty at every pass); once the tick is over,
it sees the stall (:attr:`ServerStalls.error`) even when the duty
swallowed it (key check, retention's idle-queue and lost-child pages, cron's
rewind: they leave the shard's page to the next tick; the registry check, which
wraps its whole look in one :meth:`ServerStalls.call`) and stops its pass with
the gate armed, as after a duty's network failure.

"The same server" (:func:`server_of`): a cluster shard's pinned master
(``Router.address``, the node its slot is served by), else the connection
pool's address (host and port, or unix socket path: every database of one
``redis-server`` stalls together); a pool without one (Sentinel's) or a cluster
shard not pinned yet counts as a server of its own. A call that reads another
shard (retention's sweep reads a parent there) is charged to the shard looped
over: at worst that shard's neighbours wait for the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from redflow_mp.errors import NETWORK_ERRORS

__all__ = ["STALL_S", "ServerStalled", "ServerStalls", "server_of"]

#: A network error after a call blocked this long counts as a stall (s): a
#: refused connection fails at once, a stalled server only after its timeouts.
STALL_S = 1.0


class ServerStalled(redis.TimeoutError):
    """A shard not called this tick: a call to its server timed out already."""


def server_of(store: Any) -> Hashable:
    """Which server ``store``'s calls go to (see the module docstring)."""
    conn = store.redis
    router = getattr(conn, "router", None)
    if router is not None and router.cluster is not False:
        if router.cluster and router.address is not None:
            return ("node", *router.address)
        return ("router", id(router))  # not pinned yet: a server of its own
    pool = conn.connection_pool
    kwargs = getattr(pool, "connection_kwargs", {})
    if kwargs.get("path"):
        return ("unix", kwargs["path"])
    if kwargs.get("host") is not None and type(pool) is redis.ConnectionPool:
        return ("tcp", kwargs["host"], kwargs.get("port"))
    return ("pool", id(pool))


class ServerStalls:
    """The servers a call timed out on during one tick of one duty."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._stalled: dict[Hashable, Exception] = {}
        #: the first stall of the tick (None: none); the schedule arms its gate
        self.error: Exception | None = None

    def clear(self) -> None:
        """A new tick: every server is called again."""
        self._stalled.clear()
        self.error = None

    @contextmanager
    def call(self, store: Any) -> Iterator[None]:
        """Run the block's calls to ``store``, unless its server stalled this tick
        (then :class:`ServerStalled` is raised at once); a timeout in the block
        marks the server."""
        server = server_of(store)
        stalled = self._stalled.get(server)
        if stalled is not None:
            raise ServerStalled(f"not called: {stalled!r} on the same server this tick")
        start = self._clock()
        try:
            yield
        except NETWORK_ERRORS as exc:
            if isinstance(exc, redis.TimeoutError) or self._clock() - start >= STALL_S:
                self._stalled[server] = exc
                if self.error is None:
                    self.error = exc
            raise
