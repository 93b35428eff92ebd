"""One duty's loop over the shards, shared by every duty that calls each shard.

A shard's Redis trouble (``TRANSIENT_ERRORS``) does not stop the other shards:
its error is kept and the loop goes on. A NETWORK error (the connection failed
or timed out: a stalled or unreachable server) stops the loop there: every
further call would block as long, and with N shards on one stalled server the
first duty of an outage blocked N socket timeouts (40 s at 4 shards, minutes at
16) before :class:`~supervisor.duties.Schedule` could arm its probe gate, while
the parent's signals (TERM) waited. The next tick starts after the shard that
failed, as the schedule does across duties, so a shard that always fails
starves no other: each tick serves every healthy shard and tries the failing
one last. Other errors (a key of another type, a bug) propagate as before.
"""

from __future__ import annotations

from collections.abc import Callable

from redflow_mp.errors import NETWORK_ERRORS, TRANSIENT_ERRORS

__all__ = ["ShardTurn"]


class ShardTurn:
    """Where a duty's next pass over its shards starts; one per loop of a duty.

    ``rotate``: each pass also starts one shard later (a budgeted loop whose
    last shards would get less of the budget otherwise)."""

    def __init__(self, rotate: bool = False) -> None:
        self.start = 0
        self.rotate = rotate
        #: the last pass stopped at a network error (a later loop of the same tick
        #: may wait for the next tick rather than block again)
        self.stopped = False
        self.errors: list[Exception] = []  # the last pass's

    def run(self, count: int, step: Callable[[int], bool | None]) -> list[Exception]:
        """Call ``step(i)`` for each shard index from the start, round robin; stop
        when it returns False (a budget spent) or after a network error. Return the
        ``TRANSIENT_ERRORS`` raised, in order (the last one a network error when the
        pass stopped early)."""
        errors: list[Exception] = []
        self.stopped = False
        self.errors = errors
        if count <= 0:
            return errors
        if self.rotate:
            self.start = (self.start + 1) % count
        start = self.start % count
        for k in range(count):
            i = (start + k) % count
            try:
                if step(i) is False:
                    break
            except TRANSIENT_ERRORS as exc:
                errors.append(exc)
                if isinstance(exc, NETWORK_ERRORS):
                    # the next pass starts after it (rotate adds one more)
                    self.start = i if self.rotate else (i + 1) % count
                    self.stopped = True
                    break
        return errors
