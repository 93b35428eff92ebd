"""Suspended runs that Redis's loss of a key would leave asleep for good.

A parent suspended in ``step.run_workflow(s)`` is woken by its children's
finishes (``notify_waiters`` in ``lua/_lib.lua``). A child whose record Redis
lost (its hash evicted under an evicting ``maxmemory-policy``, or deleted)
never finishes, so its parent stayed suspended for good, with nothing in the
logs. :func:`repair_suspended` reads a page of the suspended index of one
shard and sends it to ``recheck_waits.lua``, which wakes a run whose awaited
children in its shard are lost, failed or all finished (a lost child, or its
``run:<id>:awaits`` set lost: the children's finishes did not wake it), and puts
back into ``timers`` the wake-up time of a suspended run that has none there
(the ``timers`` key evicted or deleted: every sleeping run and every wait with
a deadline slept for good). For the runs it did not wake,
:func:`wake_parents_of_lost_children` reads a sample of each run's awaited
children (``run:<id>:awaits``) and whether their records exist, each on its own
shard (a child in another shard), and wakes the parent of a child that is gone
as a failed child's finish does (``kick_parent.lua``: fenced on the parent
being suspended and still awaiting that child). The woken parent reads its
children again; the lost one has no record, so its wait step raises
``RedflowError: child run ... no longer exists``, which fails the run or goes
to its handler.
:func:`rearm_leases` does the same for running runs and ``leases``
(``rearm_leases.lua``; the supervisor's reaper, a page a minute).
:func:`relist_runs` does it for the keys that list runs (a queue's ready and
scheduled sets, ``due-queues``, a workflow's waiting set and concurrency slots,
the status indexes, ``runs:created``, ``workflow-runs:<wf>``): it walks every
run record, a page a call, and puts back those missing from the key their
status says holds them (``relist_runs.lua``; the supervisor's relist duty).

Cost per call: one ``ZRANGE`` of at most :data:`PAGE` ids, one pipelined
``SRANDMEMBER`` per run read, one pipelined ``EXISTS`` per sampled child, one
``recheck_waits`` call (an ``HMGET`` and a ``ZSCORE`` per run, an ``HGET`` per
child read, at most 5,000; the runs' waits decoded, at most 1 MiB of them: a
page of parents of large fan-outs is looked at over several calls). The
supervisor's cron leader makes one call per shard each retention tick (30 s by
default), so a pass over 10,000 suspended runs takes 10 minutes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .codec import text
from .xshard import Runs, kick

__all__ = [
    "PAGE",
    "RELIST_PAGE",
    "SAMPLE",
    "Relisted",
    "rearm_leases",
    "relist_runs",
    "repair_suspended",
    "wake_parents_of_lost_children",
]

#: Suspended runs read per call.
PAGE = 500
#: Runs read per relist call (see :func:`relist_runs`).
RELIST_PAGE = 250
#: Awaited children sampled per suspended run per call (a fan-out of 5,000
#: children is looked at 20 at a time, at random).
SAMPLE = 20


def repair_suspended(
    runs: Runs, store: Any, offset: int, page: int = PAGE
) -> tuple[int, list[tuple[str, str]], list[str]]:
    """One page, from rank ``offset``, of ``store``'s (a shard's) suspended index;
    returns (the offset of the next page, 0 after the last one; the (parent, lost
    child) pairs whose parent this woke, child "" when woken by
    ``recheck_waits.lua`` for its children in this shard; the runs whose timer
    this re-armed)."""
    keys = store.keys
    ids = [
        text(x)
        for x in store.redis.zrange(keys.runs_status("suspended"), offset, offset + page - 1)
    ]
    if not ids:
        return 0, [], []
    rearmed, woken, looked = store.scripts.recheck_waits_part(ids)
    # a page whose waits are large (fan-outs) is looked at in part: the next call
    # goes on after the runs looked at (at least one, so that the pass moves on)
    looked = max(1, looked)
    done = set(woken)
    left = [run_id for run_id in ids[:looked] if run_id not in done]
    lost = [(run_id, "") for run_id in woken] + wake_parents_of_lost_children(runs, store, left)
    return (offset + looked if looked < len(ids) or len(ids) == page else 0), lost, rearmed


def wake_parents_of_lost_children(runs: Runs, store: Any, ids: list[str]) -> list[tuple[str, str]]:
    """Wake those of the suspended runs ``ids`` (of ``store``, a shard) that await a
    child whose record is gone; returns the (parent, lost child) pairs woken."""
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.srandmember(keys.run_awaits(run_id), SAMPLE)
    pairs = [
        (run_id, text(child))
        for run_id, got in zip(ids, pipe.execute(raise_on_error=False), strict=True)
        if isinstance(got, list)  # (an awaits key of another type: the key check names it)
        for child in got
    ]
    lost = [
        pair
        for pair, there in zip(pairs, _exist(runs, [c for _, c in pairs]), strict=True)
        if not there
    ]
    return [(parent, child) for parent, child in lost if kick(runs, parent, child, "failed")]


def _exist(runs: Runs, children: list[str]) -> list[bool]:
    """Whether each child's record exists, read on the shard its id names."""
    groups: dict[int, list[int]] = {}
    shards: dict[int, Any] = {}
    out = [True] * len(children)
    for i, child in enumerate(children):
        try:
            shard = runs.shard_of_run(child)
        except ValueError:  # not a run id (written by hand): not ours to judge
            continue
        shards[shard.index] = shard
        groups.setdefault(shard.index, []).append(i)
    for index, positions in groups.items():
        shard = shards[index]
        pipe = shard.redis.pipeline(transaction=False)
        for i in positions:
            pipe.exists(shard.keys.run(children[i]))
        for i, n in zip(positions, pipe.execute(), strict=True):
            out[i] = bool(n)
    return out


def rearm_leases(store: Any, offset: int, lease_ms: int, page: int = PAGE) -> tuple[int, list[str]]:
    """One page, from rank ``offset``, of ``store``'s running index: give each
    running run with no ``leases`` entry (the key lost) one of ``lease_ms`` from
    now; returns (the offset of the next page, 0 after the last; their ids)."""
    keys = store.keys
    ids = [
        text(x) for x in store.redis.zrange(keys.runs_status("running"), offset, offset + page - 1)
    ]
    if not ids:
        return 0, []
    reply = store.scripts.run(
        "rearm_leases", (keys.leases,), (keys.tag, lease_ms, *ids), retry=True
    )
    return (offset + len(ids) if len(ids) == page else 0), [text(x) for x in reply]


class Relisted(NamedTuple):
    """What one :func:`relist_runs` call did."""

    #: True when the call read the last page of a pass.
    done: bool
    #: Index entries read.
    read: int
    #: (run id, the key it was put back into), in the order done.
    put: list[tuple[str, str]]


def relist_runs(store: Any, page: int = RELIST_PAGE) -> Relisted:
    """One page of ``store``'s (a shard's) relist sweep, from the cursor kept in
    Redis (``relist``): the runs read are put back into the index keys their
    record says hold them and which lost them (``relist_runs.lua``)."""
    keys = store.keys
    done, read, flat = store.scripts.run(
        "relist_runs", (keys.relist,), (keys.tag, page), retry=True
    )
    put = [(text(flat[i]), text(flat[i + 1])) for i in range(0, len(flat), 2)]
    return Relisted(bool(done), int(read), put)
