"""Cancel cascade: canceling a run also cancels its unfinished children started by
``step.run_workflow`` / ``run_workflows`` (recorded in ``run:<id>:children`` at
enqueue; children of ``emit_workflow`` are not), recursively.

A library-level walk (each cancel is one ``cancel_run`` script), not a script:
a tree of children has no bound. Called by ``Client.cancel_run`` and by the
worker when a run ends ``canceled`` (its children started after the cancel
request was sent are caught there).
"""

from __future__ import annotations

from collections.abc import Callable

from .codec import text

__all__ = ["cancel_children"]

# A bound on one walk: a runaway tree is cut here (the rest stays as it is).
MAX_CASCADE = 100_000


def cancel_children(
    scan: Callable[[str], list[bytes]],
    cancel: Callable[[str, str], str | None],
    run_id: str,
    reason: str | None,
) -> int:
    """Cancel the unfinished children of ``run_id`` (and theirs); returns how many
    cancels were sent. ``scan(parent)`` lists ``run:<parent>:children`` (in the
    parent's shard), ``cancel(id, reason)`` is the ``cancel_run`` script (on the
    child's shard: with ``shards > 1`` a child may live in another one)."""
    why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
    stack = [run_id]
    seen = {run_id}
    sent = 0
    while stack and sent < MAX_CASCADE:
        parent = stack.pop()
        for raw in scan(parent):
            child = text(raw)
            if child in seen:
                continue
            seen.add(child)
            status = cancel(child, why)
            sent += 1
            if status is not None:
                stack.append(child)
    return sent
