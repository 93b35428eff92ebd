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

The cron tick lives in ``crontick.py``, the leader lock in ``leaderlock.py`` and
the per-shard :class:`Store` in ``store.py``; their public names are importable
from here as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from .codec import text
from .crontick import (
    CRON_IDEMPOTENCY_TTL_MS,
    CRON_TICK_BUDGET_S,
    CronTick,
    UnreadableCrons,
    cron_tick,
    run_id_maker,
)
from .errors import TRANSIENT_ERRORS
from .leaderlock import LeaderLock
from .options import shown_run_id
from .shards import shard_index_of_run
from .store import Store, stores

__all__ = [
    "BATCH",
    "CRON_IDEMPOTENCY_TTL_MS",
    "CRON_TICK_BUDGET_S",
    "MAX_CALLS",
    "CronTick",
    "LeaderLock",
    "StallGuard",
    "Store",
    "UnreadableCrons",
    "announce_queues",
    "cron_tick",
    "decided_parents",
    "forget_idle_queues",
    "promote_due",
    "reap_expired",
    "reindex_unindexed",
    "ring_bells",
    "run_id_maker",
    "stores",
    "sweep_backlog",
    "sweep_retention",
    "wake_due",
    "wake_workers",
]

log = logging.getLogger(__name__)


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
    line names the cause: Redis out of reach, or this process not running
    (SIGSTOP, a debugger, a frozen cgroup): no call tried in the gap (the
    previous one ended that long before), or the gap lies in the previous call
    after Redis ran it (stopped before it read the reply).

    A first call has no previous one to measure from: it counts from when the
    guard was made (just before a supervisor's loop starts). A first call that
    comes later than the gap after that (the supervisor stopped with its children
    before its reaper's first tick, Redis out of reach since start-up, a start-up
    that stood) holds as after a gap; one made at once reaps at once, so a
    supervisor started after another one died takes its runs over without delay.
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
        # per shard: how long the last call that was answered took (ms, monotonic)
        self._took: dict[int, float] = {}
        # When the guard was made (monotonic): a shard's first call measures from it.
        self._made = time.monotonic()
        self._ran = self._made  # the last failed call before any shard's first (the log)

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
        self._ran = now
        self._took.clear()

    def reap(self, store: Store, index: int, batch: int) -> tuple[int, list[str], bool]:
        start = time.monotonic()
        idle_ms = (start - self._ended.get(index, self._ran)) * 1000.0  # no call in flight
        # A gap the server sees since the last call, though this process called
        # again at once, lies in the last call after Redis ran it: the process was
        # stopped before it read the reply (a SIGSTOP landing mid-call), so that
        # call's time counts as this process's, not as Redis out of reach.
        stopped_ms = max(idle_ms, self._took.get(index, 0.0))
        since = self._since.get(index)
        if since is None and (start - self._made) * 1000.0 > self.gap_ms:
            since = 0  # a first call later than the gap after the guard was made: hold
        try:
            released, ids, more, now, hold, ghosts = store.scripts.reap_guarded(
                batch, since, self._hold.get(index, 0), self.gap_ms, self.hold_ms
            )
        finally:
            self._ended[index] = time.monotonic()
        self._took[index] = (self._ended[index] - start) * 1000.0
        for ghost in ghosts:
            wf, _, run_id = ghost.rpartition(" ")  # a workflow name may hold spaces
            log.warning(
                "run %s held a max_concurrency slot of workflow %s but is gone from Redis "
                "(evicted under maxmemory, or deleted) or finished; the slot is free again",
                shown_run_id(run_id),  # cut: a neighbour's 3 MB member made a 3 MB line
                wf,
            )
        first = index not in self._since
        if hold and first and not self._hold.get(index) and stopped_ms > self.gap_ms:
            log.warning(
                "the first look at the leases came %d ms after this process set it up "
                "(stopped: SIGSTOP, a debugger, a frozen cgroup; or a start-up that stood): "
                "leases are not reaped for %d ms, time for the live workers to renew theirs",
                stopped_ms,
                self.hold_ms,
            )
        elif hold and not self._hold.get(index) and stopped_ms > self.gap_ms:
            log.warning(
                "this process did not run for %d ms (stopped: SIGSTOP, a debugger, a "
                "frozen cgroup; Redis answered its next call at once): leases are not "
                "reaped for %d ms, time for the live workers to renew theirs",
                stopped_ms,
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
    skip = {*served, *gone}  # once a page, not once a name (5,000 served queues)
    left = [q for q in names if q not in skip]
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
    client: Store,
    retention_ms: int,
    batch: int = BATCH,
    max_batches: int = 20,
    *,
    shards: Sequence[Store] | None = None,
) -> int:
    """Remove finished runs older than ``retention_ms`` (0 keeps everything)."""
    return sweep_backlog(client, retention_ms, batch, max_batches, shards=shards)[0]


def sweep_backlog(
    client: Store,
    retention_ms: int,
    batch: int = BATCH,
    max_batches: int = 20,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    *,
    shards: Sequence[Store] | None = None,
    released: list[tuple[str, str]] | None = None,
) -> tuple[int, bool]:
    """:func:`sweep_retention`, and whether its last call left work (a backlog: call
    again soon). Runs it keeps (children of an unfinished, failed or canceled parent) are work too:
    a backlog of them alone removes nothing, yet hides the runs behind it. No
    call starts past ``deadline`` (by ``clock``) but the first.

    With several shards, ``shards`` (every shard of the client, by index) answers
    for the parents in other shards: a call keeps a finished child of such a
    parent and names the pair; the parents are asked in their shards (one
    pipeline a shard) and the pairs found decided (parent finished, gone, or
    not awaiting the child) are passed to the next call, which removes those
    children. ``released`` carries the pairs not passed yet from one tick to the
    next (the caller's list, per shard). Without ``shards`` such children are
    kept and named again a retention period later."""
    if retention_ms <= 0:
        return 0, False
    carry = released if released is not None else []
    scripts = client.scripts
    several = scripts.shard_count > 1  # one shard: the call as before shards existed
    total, more = 0, False
    for _ in range(max_batches):
        pending: list[tuple[str, str]] = []
        if several:
            removed, more, pending = scripts.sweep_call(retention_ms, batch, list(carry))
        else:
            removed, more = scripts.sweep_step(retention_ms, batch)
        carry.clear()
        total += removed
        if pending and shards:
            carry.extend(decided_parents(shards, pending))
        more = more or bool(carry)
        if not more or (deadline is not None and clock() >= deadline):
            break
    return total, more


def decided_parents(
    shards: Sequence[Store], pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The (child, parent) pairs of ``pairs`` whose parent, read in its own shard,
    no longer awaits the child: succeeded, gone, or the child not in its children
    set (as ``sweep_runs.lua`` reads a parent of its own shard: a failed or
    canceled parent may be resumed, and its replay reads its children again). One pipeline per
    shard; a shard that does not answer decides nothing (its pairs are named
    again a retention period later)."""
    by_shard: dict[int, list[tuple[str, str]]] = {}
    decided: list[tuple[str, str]] = []
    for child, parent in pairs:
        try:
            k = shard_index_of_run(parent, len(shards))
        except ValueError:  # no run has such an id: no parent awaits
            decided.append((child, parent))
            continue
        by_shard.setdefault(k, []).append((child, parent))
    for k, group in by_shard.items():
        store = shards[k]
        try:
            with store.redis.pipeline(transaction=False) as pipe:
                for child, parent in group:
                    pipe.hget(store.keys.run(parent), "status")
                    pipe.sismember(store.keys.run_children(parent), child)
                replies = pipe.execute(raise_on_error=False)
        except TRANSIENT_ERRORS:
            continue
        for i, pair in enumerate(group):
            status, member = replies[2 * i], replies[2 * i + 1]
            readable = isinstance(status, bytes) and status != b"succeeded"
            if not (readable and isinstance(member, int) and member == 1):
                decided.append(pair)
    return decided


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
    """Wake up to ``count`` workers blocked on ``queues`` (a drain must not wait
    for their blocking reads to time out).

    An idle worker waits on the bells of all its queues in one ``BLPOP``: one
    token in any of them wakes it. So ``count`` tokens go into one bell, the
    first queue's whose bell takes them (one of another type is passed over). A
    token in every queue's bell left 5,000 x ``count`` of them after a drain of
    a supervisor serving 5,000 queues, each waking a worker of the next start
    for nothing (a ``BLPOP`` of every bell and a futile claim), for minutes."""
    if count <= 0:
        return
    for queue in queues[:_RING_TRIES]:
        try:
            client.redis.lpush(client.keys.q_bell(queue), *(["1"] * count))
            return
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise


def wake_workers(client: Any, token: str, count: int) -> None:
    """Push ``count`` tokens into the wake key ``token`` names, in every shard (a
    worker blocks on its home shard's), for a minute: the workers made with that
    ``wake_token`` (a supervisor's children), and only they, wake at once. The
    bells of their queues are not rung: an idle worker of another supervisor that
    serves one of those queues (blocked on its bell longer) took the tokens there,
    and these workers slept on until their blocking read timed out."""
    if count <= 0:
        return
    for shard in stores(client):
        key = shard.keys.worker_wake(token)
        with shard.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, *(["1"] * count))
            pipe.pexpire(key, 60_000)
            pipe.execute()


#: Queues whose bell :func:`ring_bells` tries before giving up (a bell of another
#: type is passed over: a neighbour's key, named by the key check duty).
_RING_TRIES = 8
