"""The replacement of a workflow's cron entries by a registry sync, atomic against
the leader's fires.

A sync replaces entries when a cron changes: an edited expression, timezone or
input (a derived id changes with them), an explicit id whose schedule changed
(same id, new first fire time), and once at the upgrade of explicit ids holding
':' (``cron_id_for``). The sync used to read the entries and the server's time,
then remove the old entry and write the new one, with its first fire time
computed from that time, one round trip later: a leader that fired the old entry
in between (its fire time came meanwhile) left the new entry due at that same
fire time, and the workflow ran twice for it; and an old entry due but not fired
yet when the sync removed it lost that fire time.

Now the entries a workflow's sync replaces (``olds``: their stored definition
and next fire time, read before the server's time) and the first fire time of
each new entry (:func:`first_fire`) go to ``swap_crons.lua``, which applies
them only while every replaced entry still has the next fire time read; else
the sync reads and computes again (:func:`apply`, ``sync._sync_workflows``). So:

- a new entry never fires a fire time that a replaced entry of its workflow
  fired or skipped (one of its schedule before its next fire time, and up to the
  read's time or the fire time of its latest run or skip: ``cron:last``,
  ``cron:skipped``);
- a fire time a replaced entry was due at and had not fired is fired by the new
  entry when its schedule has it (once, at once);
- otherwise the new entry starts with its first fire time after the read.

A replaced entry's next fire time far ahead (written at a clock that ran ahead,
or by hand) holds the new entry back only past the times its runs fired: every
fire time of its schedule before it counted as handled, and the new entry waited
for it (up to a year) whatever had fired.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from .codec import text, whole_number
from .cron import CronDef, next_fire_ms
from .keys import cron_key

__all__ = ["ATTEMPTS", "Plan", "apply", "first_fire"]

log = logging.getLogger("redflow_mp.sync")

#: Times a sync reads a chunk again when a replaced entry changed under it.
ATTEMPTS = 20
#: Fire times of a new entry looked at past ones a replaced entry handled.
_STEPS = 64
#: Entries (replaced and written) a swap_crons call takes, about: a workflow's
#: group is never split (a workflow with more is alone in its call).
_BATCH = 128
#: The times (ms) a replaced entry's next fire time is taken from: 1970 to 9000.
_MIN_MS, _MAX_MS = 0, 221_845_392_000_000

_decoder = msgspec.json.Decoder(CronDef)

#: (the stored definition or None when unreadable, its next fire time or None,
#: the fire time of its latest run or skip, 0 when none is known)
Replaced = tuple[CronDef | None, float | None, int]
#: One workflow's group: (checks, removals, writes), as ``swap_crons`` takes it.
Group = tuple[list[tuple[str, str]], list[str], list[tuple[str, bytes, int]]]


def _fires_at(cdef: CronDef, at: int) -> bool | None:
    """Whether ``cdef``'s schedule has the fire time ``at``; None when unreadable."""
    try:
        return next_fire_ms(cdef.expression, cdef.timezone, at - 1) == at
    except ValueError:
        return None


def _handled(olds: Sequence[Replaced], at: int, now: int) -> bool:
    """Whether a replaced entry fired or passed the fire time ``at``: one of its
    schedule before its next fire time, and up to ``now`` or its latest run's or
    skip's fire time (a later one, before a next fire time far ahead, never came
    due: nothing fired it); an unreadable one: any up to now."""
    for cdef, score, latest in olds:
        if score is None or not at < score:
            continue
        has = _fires_at(cdef, at) if cdef is not None else None
        if (has and at <= max(now, latest)) or (has is None and at <= now):
            return True
    return False


def first_fire(expression: str, timezone: str, now: int, olds: Sequence[Replaced]) -> int:
    """The first fire time of a new entry of schedule ``expression``/``timezone``
    that replaces the entries ``olds`` of its workflow, whose next fire times (and
    latest runs' or skips' fire times) were read before the server's time ``now``:
    the earliest fire time a replaced entry
    was due at and had not fired, when this schedule has it and no other replaced
    entry handled it; else the first one after ``now`` that none handled."""
    # an absurd next fire time (a neighbour's or hand-made score out of croniter's
    # range): the leader fires none of that entry's times; it failed the sync
    olds = [(c, s, n) for c, s, n in olds if s is not None and _in_range(s)]
    due = sorted({math.floor(s) for _, s, _ in olds if s is not None and s <= now})
    for at in due:
        if next_fire_ms(expression, timezone, at - 1) == at and not _handled(olds, at, now):
            return at
    at = next_fire_ms(expression, timezone, now)
    for _ in range(_STEPS):
        if not _handled(olds, at, now):
            return at
        at = next_fire_ms(expression, timezone, at)
    # past every replaced entry's latest run or skip: none of them handled it
    last = max(min(math.ceil(s) - 1, n) for _, s, n in olds if s is not None)
    return next_fire_ms(expression, timezone, max(at, last))


def _in_range(score: float) -> bool:
    """Whether ``score`` is a time croniter computes from (years 1-9999 of ms)."""
    return _MIN_MS <= score <= _MAX_MS


def check_arg(score: float | None) -> str:
    """A next fire time as ``swap_crons`` compares it ('' = no entry)."""
    return "" if score is None else repr(float(score))


class Plan(NamedTuple):
    """One workflow's cron entries in a sync."""

    #: (cron id, definition json, its Cron, same schedule as stored, the next fire
    #: time kept: an unchanged entry's scheduled one, else None: to compute)
    entries: list[tuple[str, bytes, Any, bool, int | None]]
    #: the ids its metadata listed that it no longer has (and are its own)
    gone: list[str]
    #: the entries replaced: ``gone``, and the ids whose schedule changed
    replaced: list[str]


def apply(
    shard: Any, plans: list[Plan], stored: dict[str, Any], broken: set[str], force: bool = False
) -> set[int] | None:
    """Write the new entries of the plans that replace entries, and remove those,
    with ``swap_crons`` (atomic against the leader's fires); the indices of the
    plans written so (their MULTI writes leave out those entries), or None when
    an entry replaced changed since the read (fired, or another sync's): the
    caller reads all again. ``stored``: the definitions read (id -> json or None);
    ``broken``: the cron keys of another type (with ``cron:def`` or ``cron:next``
    among them nothing fires: the caller writes as before); ``force``: apply every
    group whatever changed since the read (the sync's last try: a start-up never
    fails for a leader firing meanwhile; such an entry may fire a time twice)."""
    keys = shard.keys
    todo = [i for i, p in enumerate(plans) if p.replaced]
    if not todo or keys.cron_def in broken or keys.cron_next in broken:
        return set()
    owners: set[int] = set()
    refused = False
    # In batches, each read right before its swap: the fire times computed
    # between the two (croniter, 1-3 calls a new entry) make the window in which
    # a leader's fire refuses the group; a whole chunk (1,000 entries) in one
    # spanned seconds, every-second entries fired within it on each pass, and
    # the sync failed after ATTEMPTS passes (a supervisor's start).
    batch: list[int] = []
    weight = 0
    for i in todo:
        batch.append(i)
        weight += len(plans[i].replaced) + len(plans[i].entries)
        if weight >= _BATCH or i == todo[-1]:
            done = _apply_batch(shard, plans, batch, stored, force)
            if done is None:
                refused = True
            else:
                owners |= done
            batch, weight = [], 0
    return None if refused else owners


def _apply_batch(
    shard: Any, plans: list[Plan], todo: list[int], stored: dict[str, Any], force: bool
) -> set[int] | None:
    """:func:`apply` of the plans ``todo``: one read of their scores and time,
    their first fire times, one ``swap_crons``; None when a group was refused
    (those applied stay applied: the caller's next read keeps them)."""
    keys = shard.keys
    ids = sorted({cid for i in todo for cid in plans[i].replaced})
    # the scores first, then the time: what an entry fired before its score was
    # read lies before that time (and its latest run and skip with it: a fire
    # after the score's read changes the score, and the swap is refused)
    with shard.redis.pipeline(transaction=False) as read:
        read.zmscore(keys.cron_next, ids)
        read.hmget(keys.cron_last, ids)
        read.hmget(keys.cron_skipped, ids)
        read.time()
        scores, lasts, skips, (seconds, micros) = read.execute(raise_on_error=False)
    if isinstance(scores, Exception):
        raise scores
    now = int(seconds) * 1000 + int(micros) // 1000
    score_of: dict[str, float | None] = dict(zip(ids, scores, strict=True))
    latest = _latest_fires(shard, ids, lasts, skips)
    groups: list[Group] = []
    owners: list[int] = []
    for i in todo:
        plan = plans[i]
        olds = [
            (_definition(stored.get(cid)), score_of[cid], latest[cid])
            for cid in plan.replaced
            if stored.get(cid) is not None or score_of[cid] is not None
        ]
        if not olds:
            continue  # nothing left of them to fire: written as a new entry
        writes = [
            (cid, record, first_fire(cron.expression, cron.timezone, now, olds))
            for cid, record, cron, _, kept in plan.entries
            if kept is None
        ]
        checks = [] if force else [(cid, check_arg(score_of[cid])) for cid in plan.replaced]
        groups.append((checks, plan.gone, writes))
        owners.append(i)
    if groups and shard.scripts.swap_crons(groups):
        return None
    return set(owners)


def _latest_fires(shard: Any, ids: list[str], lasts: Any, skips: Any) -> dict[str, int]:
    """Id -> the fire time of the entry's latest run (``cron:last``: the run's
    idempotency key ends with it) or latest skip (``cron:skipped``), 0 when none
    is known (keys of another type, a run gone: read as none); ``lasts`` and
    ``skips``: the HMGET replies of ``ids``. One more round trip when an entry
    has a latest run."""
    latest = dict.fromkeys(ids, 0)
    for cid, skip in zip(ids, [] if isinstance(skips, Exception) else skips, strict=False):
        latest[cid] = max(latest[cid], _whole_ms(skip))
    runs = [] if isinstance(lasts, Exception) else lasts
    named = [(cid, text(run_id)) for cid, run_id in zip(ids, runs, strict=False) if run_id]
    if not named:
        return latest
    with shard.redis.pipeline(transaction=False) as read:
        for _, run_id in named:
            read.hget(shard.keys.run(run_id), "idempotencyKey")
        replies = read.execute(raise_on_error=False)
    for (cid, _), key in zip(named, replies, strict=True):
        prefix = cron_key(cid, 0)[:-1]
        if isinstance(key, (bytes, str)) and text(key).startswith(prefix):
            latest[cid] = max(latest[cid], _whole_ms(text(key)[len(prefix) :]))
    return latest


def _whole_ms(raw: Any) -> int:
    """A fire time (ms) as stored, 0 when it is none: ASCII digits only (a
    neighbour's "²" passes ``str.isdigit()`` and failed ``int()``: a
    ``ValueError`` from every sync replacing that entry)."""
    return whole_number(raw, 18) or 0


def _definition(raw: Any) -> CronDef | None:
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def cron_keys(keys: Any) -> list[tuple[str, str]]:
    """The cron keys a sync writes, with the type each must have."""
    return [
        (keys.cron_def, "hash"),
        (keys.cron_next, "zset"),
        (keys.cron_last, "hash"),
        (keys.cron_skipped, "hash"),
    ]


def broken_cron_keys(keys: Any, kinds: list[Any]) -> set[str]:
    """The cron keys of another type (``kinds``: their TYPE replies, in
    :func:`cron_keys` order), each named in an ERROR line: a neighbour's key on
    the same Redis must not stop a supervisor's start (the sync raised
    WRONGTYPE); the cron writes that need it are left out, the rest is synced."""
    broken = set()
    for (key, want), kind in zip(cron_keys(keys), kinds, strict=True):
        found = text(kind)
        if found in ("none", want):
            continue
        broken.add(key)
        log.error(
            "cron key %s holds a %s, not a %s (written by hand or by another program?): "
            "the cron entries it holds are not written; delete or rename it",
            key,
            found,
            want,
        )
    return broken


def remove_cron_entries(pipe: Any, keys: Any, ids: list[str], broken: set[str]) -> None:
    """Queue the removal of the cron entries ``ids`` from the cron keys not ``broken``."""
    if keys.cron_def not in broken:
        pipe.hdel(keys.cron_def, *ids)
    if keys.cron_next not in broken:
        pipe.zrem(keys.cron_next, *ids)
    if keys.cron_last not in broken:
        pipe.hdel(keys.cron_last, *ids)
    if keys.cron_skipped not in broken:
        pipe.hdel(keys.cron_skipped, *ids)


def own_cron_ids(name: str, ids: list[str], stored: list[Any]) -> list[str]:
    """The ids of ``ids`` whose stored definition (``stored``, in order) is not another
    workflow's: ids of before cron_id_for's change could name two workflows' crons
    alike, and the withdrawal of one removed the other's entry."""
    own = []
    for cid, raw in zip(ids, stored, strict=True):
        try:
            theirs = raw is not None and _decoder.decode(raw).workflow != name
        except (msgspec.DecodeError, msgspec.ValidationError):
            theirs = False
        if not theirs:
            own.append(cid)
    return own


def same_schedule(raw: Any, record: CronDef) -> bool:
    """Whether the stored definition ``raw`` fires on ``record``'s schedule (its
    expression and timezone); an unreadable one does not."""
    if raw is None:
        return True  # a new entry: ZADD NX writes its first fire time
    try:
        old = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return (old.expression, old.timezone) == (record.expression, record.timezone)
