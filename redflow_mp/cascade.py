"""Cancel cascade: canceling a run also cancels its unfinished children started by
``step.run_workflow`` / ``run_workflows`` (recorded in ``run:<id>:children`` at
enqueue; children of ``emit_workflow`` are not), recursively.

A library-level walk (each cancel is one ``cancel_run`` script, a chunk of them
per round trip), not a script: a tree of children has no bound. Called by
``Client.cancel_run`` and by the worker when a run ends ``canceled`` (its
children started after the cancel request was sent are caught there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .codec import text

__all__ = ["CHUNK", "cancel_children"]

# A bound on one walk: a runaway tree is cut here (the rest stays as it is).
MAX_CASCADE = 100_000
#: Children canceled in one round trip (one pipeline of cancel_run scripts).
CHUNK = 500

#: ``cancel_many(ids, why)``: per id, (its status after the cancel or None when
#: unknown or finished already, whether it has children of its own).
CancelMany = Callable[[list[str], str], list[tuple[str | None, bool]]]


def cancel_children(
    scan: Callable[[str], list[bytes]],
    cancel_many: CancelMany,
    run_id: str,
    reason: str | None,
) -> int:
    """Cancel the unfinished children of ``run_id`` (and theirs); returns how many
    cancels were sent. ``scan(parent)`` lists ``run:<parent>:children`` (in the
    parent's shard), ``cancel_many(ids, why)`` sends the ``cancel_run`` scripts of
    up to :data:`CHUNK` children at once (each on its child's shard: with
    ``shards > 1`` a child may live in another one) and says which have children.

    One cancel per round trip and a scan of every child cost 12.5 s for a parent
    with 100,000 children; a chunk's cancels now share a round trip, and only a
    child with children of its own is scanned."""
    why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
    stack = [run_id]
    seen = {run_id}
    sent = 0
    while stack and sent < MAX_CASCADE:
        parent = stack.pop()
        fresh: list[str] = []
        for raw in scan(parent):
            child = text(raw)
            if child not in seen:
                seen.add(child)
                fresh.append(child)
        for at in range(0, len(fresh), CHUNK):
            batch = fresh[at : at + CHUNK][: MAX_CASCADE - sent]
            if not batch:
                break
            results = cancel_many(batch, why)
            sent += len(batch)
            for child, (status, has_children) in zip(batch, results, strict=True):
                if status is not None and has_children:
                    stack.append(child)
    return sent


def positions_by_shard(ids: list[str], shard_of: Callable[[str], Any]) -> list[list[int]]:
    """The positions in ``ids`` grouped by the index of the shard ``shard_of`` names
    (one pipeline of cancels per group), in first-seen order."""
    groups: dict[int, list[int]] = {}
    for i, run_id in enumerate(ids):
        groups.setdefault(shard_of(run_id).index, []).append(i)
    return list(groups.values())
