"""Maintenance duties as plain functions over the scripts: promote, reap, sweep,
forget idle queues, cron.

The supervisor's parent calls these from its loop (promoter every
``promoter_interval_ms``, reaper every ``reaper_interval_ms``, retention
sweep and queue forgetting, and the cron tick while it holds the leader lock);
a standalone :class:`~redflow_mp.worker.Worker` with ``maintenance=True`` calls
the first two while idle. All of them are idempotent and safe to run from
several hosts at once, except the cron tick, which is fenced by the leader
token. Each costs time proportional to the work that is due (bounded per
call), never to the number of runs in flight or queues known. A host also
announces the queues it serves and rings their bells (wakes blocked workers)
through here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import redis
from redis.exceptions import LockError

from .codec import text
from .cron import CronDef, next_fire_ms
from .errors import TRANSIENT_ERRORS, WrongTypeError
from .ids import new_run_id, new_token
from .keys import Keys, cron_key
from .queries import shard_views
from .scripts import Scripts

__all__ = [
    "BATCH",
    "MAX_CALLS",
    "CronTick",
    "LeaderLock",
    "StallGuard",
    "Store",
    "UnreadableCrons",
    "announce_queues",
    "cron_tick",
    "forget_idle_queues",
    "promote_due",
    "reap_expired",
    "reindex_unindexed",
    "ring_bells",
    "stores",
    "sweep_backlog",
    "sweep_retention",
    "wake_due",
]

log = logging.getLogger(__name__)


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


_cron_decoder = msgspec.json.Decoder(CronDef)
#: Full batches of due entries this host cannot read that one tick looks past.
_PASS_OVER_ROUNDS = 10
_UNREADABLE_MAX = 10_000
# A cron fire key only has to outlive the race of two leaders over one fire time
# (cron:next fences the rest); with the finish rule of the idempotency keys, a
# per-second cron keeps about 600 of them.
CRON_IDEMPOTENCY_TTL_MS = 10 * 60 * 1000


#: Runs per script call of the promoter, timers and reaper: each call ~1-3 ms of
#: Redis time at a million runs (benchmarks/maintenance_scale.py: 500 promoted a
#: call took 4.6 ms on average and up to 16 ms; 200 reaped, 4 ms and up to 11 ms).
#: A tick makes up to MAX_CALLS of them (10,000 runs), then the caller comes back.
BATCH = 100
MAX_CALLS = 100


def promote_due(
    client: Store, batch: int = BATCH, max_calls: int = MAX_CALLS
) -> tuple[int, int | None]:
    """Move due scheduled runs to ready; returns (promoted, earliest remaining due ms).
    Given a client with several shards, does each shard in turn."""
    views = stores(client)
    if len(views) > 1:
        parts = [promote_due(v, batch, max_calls) for v in views]
        return sum(p[0] for p in parts), _earliest(p[1] for p in parts)
    total = 0
    earliest: int | None = None
    for _ in range(max_calls):
        promoted, earliest, more = client.scripts.promote(batch)
        total += promoted
        if not more:
            break
    return total, earliest


def wake_due(
    client: Store, batch: int = BATCH, max_calls: int = MAX_CALLS
) -> tuple[list[int], int | None]:
    """Wake the suspended runs whose wake-up time came (sleeps, wait deadlines);
    returns (lateness ms of each run woken, earliest remaining wake-up ms); every
    shard of a client with several."""
    views = stores(client)
    if len(views) > 1:
        each = [wake_due(v, batch, max_calls) for v in views]
        return [ms for w in each for ms in w[0]], _earliest(w[1] for w in each)
    late: list[int] = []
    earliest: int | None = None
    for _ in range(max_calls):
        read, earliest, woken = client.scripts.wake_timers(batch)
        late.extend(woken)
        if read < batch:
            break
    return late, earliest


class StallGuard:
    """What one reaper remembers of each server between its calls, so that a
    Redis stall, restart or cut that kept every holder from renewing is not
    mistaken for dead holders (``reap_runs.lua``): after a call that comes more
    than ``gap_ms`` (server time) after this reaper's previous one, nothing is
    reaped for ``hold_ms``, time for the live holders to renew (their expired
    leases stay theirs until reaped: ``lease_held``). Another supervisor's reaper,
    which reached the server all along, sees no gap: a supervisor that is gone
    or cut off is still taken over one lease after its last renewal. The log
    line names the cause: Redis out of reach, or (no call tried in the gap: the
    previous one ended that long before) this process not running (SIGSTOP, a
    debugger, a frozen cgroup).
    """

    def __init__(self, lease_ms: int, interval_ms: int) -> None:
        # A holder renews every lease/3, so only a gap longer than that can make
        # a live holder's lease expire; a reaper ticking less often than the
        # gap would otherwise see a stall at every tick.
        self.gap_ms = max(lease_ms // 3, 2 * interval_ms)
        self.hold_ms = lease_ms
        self._since: dict[int, int] = {}  # per shard: server time of the last call
        self._hold: dict[int, int] = {}
        self._ended: dict[int, float] = {}  # per shard: when the last call ended (monotonic)

    def failed(self) -> None:
        """A call of this process to Redis failed (any duty's: Redis out of reach).
        The process ran then, so a gap that follows is Redis's, not a stop's:
        during an outage the reaper's own calls are seconds apart (each failing
        command retries for ~0.7 s, in every duty due; past a minute its tick also
        failed before the reap, at the listing of the served queues), and the
        outage was logged as "this process did not run"."""
        now = time.monotonic()
        for index in self._ended:
            self._ended[index] = now

    def reap(self, store: Store, index: int, batch: int) -> tuple[int, list[str], bool]:
        start = time.monotonic()
        idle_ms = (start - self._ended.get(index, start)) * 1000.0  # no call in flight
        try:
            released, ids, more, now, hold, ghosts = store.scripts.reap_guarded(
                batch, self._since.get(index), self._hold.get(index, 0), self.gap_ms, self.hold_ms
            )
        finally:
            self._ended[index] = time.monotonic()
        for ghost in ghosts:
            wf, _, run_id = ghost.partition(" ")
            log.warning(
                "run %s held a max_concurrency slot of workflow %s but is gone from Redis "
                "(evicted under maxmemory, or deleted) or finished; the slot is free again",
                run_id,
                wf,
            )
        if hold and not self._hold.get(index) and idle_ms > self.gap_ms:
            log.warning(
                "this process did not run for %d ms (stopped: SIGSTOP, a debugger, a "
                "frozen cgroup; Redis answered its next call at once): leases are not "
                "reaped for %d ms, time for the live workers to renew theirs",
                idle_ms,
                self.hold_ms,
            )
        elif hold and not self._hold.get(index):
            log.warning(
                "Redis was out of reach for longer than %d ms: leases are not reaped "
                "for %d ms, time for the live workers to renew theirs",
                self.gap_ms,
                self.hold_ms,
            )
        self._since[index] = now
        self._hold[index] = hold
        return released, ids, more


#: Requeued runs named one line each per call of :func:`reap_expired`; the rest
#: in one line. A supervisor gone with 100,000 runs in flight wrote 100,000
#: warnings from the reaper's tick (the arbiter's loop stood while it wrote them).
LOGGED_REQUEUES = 20


def reap_expired(
    client: Store,
    batch: int = BATCH,
    max_calls: int = MAX_CALLS,
    guard: StallGuard | None = None,
    index: int = 0,
) -> tuple[int, list[str]]:
    """Requeue runs whose lease expired, batch after batch until a short one (at
    most ``max_calls``; the rest on the next call); returns (parked runs
    released, requeued ids); every shard of a client with several. ``guard``
    (a supervisor's reaper): hold off after a gap, see :class:`StallGuard`."""
    views = stores(client)
    if len(views) > 1:
        reaped = [reap_expired(v, batch, max_calls, guard, i) for i, v in enumerate(views)]
        return sum(r[0] for r in reaped), [i for r in reaped for i in r[1]]
    released = 0
    requeued: list[str] = []
    for _ in range(max_calls):
        if guard is None:
            freed, ids, more = client.scripts.reap(batch)
        else:
            freed, ids, more = guard.reap(client, index, batch)
        released += freed
        requeued.extend(ids)
        if not more:
            break
    for run_id in requeued[:LOGGED_REQUEUES]:
        log.warning("run %s: lease expired (worker lost or cut off); requeued", run_id)
    if len(requeued) > LOGGED_REQUEUES:
        log.warning(
            "%d more runs: lease expired (worker lost or cut off); requeued (last: %s)",
            len(requeued) - LOGGED_REQUEUES,
            requeued[-1],
        )
    return released, requeued


def forget_idle_queues(
    client: Store, served: list[str], cursor: int = 0, page: int = 200
) -> tuple[int, list[str], dict[str, int]]:
    """Forget one page of the ``queues`` set: names not in ``served`` (the queues
    of live supervisors) with nothing ready or scheduled. Returns the SSCAN
    cursor to pass next (0 when the set was walked through), the names
    forgotten, and the page's queues that no live supervisor serves yet hold
    runs, with how many are ready or scheduled there (stranded: they wait until
    something serves the queue)."""
    cursor, raw = client.redis.sscan(client.keys.queues, cursor, count=page)
    names = [text(q) for q in raw]
    gone = client.scripts.forget_queues(names, served)
    left = [q for q in names if q not in set(served) and q not in set(gone)]
    if not left:
        return int(cursor), gone, {}
    with client.redis.pipeline(transaction=False) as pipe:
        for q in left:
            pipe.zcard(client.keys.q_ready(q))
            pipe.zcard(client.keys.q_scheduled(q))
        counts = pipe.execute(raise_on_error=False)
    stranded = {}
    for i, q in enumerate(left):
        n = sum(c for c in counts[2 * i : 2 * i + 2] if isinstance(c, int))
        if n:
            stranded[q] = n
    return int(cursor), gone, stranded


def _earliest(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def sweep_retention(
    client: Store, retention_ms: int, batch: int = BATCH, max_batches: int = 20
) -> int:
    """Remove finished runs older than ``retention_ms`` (0 keeps everything)."""
    return sweep_backlog(client, retention_ms, batch, max_batches)[0]


def sweep_backlog(
    client: Store,
    retention_ms: int,
    batch: int = BATCH,
    max_batches: int = 20,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, bool]:
    """:func:`sweep_retention`, and whether its last call left work (a backlog: call
    again soon). Runs it keeps (children of an unfinished parent) are work too:
    a backlog of them alone removes nothing, yet hides the runs behind it. No
    call starts past ``deadline`` (by ``clock``) but the first."""
    if retention_ms <= 0:
        return 0, False
    total, more = 0, False
    for _ in range(max_batches):
        removed, more = client.scripts.sweep_step(retention_ms, batch)
        total += removed
        if not more or (deadline is not None and clock() >= deadline):
            break
    return total, more


def reindex_unindexed(client: Store, batch: int = BATCH, max_batches: int = 20) -> int:
    """Put the runs of ``runs:unindexed`` (finished while their status index held
    another type of value) back into that index where it is a sorted set again,
    so that the listing by status shows them; returns how many. Those whose
    index still is not stay, and are passed over. At most ``max_batches``
    script calls of ``batch`` entries."""
    total = 0
    passed = 0
    for _ in range(max_batches):
        moved, left, read = client.scripts.reindex(batch, passed)
        total += moved
        passed += left
        if read < batch:
            break
    return total


def _wrong_type(exc: redis.ResponseError) -> bool:
    return "WRONGTYPE" in str(exc)


class LeaderLock:
    """The fenced cron leader lock (``lock:cron``): acquire, renew, release.

    A redis-py :class:`redis.lock.Lock` on our hash-tagged key (one key, so it
    stays Cluster-legal) holding our token: acquired with ``SET NX PX``,
    renewed with ``reacquire()`` (back to the full TTL, only while the key
    still holds our token), released with ``release()`` (deletes the key only
    if it holds our token). ``fire_cron`` compares the same token, so a leader
    whose lock expired and was taken over is fenced out of cron. Its scripts
    are redis-py's (EVALSHA, loaded on NOSCRIPT), not our function library:
    they touch only this key and need nothing of the run keyspace.

    With several shards, leadership is shard 0's ``lock:cron``; the leader
    then also takes, with the same token, the ``lock:cron`` of every other
    shard (the key that shard's ``fire_cron`` compares, in that shard's slot),
    and fires a shard's crons only while it holds that shard's copy
    (:meth:`holds`). A leader that lost shard 0's lock releases its copies at its
    next tick; otherwise a new leader gets a shard's copy once the old leader's
    copy expired (at most ``ttl_ms`` later), so fencing stays exact per shard.
    """

    def __init__(self, client: Any, ttl_ms: int) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.token = new_token()
        self.held = False
        # thread_local=False: the token is this object's, whichever thread ticks.
        self._locks = [
            view.redis.lock(
                view.keys.lock_cron,
                timeout=ttl_ms / 1000.0,
                blocking=False,
                thread_local=False,
            )
            for view in stores(client)
        ]
        self._lock = self._locks[0]
        self._held = [False] * len(self._locks)

    def holds(self, shard: int) -> bool:
        """Whether this leader may fire the crons of shard ``shard`` now."""
        return self.held and self._held[shard]

    def tick(self) -> bool:
        """Acquire or renew; returns whether this process is the leader now."""
        if self.held:
            try:
                self._lock.reacquire()
            except LockError:  # the key expired or holds another leader's token
                self.held = False
                log.warning("cron leadership lost")
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                # Overwritten with another type under us: no token of ours is
                # there any more, as above. Raised, it left this supervisor the
                # leader for good (foreign_keys skips a lock it holds: the key was
                # never named) and every due cron failed at every tick.
                self.held = False
                log.warning("cron leadership lost: %s holds another type of value", self._lock.name)
        else:
            self.held = self._lock.acquire(token=self.token)
            if self.held:
                log.info("became cron leader")
        self._held[0] = self.held
        for i in range(1, len(self._locks)):
            if self.held:
                try:
                    self._held[i] = self._tick_copy(i)
                except TRANSIENT_ERRORS:  # that shard down: its crons wait, not the others'
                    self._held[i] = False
            elif self._held[i]:  # leadership lost: hand the copy back at once
                with contextlib.suppress(LockError):
                    self._locks[i].release()
                self._held[i] = False
        return self.held

    def _tick_copy(self, i: int) -> bool:
        lock = self._locks[i]
        if self._held[i]:
            try:
                lock.reacquire()
                return True
            except LockError:
                pass
            except redis.ResponseError as exc:  # another type (see tick)
                if not _wrong_type(exc):
                    raise
                return False
        return bool(lock.acquire(token=self.token))

    def foreign_keys(self) -> list[tuple[str, str]]:
        """The lock keys this lock lacks that no leader can hold either, with what
        they hold: a key of another type, or a string without expiry (a leader
        sets ``PX`` and renews it, so its lock always has one). Written by hand or
        by another program, such a key keeps every supervisor from leading (no
        cron fires) until it is removed; nothing else would say so."""
        views = stores(self.client)
        out = []
        for i, lock in enumerate(self._locks):
            if self.holds(i):
                continue
            with views[i].redis.pipeline(transaction=False) as pipe:
                pipe.type(lock.name)
                pipe.pttl(lock.name)
                kind, pttl = pipe.execute()
            kind = text(kind)
            if kind not in ("none", "string"):
                out.append((str(lock.name), f"a {kind}"))
            elif kind == "string" and int(pttl) == -1:
                out.append((str(lock.name), "a string without expiry"))
        return out

    def release(self) -> None:
        if self.held:
            for lock, held in zip(self._locks, self._held, strict=True):
                if held:
                    with contextlib.suppress(LockError):  # expired: nothing to hand back
                        lock.release()
            self.held = False
            self._held = [False] * len(self._locks)


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
) -> tuple[int, str]:
    """``fire_cron`` of one due entry: (its reply code, the run id)."""
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
            code, run_id = _fire(client, leader_token, cron_id, fire_ms, following, make_id, cdef)
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
    for _ in range(_PASS_OVER_ROUNDS):
        if len(due) < limit or not _all_unreadable(due, now):
            return now, earliest, due, len(due) >= limit
        passed += len(due)
        now, earliest, due = client.scripts.due_crons(limit, passed)
    # still a full unreadable batch: not "more" (the duty would tick again at once)
    return now, earliest, due, len(due) >= limit and not _all_unreadable(due, now)


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


def announce_queues(client: Store, queues: Sequence[str]) -> None:
    """Add ``queues`` to the ``queues`` set (the listing of ``redflow queues`` and
    the metrics): a served queue is listed even before anything was enqueued on
    it, and is never forgotten as idle while a live supervisor serves it."""
    if not queues:
        return
    try:
        client.redis.sadd(client.keys.queues, *queues)
    except redis.ResponseError as exc:
        # `queues` of another type: a listing only, so the caller (the reaper)
        # goes on; the key check duty names the key (keycheck.py).
        if "WRONGTYPE" not in str(exc):
            raise


def ring_bells(client: Store, queues: Sequence[str], count: int) -> None:
    """Wake up to ``count`` workers blocked on each of ``queues`` (a drain must not
    wait for their blocking reads to time out)."""
    if not queues or count <= 0:
        return
    with client.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.lpush(client.keys.q_bell(queue), *(["1"] * count))
        pipe.execute()


def run_id_maker(client: Any, shard: int) -> Callable[[], str]:
    """What makes the id of a run enqueued in shard ``shard`` (cron fires): a fresh
    ULID, with the shard's ``~<k>`` suffix when there are several shards."""
    views = stores(client)
    if len(views) == 1:
        return new_run_id
    view: Any = views[shard]
    return lambda: str(view.run_id(new_run_id()))
