"""One cron tick of one shard: fire the due entries (leader only, fenced by its token).

:func:`cron_tick` reads the due entries (``due_crons``), fires each with
``fire_cron`` under a deterministic idempotency key (``cron_key``), bounded by a
count and a time budget, and says when the next entry is due. An entry this host
cannot read is left in place for a leader that can (:class:`UnreadableCrons`
names it); a garbled one is removed. :func:`run_id_maker` makes the ids of the
runs a shard's fires enqueue.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .cron import CronDef, next_fire_ms
from .errors import WrongTypeError
from .ids import new_run_id
from .keys import cron_key
from .store import Store, stores

__all__ = [
    "CRON_IDEMPOTENCY_TTL_MS",
    "CRON_TICK_BUDGET_S",
    "CronTick",
    "UnreadableCrons",
    "cron_tick",
    "run_id_maker",
]

# The logger of maintenance.py, where this code lived: log configurations and
# filters that name "redflow_mp.maintenance" keep seeing its lines.
log = logging.getLogger("redflow_mp.maintenance")

_cron_decoder = msgspec.json.Decoder(CronDef)
#: Full batches (of ``limit`` entries) of due entries this host cannot read
#: that one tick looks past.
_PASS_OVER_ROUNDS = 10
_UNREADABLE_MAX = 10_000
# A cron fire key only has to outlive the race of two leaders over one fire time
# (cron:next fences the rest); with the finish rule of the idempotency keys, a
# per-second cron keeps about 600 of them.
CRON_IDEMPOTENCY_TTL_MS = 10 * 60 * 1000


@dataclass(slots=True)
class CronTick:
    """What one cron tick did, and when the next entry is due (epoch ms, Redis clock);
    ``more``: the tick read its limit of due entries, so more may be due now."""

    fired: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: (id, why) of each due entry this host cannot read, left in place for a
    #: leader that can (the caller names them: :class:`UnreadableCrons`)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    now_ms: int = 0
    next_due_ms: int | None = None
    more: bool = False


def _fire(
    client: Store,
    leader_token: str,
    cron_id: str,
    fire_ms: int,
    following: int,
    make_id: Callable[[], str],
    cdef: CronDef,
    raw: bytes,
) -> tuple[int, str]:
    """``fire_cron`` of one due entry: (its reply code, the run id). Fenced by the
    definition read (``raw``): one a sync replaced since is not fired."""
    return client.scripts.fire_cron(
        leader_token,
        cron_id,
        fire_ms,
        following,
        make_id(),
        cdef.workflow,
        cdef.queue,
        cdef.input_json,
        cdef.max_attempts,
        cron_key(cron_id, fire_ms),
        CRON_IDEMPOTENCY_TTL_MS,
        cdef.max_concurrency,
        cdef.timeout_ms or None,
        cdef.priority,
        hashlib.sha1(raw, usedforsecurity=False).hexdigest(),
    )


#: How long one :func:`cron_tick` goes on firing entries (one round trip each)
#: before it hands the supervisor's loop back with ``more``. It went on for its
#: 100 entries, 1-3 s on a loaded machine with 2,000 crons due: scrapes waited,
#: and the reaper's stall guard held reaping, taking the busy loop for a stop.
CRON_TICK_BUDGET_S = 0.1


def cron_tick(
    client: Store,
    leader_token: str,
    limit: int = 100,
    make_id: Callable[[], str] = new_run_id,
    budget_s: float = CRON_TICK_BUDGET_S,
) -> CronTick:
    """Enqueue the runs of every due cron entry of one shard (leader only; fenced
    by the token); ``make_id`` makes the id of a new run (one naming the shard).
    At most ``limit`` entries, and none after ``budget_s`` once one was fired
    (entries passed over without a call never end a tick: it always moves on):
    ``more`` says when either stopped the tick, and the caller should tick again
    at once (``earliest`` is then a later fire time)."""
    deadline = time.monotonic() + budget_s
    now, earliest, due, more = _due_batch(client, limit)
    tick = CronTick(now_ms=now, next_due_ms=earliest, more=more)
    called = False
    for cron_id, fire_ms, raw in due:
        if called and time.monotonic() >= deadline:
            tick.more = True  # the rest stay due: the next tick reads them first
            break
        if not raw:
            client.redis.zrem(client.keys.cron_next, cron_id)
            continue
        if fire_ms is None:  # -inf, written by hand: no fire time to key a run by
            log.error("cron %s has no next fire time (-inf); removing it", cron_id)
            client.redis.zrem(client.keys.cron_next, cron_id)
            continue
        try:
            cdef, following = _readable(raw, now, fire_ms)
        except _Garbled as exc:
            log.error("cron %s has an unreadable definition (%s); removing it", cron_id, exc)
            client.redis.zrem(client.keys.cron_next, cron_id)
            continue
        except ValueError as exc:
            # Valid JSON that this host cannot read (a timezone its tzdata lacks, an
            # expression of a newer croniter): another host may, so the entry stays
            # (removing it fired it never: the registry duty wrote it back, the
            # leader removed it again).
            tick.unreadable.append((cron_id, str(exc)))
            continue
        try:
            called = True
            code, run_id = _fire(
                client, leader_token, cron_id, fire_ms, following, make_id, cdef, raw
            )
        except WrongTypeError as exc:
            # A key its run needs (its queue's ready set, its workflow's gate) of
            # another type: this fire time passes, as at max_concurrency; the
            # other entries go on.
            log.error("cron %s skipped: %s", cron_id, exc)
            tick.skipped.append(cron_id)
            code, run_id = 0, ""
        if code == -1:
            tick.more = False  # not the leader (any more)
            break
        if code == -3:
            # replaced by a sync since the read: the next tick fires the new one
            tick.more = True
            continue
        _count(tick, code, run_id, cron_id, cdef.workflow)
        if tick.next_due_ms is None or following < tick.next_due_ms:
            tick.next_due_ms = following
    return tick


def _due_batch(
    client: Store, limit: int
) -> tuple[int, int | None, list[tuple[str, int | None, bytes]], bool]:
    """``due_crons`` (now, earliest, due) and whether more may be due, past full
    batches of entries this host cannot read: they stay due, in front of the
    others, which would never be read otherwise."""
    now, earliest, due = client.scripts.due_crons(limit)
    passed = 0
    # Counted in entries, not replies: a reply cut by its size (DUE_CRON_BYTES)
    # may hold one entry, and 10 such replies hid every entry due after them.
    while passed < _PASS_OVER_ROUNDS * limit:
        if not _cut(limit, now, earliest, due) or not _all_unreadable(due, now):
            return now, earliest, due, _cut(limit, now, earliest, due)
        passed += len(due)
        now, earliest, due = client.scripts.due_crons(limit, passed)
    # still a full unreadable batch: not "more" (the duty would tick again at once)
    return now, earliest, due, _cut(limit, now, earliest, due) and not _all_unreadable(due, now)


def _cut(limit: int, now: int, earliest: int | None, due: list[Any]) -> bool:
    """Whether entries are still due after this batch: it is full, or the size
    bound of its definitions ended it (its earliest is then due now)."""
    return len(due) >= limit or (earliest is not None and earliest <= now)


def _count(tick: CronTick, code: int, run_id: str, cron_id: str, workflow: str) -> None:
    """Count one ``fire_cron`` reply (but -1, not the leader) in ``tick``."""
    if code == 1:
        tick.fired.append(run_id)
    elif code == 2:
        tick.skipped.append(cron_id)
        log.info("cron %s skipped: workflow %r is at max_concurrency", cron_id, workflow)
    elif code == 3:
        tick.duplicates += 1
    elif code == 4:
        tick.skipped.append(cron_id)
        log.info("cron %s skipped: its previous run %s has not started yet", cron_id, run_id)


class _Garbled(ValueError):
    """A cron definition that is no JSON (no host can read it)."""


def _readable(raw: bytes, now: int, fire_ms: int) -> tuple[CronDef, int]:
    """An entry's definition and its fire time after this one; :class:`_Garbled`
    when it is no JSON, ValueError when this host cannot read it."""
    try:
        cdef = _cron_decoder.decode(raw)
    except msgspec.ValidationError as exc:  # JSON of another shape (another version's)
        raise ValueError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _Garbled(str(exc)) from None
    return cdef, next_fire_ms(cdef.expression, cdef.timezone, max(now, fire_ms))


def _all_unreadable(due: list[tuple[str, int | None, bytes]], now: int) -> bool:
    for _, fire_ms, raw in due:
        if not raw or fire_ms is None:
            return False
        try:
            _readable(raw, now, fire_ms)
        except _Garbled:
            return False
        except ValueError:
            continue
        return False
    return True


class UnreadableCrons:
    """Names each cron entry a leader cannot read in an ERROR line, at most once per
    ``every_s`` seconds (of the caller's clock) per entry: the entry stays due on
    every tick, and nothing else would say why it does not fire here."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._named: dict[str, float] = {}

    def report(self, entries: Sequence[tuple[str, str]], now: float) -> None:
        if len(self._named) > _UNREADABLE_MAX:
            self._named.clear()
        for cron_id, why in entries:
            last = self._named.get(cron_id)
            if last is not None and now - last < self.every_s:
                continue
            self._named[cron_id] = now
            log.error(
                "cron %s cannot be read on this host (%s): not fired here, left in place "
                "for a leader that can read it (upgrade croniter/tzdata here, or fix it)",
                cron_id,
                why,
            )


def run_id_maker(client: Any, shard: int) -> Callable[[], str]:
    """What makes the id of a run enqueued in shard ``shard`` (cron fires): a fresh
    ULID, with the shard's ``~<k>`` suffix when there are several shards."""
    views = stores(client)
    if len(views) == 1:
        return new_run_id
    view: Any = views[shard]
    return lambda: str(view.run_id(new_run_id()))
