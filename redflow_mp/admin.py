"""Operator views and actions over one namespace: queue depths, workflows with
their live counts, cron schedules, and retrying a finished run.

What the ``redflow`` command, the dashboard and the metrics endpoint show is
read here, from the same keys the runtime writes (no second source of truth).
Everything is read-only except :func:`retry_run`, which enqueues a new run
through the normal enqueue script and links it to the old one (``retryOf``).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from . import codec
from .client import Client, RunHandle
from .codec import RunStatus, text, whole_number
from .cron import CronDef
from .keys import retry_key
from .listing import mapped_reads
from .options import RunOptions, shown_run_id
from .queries import (
    drive,
    get_run_any,
    one,
    run_view,
    shard_views,
    workflow_names_all,
)
from .running_sweep import RunningSweep
from .runs import Runs
from .wflisting import listing_metas, named_defs

__all__ = [
    "CRON_PAGE",
    "EXACT",
    "LAST_PASS",
    "QUEUED_COUNT_LIMIT",
    "QUEUE_STATS_CHUNK",
    "SO_FAR",
    "CronEntry",
    "QueueStats",
    "RunQueues",
    "RunWorkflows",
    "WorkflowStats",
    "cron_entries",
    "iter_queue_stats",
    "queue_names",
    "queue_stats",
    "read_unseen",
    "remembered_queues",
    "retry_run",
    "running_counts",
    "running_per_queue",
    "workflow_stats",
]


class QueueStats(msgspec.Struct, kw_only=True):
    """Depths of one queue and how long its next run has waited (ms)."""

    name: str
    ready: int
    processing: int
    scheduled: int
    oldest_ready_age_ms: int | None = None


class RunQueues:
    """The queue of each running run, and where the paged pass over
    ``runs:status:running`` is, remembered between calls of :func:`queue_stats`
    by a long-lived caller (the arbiter's ``/metrics``; the dashboard's client,
    :func:`remembered_queues`).

    A run's queue is fixed when it is enqueued, so a run seen running once need
    not be read again while it runs: a call reads a page of the running ids
    (:class:`~redflow_mp.running_sweep.RunningSweep`) and the queues of the new ones
    only, not one HGET per running run at every call. Runs no longer running
    are forgotten (bounded by the runs in flight). One map per shard (its tag):
    each shard's pass forgets only its own runs.
    """

    def __init__(self) -> None:
        self.by_shard: dict[str, dict[str, str]] = {}
        #: Per shard (its tag): where the paged read of ``runs:status:running``
        #: is (a ``RunningSweep``).
        self.sweeps: dict[str, Any] = {}
        #: Per shard (its tag): what the last call's ``processing`` counts are
        #: (:data:`EXACT`, :data:`LAST_PASS` or :data:`SO_FAR`).
        self.shown: dict[str, str] = {}
        self.lock = threading.Lock()  # the dashboard's viewers share one

    def of(self, tag: str) -> dict[str, str]:
        """Run id -> queue of the running runs seen in the shard of ``tag``."""
        return self.by_shard.setdefault(tag, {})

    def showing(self) -> str:
        """What the last :func:`queue_stats` call's ``processing`` counts are,
        all shards together (the least exact shard's)."""
        states = set(self.shown.values())
        for state in (SO_FAR, LAST_PASS):
            if state in states:
                return state
        return EXACT


#: ``processing`` read from the whole running index by this call.
EXACT = "exact"
#: ``processing`` as of the last whole pass over the running index (a pass took
#: several calls: more runs running than a page).
LAST_PASS = "last pass"
#: ``processing`` counted by the first pass so far (not whole yet): a lower bound.
SO_FAR = "so far"


def running_per_queue(view: Any, remembered: RunQueues, whole: bool = False) -> dict[str, int]:
    """Running runs per queue in the shard of ``view``: one page of
    ``runs:status:running`` read (:class:`~redflow_mp.running_sweep.RunningSweep`,
    :data:`~redflow_mp.running_sweep.RUNNING_PAGE` ids and the queues of those not seen
    before, in two round trips), or, ``whole``, pages until a pass is whole (each
    read bounded the same; the pass's cost is the runs in flight). Records in
    ``remembered.shown`` what the counts are."""
    r, k = view.redis, view.keys
    with remembered.lock:
        sweep = remembered.sweeps.setdefault(k.tag, RunningSweep())
        fresh = sweep.score == "-inf" and sweep.skip == 0
        while True:
            with r.pipeline(transaction=False) as pipe:
                paging = sweep.read(pipe, k.runs_status(RunStatus.RUNNING))
                replies: list[Any] = [
                    None if isinstance(x, Exception) else x
                    for x in pipe.execute(raise_on_error=False)
                ]
            page, tail = replies[0], replies[1]
            top = replies[2] if paging == 3 else None
            ids = [text(x) for x in page or ()]  # a key of another type: none running
            seen = remembered.of(k.tag)
            read_unseen(r, k, ids, seen, "queue")
            counts = dict(sweep.add(ids, tail, seen, top))
            ended = sweep.score == "-inf" and sweep.skip == 0
            if ended and fresh:
                remembered.shown[k.tag] = EXACT
                return counts
            if not whole:
                remembered.shown[k.tag] = SO_FAR if sweep.done is None else LAST_PASS
                return counts
            fresh = fresh or ended  # the next page starts a pass of its own


def read_unseen(r: Any, k: Any, ids: list[str], seen: dict[str, str], field: str) -> None:
    """Add to ``seen`` (run id -> ``field`` of that run) the field of each of
    ``ids`` it does not hold, read in one round trip (one HGET a run). A run gone,
    or a key of another type, is left out (its read answers nil or an error)."""
    unseen = [run_id for run_id in ids if run_id not in seen]
    if not unseen:
        return
    with r.pipeline(transaction=False) as pipe:
        for run_id in unseen:
            pipe.hget(k.run(run_id), field)
        got: list[Any] = pipe.execute(raise_on_error=False)
    for run_id, value in zip(unseen, got, strict=True):
        if isinstance(value, bytes | str):
            seen[run_id] = text(value)


#: Above this many queued runs (all workflows), workflow_stats leaves ``queued`` None.
QUEUED_COUNT_LIMIT = 10_000


class CronEntry(msgspec.Struct, kw_only=True):
    id: str
    workflow: str
    expression: str
    timezone: str
    next_fire_at: int | None


class WorkflowStats(msgspec.Struct, kw_only=True):
    """A workflow's metadata with live counts."""

    meta: codec.WorkflowMeta
    running: int
    #: None when more than QUEUED_COUNT_LIMIT runs are queued in all (not counted).
    queued: int | None
    parked: int
    cron: list[CronEntry] = msgspec.field(default_factory=list)


_cron_decoder = msgspec.json.Decoder(CronDef)


@mapped_reads
def queue_stats(
    client: Client, queues: Sequence[str] | None = None, remembered: RunQueues | None = None
) -> list[QueueStats]:
    """Every known queue's (or only ``queues``') ready/processing/scheduled depths
    and the wait of the run it will hand out next (its head: highest priority,
    then oldest).

    ``processing`` counts the runs of the queue in ``runs:status:running``, read
    a page (:data:`~redflow_mp.running_sweep.RUNNING_PAGE` ids) a call where the call
    before stopped (:func:`running_per_queue`), with ``remembered`` (by default
    the one of ``client``: :func:`remembered_queues`): with up to a page of runs
    running it is exact at every call; past that it is the counts of the last
    whole pass over the index (a lower bound until the first pass is whole), and
    ``remembered.showing()`` says which. The whole index in one ZRANGE, and one
    HGET per running run, cost 220 ms of Redis at 200,000 running runs at every
    call. With several shards each shard's queues are read and the depths added
    up; the oldest head wins. The rest costs three commands per queue: pass
    ``queues`` where the known queues may be many.
    """
    memo = remembered if remembered is not None else remembered_queues(client)
    views = shard_views(client)
    return _merged(views, queues, [running_per_queue(view, memo) for view in views])


def _merged(
    views: list[Any], queues: Sequence[str] | None, in_flight: list[dict[str, int]]
) -> list[QueueStats]:
    """The depths of ``queues`` (all known: None) added up over the shards
    ``views``, with the running runs per queue of each (``in_flight``)."""
    merged: dict[str, QueueStats] = {}
    for view, running in zip(views, in_flight, strict=True):
        for q in _queue_stats(view, queues, running):
            have = merged.get(q.name)
            if have is None:
                merged[q.name] = q
                continue
            have.ready += q.ready
            have.processing += q.processing
            have.scheduled += q.scheduled
            if q.oldest_ready_age_ms is not None:
                have.oldest_ready_age_ms = max(have.oldest_ready_age_ms or 0, q.oldest_ready_age_ms)
    return [merged[name] for name in sorted(merged)]


#: Queues whose depths :func:`iter_queue_stats` reads at once (one pipeline).
QUEUE_STATS_CHUNK = 1000


@mapped_reads
def queue_names(client: Client) -> list[str]:
    """Every known queue name (all shards), sorted; read with SSCAN, a thousand at
    a time (one SMEMBERS of a million names holds Redis for a quarter of a second)."""
    names: set[str] = set()
    for view in shard_views(client):
        cursor: Any = 0
        while True:  # each SSCAN a read of its own, so a refusal names the key
            cursor, page = drive(view.redis, one("sscan", view.keys.queues, cursor, None, 1000))
            names.update(text(q) for q in page)
            if not int(cursor):
                break
    return sorted(names)


def iter_queue_stats(client: Client, chunk: int = QUEUE_STATS_CHUNK) -> Iterator[QueueStats]:
    """:func:`queue_stats` of every known queue, in name order, read ``chunk``
    queues at a time: a caller that prints as it goes holds the names and one
    chunk of depths, not every queue's (their number is the callers':
    a ``queue_override`` per customer makes one each).

    ``processing`` is exact: the running index is read whole first, a page
    (:data:`~redflow_mp.running_sweep.RUNNING_PAGE` ids) a round trip, once for
    every chunk (:func:`running_per_queue`)."""
    names = queue_names(client)
    memo = RunQueues()
    views = shard_views(client)
    in_flight = [running_per_queue(view, memo, whole=True) for view in views]
    for start in range(0, len(names), chunk):
        yield from _merged(views, names[start : start + chunk], in_flight)


def _queue_stats(
    view: Any, queues: Sequence[str] | None, in_flight: dict[str, int]
) -> list[QueueStats]:
    r, k = view.redis, view.keys
    known = drive(r, one("smembers", k.queues)) if queues is None else queues
    names = sorted({text(q) for q in known})
    if not names:
        return []
    with r.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zcard(k.q_ready(q))
            pipe.zcard(k.q_scheduled(q))
            pipe.zrange(k.q_ready(q), 0, 0)
        # A key of another type (another program, a typo) answers an error for
        # its own value only: the other queues are still shown (keycheck.py names it).
        raw: list[Any] = [
            None if isinstance(x, Exception) else x for x in pipe.execute(raise_on_error=False)
        ]
    heads = [(i, text(raw[3 * i + 2][0])) for i in range(len(names)) if raw[3 * i + 2]]
    # Second round trip: the server's time and the heads' availableAt.
    with r.pipeline(transaction=False) as pipe:
        pipe.time()
        for _, run_id in heads:
            pipe.hget(k.run(run_id), "availableAt")
        more: list[Any] = [
            None if isinstance(x, Exception) else x for x in pipe.execute(raise_on_error=False)
        ]
    sec, usec = more[0] or (0, 0)
    now = int(sec) * 1000 + int(usec) // 1000
    avail = more[1:]
    out = [
        QueueStats(
            name=q,
            ready=int(raw[3 * i]),
            processing=in_flight.get(q, 0),
            scheduled=int(raw[3 * i + 1] or 0),
        )
        for i, q in enumerate(names)
        if raw[3 * i] is not None  # a ready set of another type: not shown
    ]
    by_name = {s.name: s for s in out}
    for (i, _), at in zip(heads, avail, strict=True):
        stats = by_name.get(names[i])
        at_ms = whole_number(at)
        if stats is not None and at_ms is not None and now:
            stats.oldest_ready_age_ms = max(0, now - at_ms)  # garbage: no age
    return out


#: Cron entries one command reads at most: an HSCAN page of ``cron:def`` (a
#: COUNT hint), an HMGET of named ids, a ZMSCORE of ``cron:next``. One HGETALL
#: of 100,000 entries (28 MB) and one ZMSCORE of their ids held Redis for
#: 141 ms of CPU, and a dashboard page of one workflow paid it at each refresh.
CRON_PAGE = 1000


@mapped_reads
def cron_entries(client: Client, ids: Sequence[str] | None = None) -> list[CronEntry]:
    """Every cron trigger with its next fire time (epoch ms), from every shard
    (a trigger lives in its workflow's shard), or only the triggers ``ids``;
    read :data:`CRON_PAGE` entries a command."""
    found: dict[str, CronEntry] = {}
    wanted = None if ids is None else sorted(set(ids))
    for view in shard_views(client):
        for entry in _cron_entries(view) if wanted is None else _named_entries(view, wanted):
            found.setdefault(entry.id, entry)
    return [found[cid] for cid in sorted(found)]


def _cron_entries(view: Any) -> list[CronEntry]:
    out: list[CronEntry] = []
    cursor: Any = 0
    while True:  # HSCAN pages: never every entry in one reply
        cursor, page = drive(view.redis, one("hscan", view.keys.cron_def, cursor, None, CRON_PAGE))
        # decoded page by page (every raw record kept, inputs included, until all
        # were read: 100 entries with 2 MiB inputs held 242 MB); a page's entries
        # sorted by id, duplicates of HSCAN dropped by cron_entries
        ids = sorted({text(k): None for k in page})
        raws = {text(k): v for k, v in page.items()}
        for at in range(0, len(ids), CRON_PAGE):  # a page may hold a few more
            chunk = ids[at : at + CRON_PAGE]
            out.extend(_entries(view, chunk, [raws[cid] for cid in chunk]))
        del page, raws
        if not int(cursor):
            break
    return out


def _named_entries(view: Any, ids: list[str]) -> list[CronEntry]:
    out: list[CronEntry] = []
    for at in range(0, len(ids), CRON_PAGE):
        # measured first (HSTRLEN), read in pages of LISTING_PAGE_BYTES: 200
        # entries with a 2 MiB input each were one 400 MB reply
        for found, raws in named_defs(view, ids[at : at + CRON_PAGE]):
            out.extend(_entries(view, found, raws))
    return out


def _entries(view: Any, ids: list[str], raws: list[Any]) -> list[CronEntry]:
    """The entries ``ids`` (at most CRON_PAGE) of their records ``raws``."""
    if not ids:
        return []
    scores = drive(view.redis, one("zmscore", view.keys.cron_next, ids))
    out = []
    for cid, raw, score in zip(ids, raws, scores, strict=True):
        try:
            d = _cron_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        out.append(
            CronEntry(
                id=cid,
                workflow=d.workflow,
                expression=d.expression,
                timezone=d.timezone,
                # +inf / -inf (written by hand): no time to show; int() would raise
                next_fire_at=int(score) if score is not None and math.isfinite(score) else None,
            )
        )
    return out


@mapped_reads
def workflow_stats(client: Client, names: Sequence[str] | None = None) -> list[WorkflowStats]:
    """Synced workflows with running, queued and parked counts and cron schedules
    (counts added up over the shards); only the workflows ``names`` (in that
    order) when given: a page of them costs what a page holds."""
    # schedules only past LISTING_CRON_JSON_BYTES a workflow, read in byte-bounded
    # pages (every cronJson, inputs included, held 866 MB for 200 x 2 MiB inputs)
    listed = workflow_names_all(client) if names is None else list(names)
    metas = listing_metas(client, listed)
    if not metas:
        return []
    # Per-workflow queued counts cost a read of every queued run: only done while
    # there are few (a million queued runs would be a million HGETs per view), and
    # and each queued run's workflow is read once per client (RunWorkflows).
    views = shard_views(client)
    memo = _remembered(client)
    sizes = [int(drive(v.redis, one("zcard", v.keys.runs_status(RunStatus.QUEUED)))) for v in views]
    counted = sum(sizes) <= QUEUED_COUNT_LIMIT
    queued_by_wf: dict[str, int] = {}
    running = [0] * len(metas)
    parked = [0] * len(metas)
    for view, size in zip(views, sizes, strict=True):
        r, k = view.redis, view.keys
        if counted and size:
            for wf, n in memo.count(view).items():
                queued_by_wf[wf] = queued_by_wf.get(wf, 0) + n
        with r.pipeline(transaction=False) as pipe:
            for m in metas:
                pipe.scard(k.wf_running(m.name))
                pipe.zcard(k.wf_waiting(m.name))
            counts = pipe.execute()
        for i in range(len(metas)):
            running[i] += int(counts[2 * i])
            parked[i] += int(counts[2 * i + 1])
    # The workflows listed read their own cron entries (their ids are in the
    # metadata), not every entry of cron:def; a record without the ids (written
    # by hand) reads them all.
    ids: list[str] | None = [cid for m in metas for cid in m.cron_ids]
    if any(m.cron and not m.cron_ids for m in metas):
        ids = None
    crons: dict[str, list[CronEntry]] = {}
    entries = cron_entries(client) if ids is None else cron_entries(client, ids)
    for entry in entries:  # grouped once, not walked per workflow
        crons.setdefault(entry.workflow, []).append(entry)
    out = []
    for i, m in enumerate(metas):
        out.append(
            WorkflowStats(
                meta=m,
                running=running[i],
                parked=parked[i],
                queued=queued_by_wf.get(m.name, 0) if counted else None,
                cron=crons.get(m.name, []),
            )
        )
    return out


class RunWorkflows:
    """The workflow of each queued run, remembered between calls of
    :func:`workflow_stats` by one client (the dashboard's: its workflows page
    refreshes every 5 s per viewer).

    A run's workflow is fixed when it is enqueued, so a run seen queued once need
    not be read again while it stays queued: a call reads the queued ids (one
    ZRANGE a shard) and the workflows of the new ones only, not one HGET per
    queued run at every refresh (10,000 at the counting limit). Runs no longer
    queued are forgotten (at most :data:`QUEUED_COUNT_LIMIT` are kept). Plain
    reads only: the read-only viewer's ACL (``+@read``) allows no script nor SORT.
    """

    def __init__(self) -> None:
        self.by_shard: dict[str, dict[str, str]] = {}
        #: Per shard (its tag): where the paged read of ``runs:status:running``
        #: by :func:`~redflow_mp.depths.read_depths` is (a ``RunningSweep``).
        self.sweeps: dict[str, Any] = {}
        self.lock = threading.Lock()

    def count(self, view: Any) -> dict[str, int]:
        """Queued runs per workflow in the shard of ``view``."""
        r, k = view.redis, view.keys
        ids = [text(x) for x in drive(r, one("zrange", k.runs_status(RunStatus.QUEUED), 0, -1))]
        with self.lock:
            seen = dict(self.by_shard.get(k.tag, {}))
        read_unseen(r, k, ids, seen, "workflow")
        kept = {run_id: seen[run_id] for run_id in ids if run_id in seen}
        with self.lock:
            self.by_shard[k.tag] = kept
        out: dict[str, int] = {}
        for wf in kept.values():
            out[wf] = out.get(wf, 0) + 1
        return out


#: The :class:`RunWorkflows` of each client that called :func:`workflow_stats`.
_REMEMBERED: weakref.WeakKeyDictionary[Any, RunWorkflows] = weakref.WeakKeyDictionary()
_REMEMBERED_LOCK = threading.Lock()


def _remembered(client: Any) -> RunWorkflows:
    with _REMEMBERED_LOCK:
        memo = _REMEMBERED.get(client)
        if memo is None:
            memo = _REMEMBERED[client] = RunWorkflows()
        return memo


#: The :class:`RunQueues` of each client that called :func:`queue_stats` without one.
_QUEUES_REMEMBERED: weakref.WeakKeyDictionary[Any, RunQueues] = weakref.WeakKeyDictionary()


def remembered_queues(client: Any) -> RunQueues:
    """The :class:`RunQueues` :func:`queue_stats` keeps for ``client`` (the
    dashboard's: its pass over the running index goes on at each refresh,
    whoever loads the page)."""
    with _REMEMBERED_LOCK:
        memo = _QUEUES_REMEMBERED.get(client)
        if memo is None:
            memo = _QUEUES_REMEMBERED[client] = RunQueues()
        return memo


@mapped_reads
def running_counts(client: Runs, workflows: Sequence[str]) -> list[int]:
    """How many runs of each workflow are running now (all hosts, all shards)."""
    totals = [0] * len(workflows)
    for view in shard_views(client):
        with view.redis.pipeline(transaction=False) as pipe:
            for name in workflows:
                pipe.scard(view.keys.wf_running(name))
            for i, n in enumerate(pipe.execute()):
                totals[i] += int(n)
    return totals


#: How long after a retry finishes a second retry of the same run still returns
#: it (a double click, a second operator, on a retry that failed at once); then
#: a retry starts another run.
RETRY_ONCE_S = 60.0


def retry_run(client: Client, run_id: str) -> RunHandle:
    """Enqueue a failed or canceled run again, as a new run linked by ``retryOf``
    (once: a second retry of ``run_id`` returns the first one's handle while that
    one is unfinished, and for :data:`RETRY_ONCE_S` after)."""
    state = get_run_any(client, run_id)
    if state is None:
        raise ValueError(f"run {shown_run_id(run_id)} does not exist")
    if state.status not in (RunStatus.FAILED, RunStatus.CANCELED):
        raise ValueError(
            f"run {run_id} is {state.status.value}; only failed or canceled runs can be retried"
        )
    # Under a key of its own (keys.retry_key): the command given twice, or the
    # dashboard's Retry clicked twice, returns the first retry instead of
    # starting the run's input again, while that retry is unfinished and for
    # RETRY_ONCE_S after (the key's expiry, set when its run finishes). A retry
    # asked for once the first one has failed in turn starts another run.
    options = RunOptions.of(
        queue_override=state.queue,
        priority=state.priority,
        parent_run_id=state.parent_run_id,
        idempotency_key=retry_key(run_id),
        idempotency_ttl=RETRY_ONCE_S,
        system_key=True,
    )
    handle = RunHandle(client, client.enqueue(state.workflow, state.input, options))
    view = run_view(client, handle.id)
    view.redis.hset(view.keys.run(handle.id), "retryOf", run_id)
    return handle
