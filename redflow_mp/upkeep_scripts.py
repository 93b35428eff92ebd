"""The upkeep scripts' calls (retention, reindexing, idle queue names, rate
re-planning, the leader's crons), mixed into :class:`~redflow_mp.scripts.Scripts`: the duties of
``maintenance.py`` and the registry sync call them, never a worker's hot path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .codec import text
from .keys import Keys, cron_key

__all__ = ["DUE_CRON_BYTES", "UpkeepCalls"]

#: Bytes of cron definitions one ``due_crons`` reply holds (at least one). A
#: definition holds its cron's input, up to ``max_payload_bytes`` (8 MiB): a
#: batch of 100 due entries was one reply of up to 800 MiB, held by Redis and the
#: leader at once.
DUE_CRON_BYTES = 4 << 20


class UpkeepCalls:
    """Typed calls of the upkeep scripts; needs the host's ``run`` (see Scripts)."""

    keys: Keys
    _tag: str
    #: This shard's place among the client's shards (set by shardset.py): a
    #: retention call names the children it keeps for a parent in another shard.
    shard_count = 1
    shard_index = 0

    def run(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], *, retry: bool) -> Any:
        raise NotImplementedError

    def sweep(self, retention_ms: int, batch: int) -> int:
        """One retention call; returns the runs removed."""
        return self.sweep_step(retention_ms, batch)[0]

    def sweep_step(self, retention_ms: int, batch: int) -> tuple[int, bool]:
        """One retention call: (runs removed, more to do now: a full batch, or the
        call's budget of event lists ran out)."""
        removed, more, _ = self.sweep_call(retention_ms, batch)
        return removed, more

    def sweep_call(
        self, retention_ms: int, batch: int, released: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, bool, list[tuple[str, str]]]:
        """:meth:`sweep_step`, and the (child, parent) pairs it could not decide: a
        finished child kept for a parent in another shard (``shards > 1``), for
        the caller to ask there. ``released``: such pairs found decided (the
        parent finished, gone or not awaiting the child), whose children this
        call removes unless another parent still awaits them
        (``maintenance.sweep_backlog``)."""
        args: list[Any] = [self.keys.tag, retention_ms, batch]
        if self.shard_count > 1:
            args += [self.shard_count, self.shard_index]
            for child, parent in released:
                args += [child, parent]
        reply = self.run("sweep_runs", (self.keys.runs_created,), tuple(args), retry=True)
        tail = [text(x) for x in reply[2:]]
        pairs = [(tail[i], tail[i + 1]) for i in range(0, len(tail) - 1, 2)]
        return int(reply[0]), int(reply[1]) == 1, pairs

    def reindex(self, batch: int, offset: int = 0) -> tuple[int, int, int]:
        """Put up to ``batch`` runs of ``runs:unindexed`` (from the ``offset``-th on)
        back into their status index where it is a sorted set again: (runs put
        back, entries left because their index still is not, entries read)."""
        reply = self.run(
            "reindex_runs", (self.keys.runs_unindexed,), (self.keys.tag, batch, offset), retry=True
        )
        return int(reply[0]), int(reply[1]), int(reply[2])

    def forget_queues(self, candidates: list[str], served: list[str]) -> list[str]:
        """Drop the idle ``candidates`` (not in ``served``, nothing ready or
        scheduled) from the ``queues`` set; returns the names dropped."""
        if not candidates:
            return []
        reply = self.run(
            "forget_queues",
            (self.keys.queues,),
            (self.keys.tag, len(served), *served, *candidates),
            retry=True,
        )
        return [text(x) for x in reply]

    def adopt_runs(self, batch: int, offset: int = 0) -> tuple[int, int, int]:
        """Move the runs of ``fallback-runs`` (on ``default`` for want of their
        workflow's metadata) whose workflow is registered now to its queue, at most
        ``batch`` entries from the ``offset``-th on (adopt_runs.lua). Returns (runs
        moved, entries kept: their workflow is not registered, entries read)."""
        reply = self.run(
            "adopt_runs", (self.keys.fallback_runs,), (self.keys.tag, batch, offset), retry=True
        )
        return int(reply[0]), int(reply[1]), int(reply[2])

    def replan_rate(self, workflow: str, batch: int = 100) -> tuple[int, bool]:
        """The rate limit of ``workflow`` changed: put the runs waiting on a start
        reserved under the old one back in their ready sets (at most ``batch`` log
        entries per call). Returns (runs put back, more to do: call again)."""
        reply = self.run(
            "replan_rate", (self.keys.rate(workflow),), (self.keys.tag, workflow, batch), retry=True
        )
        return int(reply[0]), int(reply[1]) == 1

    def due_crons(
        self, limit: int, offset: int = 0, max_bytes: int = DUE_CRON_BYTES
    ) -> tuple[int, int | None, list[tuple[str, int | None, bytes]]]:
        """(server ms, earliest later fire time or None, due (id, fire ms, definition)),
        the due entries from the ``offset``-th on, their definitions ``max_bytes``
        at most (at least one): when that cut the batch, earliest is the fire time
        of the first entry left out (due now). A fire time that is no number of
        ms (``-inf``, written by hand) is None; ``+inf`` as the earliest is None too
        (nothing will be due)."""
        reply = self.run(
            "due_crons",
            (self.keys.cron_next, self.keys.cron_def),
            (self._tag, limit, offset, max_bytes),
            retry=True,
        )
        now = int(reply[0])
        earliest = _finite_ms(reply[1]) if reply[1] not in (-1, b"-1") else None
        due = [
            (text(reply[i]), _finite_ms(reply[i + 1]), reply[i + 2])
            for i in range(2, len(reply), 3)
        ]
        return now, earliest, due

    def fire_cron(
        self,
        leader_token: str,
        cron_id: str,
        fire_ms: int,
        next_ms: int,
        run_id: str,
        workflow: str,
        queue: str,
        input_json: bytes | str,
        max_attempts: int,
        idempotency_key: str,
        idempotency_ttl_ms: int,
        max_concurrency: int,
        timeout_ms: int | None,
        priority: int = 0,
        definition_sha1: str = "",
    ) -> tuple[int, str]:
        """Enqueue the run of one due cron fire time (fire_cron.lua: its reply
        codes); ``definition_sha1``: the SHA1 hex of the ``cron:def`` value read,
        which must still be stored ('' = not checked)."""
        reply = self.run(
            "fire_cron",
            (self.keys.lock_cron,),
            (
                self._tag,
                leader_token,
                cron_id,
                fire_ms,
                next_ms,
                run_id,
                workflow,
                queue,
                input_json,
                max_attempts,
                idempotency_key,
                idempotency_ttl_ms,
                max_concurrency,
                "" if timeout_ms is None else timeout_ms,
                priority,
                definition_sha1,
            ),
            retry=True,
        )
        return int(reply[0]), text(reply[1])

    def swap_crons(
        self,
        groups: Sequence[tuple[list[tuple[str, str]], list[str], list[tuple[str, bytes, int]]]],
    ) -> list[int]:
        """Replace cron entries (a registry sync, ``cronswap.py``): each group (the
        checks: cron id and its next fire time as read, '' for none; the ids
        removed; the entries written: id, definition, first fire time) is applied
        only while every checked entry still has that fire time. Returns the
        indices of the groups not applied (read again and computed again)."""
        args: list[Any] = [self._tag]
        for checks, removals, writes in groups:
            args += (len(checks), len(removals), len(writes))
            for pair in checks:
                args += pair
            args += removals
            for triple in writes:
                args += triple
        reply = self.run(
            "swap_crons", (self.keys.cron_next, self.keys.cron_def), tuple(args), retry=True
        )
        return [int(x) for x in reply]

    def rewind_crons(
        self, leader_token: str, pairs: list[tuple[str, int]] | list[tuple[str, int, str]]
    ) -> list[str] | None:
        """Move each cron entry of ``pairs`` (cron id, the first fire time of its
        schedule after the server time the caller read, and its workflow if known)
        earlier to that time when its next fire time lies beyond it (written while
        the Redis clock ran ahead) and that time was not fired already (before the
        first fire at the clock that was ahead: the entry's runs in the workflow's
        index; without the workflow, after its latest run's fire time only) nor
        skipped (the entry's latest skipped fire time, ``cron:skipped``);
        returns the ids moved, or None when this is not the leader. One script
        call judges the entries up to its budget of runs read (rewind_crons.lua:
        a page in one call read up to 40,000); the rest go in the next call."""
        groups: list[Any] = []
        for cron_id, fire_ms, *rest in pairs:
            workflow = rest[0] if rest else ""
            prefix = cron_key(cron_id, 0)[:-1] if workflow else ""
            groups.append((cron_id, fire_ms, workflow, prefix))
        moved: list[str] = []
        while groups:
            args: list[Any] = [self._tag, leader_token]
            for group in groups:
                args += group
            reply = self.run(
                "rewind_crons", (self.keys.lock_cron, self.keys.cron_next), tuple(args), retry=True
            )
            if not isinstance(reply, list):
                return None
            judged = max(int(reply[0]), 1)
            moved += [text(x) for x in reply[1:]]
            groups = groups[judged:]
        return moved


def _finite_ms(score: Any) -> int | None:
    """A ZSET score as whole ms, rounded down as fire_cron.lua rounds it (a score
    written by hand may hold a fraction); None for an infinite one (an int of it
    raises)."""
    value = float(score)
    return math.floor(value) if math.isfinite(value) else None
