"""Parents and children in different shards (``shards > 1``; ``shards.py``).

A script touches one shard, so where a parent and a child of ``run_workflow`` /
``run_workflows`` live in different shards, three things the in-shard scripts
do at once are done in steps:

- the cancel cascade's record, ``run:<parent>:children``, is written by a
  separate ``SADD`` to the parent's shard right after the child's enqueue (the
  enqueue in the child's shard is sent unlinked); a process that dies in
  between leaves that child out of a later cancel cascade;
- the child's finish reaches the parent by a **kick**: the process that
  finished the child (a worker, :meth:`Client.cancel_run`) calls
  ``kick_parent.lua`` on the parent's shard, which records the finish in
  ``run:<parent>:kicked`` and wakes a suspended parent as an in-shard finish
  does (a failed or canceled child wakes it at once, the last succeeded one
  too). ``suspend_run.lua`` counts a kicked child as finished, so a kick that
  arrives before the parent suspends is not missed;
- a finisher that dies between the finish and its kick: a parent suspended on
  children of other shards also gets a timer :data:`RECHECK_MS` ahead; woken,
  it reads its children again (from their shards) and suspends again while
  some still run.

- a parent that found a child of another shard by its idempotency key is
  listed in ``run:<child>:parents`` by a separate ``SADD`` in the child's
  shard (:func:`link_sharer`); retention keeps a finished child for a parent in
  another shard by asking that shard (``maintenance.sweep_backlog``).

With ``shards = 1`` none of this runs.
"""

from __future__ import annotations

from typing import Any, Protocol

from .codec import text
from .options import RunOptions
from .shardset import Shard


class Runs(Protocol):
    """What this module needs of :class:`~redflow_mp.runs.Runs` (no import circle)."""

    @property
    def shard_count(self) -> int: ...

    def shard_of_run(self, run_id: str) -> Shard: ...


__all__ = [
    "RECHECK_MS",
    "crosses",
    "kick",
    "kick_parent_of",
    "link_sharer",
    "record_children",
]

#: How often a run suspended on children in other shards looks at them again
#: (``XSHARD_RECHECK_MS`` in ``lua/_lib.lua``), in ms.
RECHECK_MS = 30_000

_TERMINAL = ("succeeded", "failed", "canceled")


def crosses(runs: Runs, options: RunOptions, shard: Shard) -> bool:
    """True when ``options`` start a linked child (``run_workflow``) in ``shard``
    whose parent lives in another shard."""
    parent = options.parent_run_id
    if not parent or not options.linked:
        return False
    return runs.shard_of_run(parent).index != shard.index


def record_children(runs: Runs, parent: str, children: list[str]) -> None:
    """Add ``children`` to the parent's cancel-cascade record (its shard)."""
    shard = runs.shard_of_run(parent)
    shard.redis.sadd(shard.keys.run_children(parent), *children)


def link_sharer(shard: Shard, parent: str, found: list[str]) -> None:
    """Record ``parent`` in ``run:<id>:parents`` (the runs' shard) for each run of
    ``found``: existing runs it found by their idempotency key and awaits, as
    ``link_parent`` in ``_lib_runs.lua`` does in one shard (the enqueue of a child
    of another shard's parent is sent unlinked). Retention keeps a finished
    child while a parent listed there awaits it (``sweep_runs.lua``); without
    this, a sharer in another shard was not listed and its child was removed
    while it waited. A run removed meanwhile by retention leaves no set behind
    (read after the write: retention's removal takes the set with it)."""
    if not found:
        return
    with shard.redis.pipeline(transaction=False) as pipe:
        for run_id in found:
            pipe.hget(shard.keys.run(run_id), "parentRunId")
        owners = pipe.execute(raise_on_error=False)
    # not the parent that started it (a replay finds its own children by key)
    found = [
        r
        for r, o in zip(found, owners, strict=True)
        if not isinstance(o, Exception) and (o is None or text(o) != parent)
    ]
    if not found:
        return
    with shard.redis.pipeline(transaction=False) as pipe:
        for run_id in found:
            pipe.sadd(shard.keys.run_parents(run_id), parent)
            pipe.exists(shard.keys.run(run_id))
        replies = pipe.execute(raise_on_error=False)
    gone = [r for i, r in enumerate(found) if replies[2 * i + 1] == 0]
    if gone:
        shard.redis.delete(*(shard.keys.run_parents(r) for r in gone))


def kick(runs: Runs, parent: str, child: str, status: str) -> bool:
    """Tell the parent's shard that ``child`` finished with ``status``; True when
    that woke the parent. Resend-safe."""
    if status not in _TERMINAL:
        return False
    shard = runs.shard_of_run(parent)
    reply: Any = shard.scripts.run(
        "kick_parent",
        (shard.keys.run(parent),),
        (shard.keys.tag, parent, child, status),
        retry=True,
    )
    return int(reply) == 1


def kick_parent(runs: Runs, parent: str | None, child: str, status: str | None) -> bool:
    """:func:`kick` when ``child`` (finished with ``status``) has a ``parent`` in
    another shard; nothing otherwise."""
    if not parent or status not in _TERMINAL or runs.shard_count == 1:
        return False
    try:
        if runs.shard_of_run(parent).index == runs.shard_of_run(child).index:
            return False
    except ValueError:  # a parent id given by hand (run_by_name(parent_run_id=...))
        return False
    assert status is not None
    return kick(runs, parent, child, status)


def kick_parent_of(runs: Runs, child: str, status: str | None) -> bool:
    """:func:`kick_parent` for a child whose parent is not at hand (one read)."""
    if runs.shard_count == 1 or status not in _TERMINAL:
        return False
    shard = runs.shard_of_run(child)
    parent = shard.redis.hget(shard.keys.run(child), "parentRunId")
    return kick_parent(runs, text(parent) if parent else None, child, status)
