"""Queries over one namespace: runs (newest first, by workflow and status), a
run's steps, the synced workflows.

Read-only; every list is bounded by its ``limit``. Which runs a page of
``list_runs`` shows (the index that answers it, a walk, a keyset cursor) is
:mod:`redflow_mp.listing`'s; this module reads them and merges shards.

Each query is written once, as a sans-I/O plan (a generator) that yields a
batch of redis-py calls, ``(method name, args)``, receives their replies and
returns the answer. :func:`drive` runs a plan on the sync client (one call, or
one pipeline for a batch of several); the asyncio client drives the same plans
on ``redis.asyncio`` (same method names, same reply parsing).
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import msgspec
import redis

from . import codec, listing
from .codec import ErrorInfo, RunState, RunStatus, StepState, WorkflowMeta, text
from .connection import with_redirects
from .hashpages import BytePages
from .keys import Keys
from .listing import Batch, Cursor, QueryPlan
from .options import cannot_be_run_id, check_name, check_run_id

__all__ = [
    "MAX_LIST_POSITION",
    "Batch",
    "QueryPlan",
    "alist_runs_all",
    "alist_workflows_all",
    "as_shard",
    "count_status",
    "drive",
    "get_run",
    "get_run_any",
    "get_run_row",
    "get_run_row_any",
    "get_run_steps",
    "get_run_steps_any",
    "iter_runs_all",
    "list_runs",
    "list_runs_all",
    "list_workflows",
    "list_workflows_all",
    "merge_runs",
    "one",
    "run_view",
    "shard_views",
    "workflow_metas",
    "workflow_names_all",
]

T = TypeVar("T")

#: The largest ``limit`` / ``offset`` of ``list_runs`` (2**53): beyond, the Redis
#: range ``offset + limit - 1`` would not fit in the 64-bit index Redis takes.
MAX_LIST_POSITION = 2**53

_STATUS_VALUES = frozenset(s.value for s in RunStatus)
# A run's history shows its newest entries up to this many (ATTEMPTS_CAP in lua/_lib.lua).
ATTEMPTS_CAP = 100
#: Runs read per round trip by :func:`iter_runs_all` (held at once, per shard).
ITER_PAGE = 1000


def drive(client: redis.Redis, plan: QueryPlan[T]) -> T:
    """Run ``plan`` on a sync redis-py client; return its answer. A refusal is
    the library's error (``listing.read_error``: ``BUSY`` a RedisBusyError,
    ``WRONGTYPE`` a WrongTypeError), as a script call's is."""
    try:
        batch = next(plan)
        while True:
            try:
                if len(batch) == 1:
                    name, args = batch[0]
                    replies = [getattr(client, name)(*args)]
                else:
                    # Reads only: resending the whole batch after a cluster redirect
                    # (ASK/TRYAGAIN/CLUSTERDOWN during a reshard, MOVED) is safe.
                    replies = with_redirects(
                        getattr(client, "router", None),
                        functools.partial(_pipelined, client, batch),
                        lambda: None,
                    )
            except redis.ResponseError as exc:
                mapped = listing.read_error(exc, batch)
                if mapped is None:
                    raise
                raise mapped from exc
            batch = plan.send(replies)
    except StopIteration as stop:
        return cast(T, stop.value)


def one(name: str, *args: Any) -> QueryPlan[Any]:
    """A plan of one command (its reply is the answer): a lone read driven by
    :func:`drive`, so a refusal is mapped as every read's is."""
    (reply,) = yield [(name, args)]
    return reply


def _pipelined(client: redis.Redis, batch: Batch) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for name, args in batch:
            getattr(pipe, name)(*args)
        return pipe.execute()


def _check_list_args(workflow: object, status: object, limit: object, offset: object) -> str | None:
    if workflow is not None:
        check_name(workflow, "workflow")
    for label, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int")
        if value < 0:
            raise ValueError(f"{label} must be >= 0")
        if value > MAX_LIST_POSITION:  # Redis range indexes are 64-bit: a clear error
            raise ValueError(f"{label} must be at most {MAX_LIST_POSITION}, not {value}")
    if status is None:
        return None
    if not isinstance(status, str):
        raise TypeError("status must be a RunStatus or str")
    if status not in _STATUS_VALUES:
        raise ValueError(f"unknown status {status!r}; expected one of {sorted(_STATUS_VALUES)}")
    return str(RunStatus(status))


def get_run(keys: Keys, run_id: str) -> QueryPlan[RunState | None]:
    """The run with its attempts' history (one round trip), or None for an unknown id."""
    got = yield from _run_raw(keys, run_id)
    return None if got is None else _run_state(run_id, *got)


def _run_raw(keys: Keys, run_id: str) -> QueryPlan[tuple[dict[Any, Any], list[Any]] | None]:
    """The run's hash and its attempts' entries (one round trip), or None for an
    unknown id (raises for an id that is not one: ``check_run_id``)."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    raw, entries = yield [
        ("hgetall", (keys.run(run_id),)),
        ("lrange", (keys.run_attempts(run_id), 0, -1)),
    ]
    if not raw:
        return None
    return raw, entries


def get_run_row(keys: Keys, run_id: str) -> QueryPlan[RunState | None]:
    """:func:`get_run` without the payloads (``listing.ROW_FIELDS``: no input,
    output, error or wait) and without the attempt a finish leaves implied by the
    hash (read the finished run with :func:`get_run`), or None for an unknown id
    (a hash holding none of those fields is read whole: it is a run, as for
    :func:`get_run`).
    For a view that looks again and again (``redflow runs watch``, every 0.5 s):
    a run with an 8 MiB input and output was 16 MB read at every look."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    row, entries = yield [
        ("hmget", (keys.run(run_id), *listing.ROW_FIELDS)),
        ("lrange", (keys.run_attempts(run_id), 0, -1)),
    ]
    raw = {f.encode(): v for f, v in zip(listing.ROW_FIELDS, row, strict=True) if v is not None}
    if not raw:  # unknown, or a hash holding none of those fields (a hand edit): read whole
        return (yield from get_run(keys, run_id))
    state = codec.run_state_from_hash(raw)
    state.id = state.id or run_id
    state.attempts = codec.attempt_states(entries)
    return state


def get_run_row_any(client: Any, run_id: str) -> RunState | None:
    """:func:`get_run_row` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run_row(view.keys, run_id))


def _run_state(run_id: str, raw: dict[Any, Any], entries: list[Any]) -> RunState:
    state = codec.run_state_from_hash(raw)
    if not state.id:
        state.id = run_id
    state.attempts = codec.attempt_states(entries)
    last = codec.final_attempt(raw)
    if last is not None:  # the entry a finish leaves implied by the hash
        state.attempts = [*state.attempts, last][-ATTEMPTS_CAP:]
    return state


def get_run_steps(keys: Keys, run_id: str) -> QueryPlan[list[StepState] | None]:
    """The run's recorded steps in execution order, or None for an unknown id."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    steps_key = keys.run_steps(run_id)
    exists, size, total = yield [
        ("exists", (keys.run(run_id),)),
        ("hget", (keys.run(run_id), "stepBytes")),
        ("hlen", (steps_key,)),
    ]
    if not exists:
        return None
    # By the bytes that come (hashpages: stepBytes is a hint that sets the first
    # page only; 48 steps of 8 MiB came in one HSCAN of 384 MB, a stepBytes of
    # 10**15 made 1,053 calls of one record for 1,500 small steps).
    pages = BytePages(total if isinstance(total, int) else 0, codec.whole_number(size) or 0)
    raw: dict[Any, Any] = {}
    cursor: Any = 0
    while True:  # page by page, each a bounded call
        ((cursor, more),) = yield [("hscan", (steps_key, cursor, None, pages.count))]
        raw.update(more)
        if not int(cursor):
            return _steps_in_order(raw)
        pages.took(more)


def _steps_in_order(
    raw: dict[Any, Any], output_limit: int = 0, big: Callable[[str], Any] | None = None
) -> list[StepState]:
    """Decoded step records (name -> JSON) in execution order; an unreadable one
    shows as a failed ``CorruptRecord`` step first. With ``big``, an output over
    ``output_limit`` bytes is not decoded: ``big(its JSON text)`` stands for it."""
    out: list[tuple[int, int, StepState]] = []
    for name_b, data in raw.items():
        name = name_b.decode("utf-8", "replace")
        try:
            stored = codec.decode_step(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            out.append(
                (
                    0,
                    0,
                    StepState(
                        name=name,
                        status=codec.StepStatus.FAILED,
                        error=ErrorInfo(type="CorruptRecord", message="unreadable step record"),
                    ),
                )
            )
            continue
        json_text = stored.output_json
        if big is not None and json_text is not None and len(json_text) > output_limit:
            stored.output_json = None  # 1 MB of JSON made ~7 MB of objects to show 4 KB
        state = codec.step_state(name, stored)
        if stored.output_json is None and json_text is not None:
            state.output = big(json_text) if big is not None else None
        out.append((stored.started_at, stored.seq, state))
    out.sort(key=lambda item: (item[1], item[0]))  # seq: Redis's per-run step counter
    return [item[2] for item in out]


def list_runs(
    keys: Keys,
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: str | None = None,
    *,
    payloads: bool = True,
) -> QueryPlan[list[RunState]]:
    """Runs, newest first, optionally of one workflow and/or one status.

    ``after``: the id of the last run of the previous page (a keyset cursor).
    The page is the ``limit`` runs that come right after that run in the same
    listing (by its ``createdAt`` and id), whatever was added or removed since,
    and ``offset`` is not used: a deep page costs what the first does, and
    paging on while runs are enqueued neither repeats nor skips a run. A run no
    longer in ``runs:created`` (removed by retention) cannot place the page:
    ``offset`` does then, so pass both. ``payloads=False``: the runs without
    their ``input``, ``output``, ``error`` and ``wait`` (a table of runs:
    ``listing.ROW_FIELDS``)."""
    status = _check_list_args(workflow, status, limit, offset)
    after = listing.check_after(after)
    if limit == 0:
        return []
    cursor = None
    if after is not None:
        cursor = yield from listing.cursor_of(keys, after)
    ids = yield from listing.select_run_ids(keys, workflow, status, limit, offset, cursor)
    return (yield from listing.run_states(keys, ids, payloads))


def list_workflows(keys: Keys) -> QueryPlan[list[WorkflowMeta]]:
    """Metadata of every synced workflow, by name."""
    (members,) = yield [("smembers", (keys.workflows,))]
    names = sorted(text(n) for n in members)
    if not names:
        return []
    raws = yield [("hgetall", (keys.workflow(name),)) for name in names]
    return [
        codec.workflow_meta_from_hash(raw, name)
        for name, raw in zip(names, raws, strict=True)
        if raw
    ]


# ---------------------------------------------------------------- shards
#
# With ``shards`` = N > 1 (docs/operations.md, "Shards") a client has one
# :class:`Shard`-like view per hash tag, each with its ``keys``, its ``redis``
# (pinned to the master of that tag's slot) and its ``scripts``. The readers
# below run the same plan on every shard and merge; with one shard they are the
# single-shard call exactly (no extra round trip).


def shard_views(client: Any) -> list[Any]:
    """Every shard of ``client`` (objects with ``keys``, ``redis``, ``scripts``);
    ``[client]`` itself when it has one shard."""
    shards = getattr(client, "shards", None)
    if not shards or len(shards) == 1:
        return [client]
    return list(shards)


def run_view(client: Any, run_id: str) -> Any:
    """The shard view that holds ``run_id`` (the client itself with one shard).

    A run re-sharded to fewer shards keeps its id (``redflow migrate --shards``):
    an id naming shard ``k`` >= the shard count lives in shard ``k % count``
    (``shards.shard_index_of_run``).
    """
    shards = getattr(client, "shards", None)
    if not shards:
        return client
    return as_shard(client, client.shard_of_run(run_id))


def as_shard(client: Any, shard: Any) -> Any:
    """A shard view from what ``shard_of_run`` / ``shard_of_workflow`` return (a
    shard, or its index)."""
    return client.shards[shard] if isinstance(shard, int) else shard


def merge_runs(per_shard: list[list[RunState]], limit: int, offset: int) -> list[RunState]:
    """The page ``[offset, offset + limit)`` of the newest-first union of per-shard
    pages, each of which is that shard's first ``offset + limit`` runs.

    Exact: the union's first ``offset + limit`` runs are among the shards' first
    ``offset + limit`` each. Ties on ``createdAt`` break on the id, as within a
    shard (``ZREVRANGE`` order), so pages never overlap or skip.
    """
    merged = [run for page in per_shard for run in page]
    merged.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return merged[offset : offset + limit]


def list_runs_all(
    client: Any,
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: str | None = None,
    *,
    payloads: bool = True,
) -> list[RunState]:
    """:func:`list_runs` over every shard of ``client``, merged newest first.

    Every shard is asked, also for one workflow: a migration (``redflow migrate
    --shards``) leaves finished runs in the shard their id names, which may not
    be the workflow's shard. ``after`` (see :func:`list_runs`): each shard's
    ``limit`` runs after the cursor, merged (the cursor's ``createdAt`` is read
    in the shard its id names).
    """
    views = shard_views(client)
    if len(views) == 1:
        plan = list_runs(views[0].keys, workflow, status, limit, offset, after, payloads=payloads)
        return drive(views[0].redis, plan)
    status = _check_list_args(workflow, status, limit, offset)
    cursor = _cursor_all(client, listing.check_after(after))
    if cursor is not None:
        pages = [
            drive(v.redis, listing.page_of(v.keys, workflow, status, limit, 0, cursor, payloads))
            for v in views
        ]
        return merge_runs(pages, limit, 0)
    pages = [
        drive(v.redis, list_runs(v.keys, workflow, status, limit + offset, 0, payloads=payloads))
        for v in views
    ]
    return merge_runs(pages, limit, offset)


def _cursor_all(client: Any, after: str | None) -> Cursor | None:
    """The cursor of run ``after``, read in the shard its id names (None: none, or
    the run is not in that shard's ``runs:created``)."""
    if after is None or cannot_be_run_id(after):
        return None
    view = run_view(client, after)
    return drive(view.redis, listing.cursor_of(view.keys, after))


def iter_runs_all(
    client: Any,
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    offset: int = 0,
    page: int = ITER_PAGE,
    after: str | None = None,
    *,
    payloads: bool = True,
) -> Iterator[RunState]:
    """:func:`list_runs_all` as an iterator: the same runs in the same order, read
    ``page`` runs per round trip, so a large ``limit`` (``redflow runs list
    --limit 100000``) holds at most ``page`` runs per shard at once instead of
    every one. Without ``status``, ``page`` ids at a time, each page right after
    the last id of the one before (a keyset cursor: no run repeated or skipped
    while runs are enqueued); with one, the ids of the selection are read first,
    as by ``list_runs`` (a consistent page, ~140 bytes per run held: paging a
    status walk from a cursor would walk again at every page). ``after``: as for
    :func:`list_runs_all` (pass ``offset`` too); ``payloads``: as for :func:`list_runs`
    (``redflow runs list``'s table reads none: a page of 1,000 runs with 8 MiB
    inputs was an 8 GB pipeline). Arguments are checked at the call."""
    status = _check_list_args(workflow, status, limit, offset)
    after = listing.check_after(after)
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError("page must be an int >= 1")
    return _iter_all(client, workflow, status, limit, offset, page, after, payloads)


def _iter_all(
    client: Any,
    workflow: str | None,
    status: str | None,
    limit: int,
    offset: int,
    page: int,
    after: str | None,
    payloads: bool = True,
) -> Iterator[RunState]:
    if limit == 0:
        return
    cursor = _cursor_all(client, after)
    views = shard_views(client)
    if len(views) == 1:
        yield from _iter_view(views[0], workflow, status, limit, offset, page, cursor, payloads)
        return
    if cursor is not None:
        offset = 0
    # each shard's first offset + limit runs, newest first: merged as merge_runs does
    streams = [
        _iter_view(v, workflow, status, limit + offset, 0, page, cursor, payloads) for v in views
    ]
    merged = heapq.merge(*streams, key=lambda r: (r.created_at, r.id), reverse=True)
    yield from itertools.islice(merged, offset, offset + limit)


def _iter_view(
    view: Any,
    workflow: str | None,
    status: str | None,
    limit: int,
    offset: int,
    page: int,
    cursor: Cursor | None = None,
    payloads: bool = True,
) -> Iterator[RunState]:
    if status is None:
        yield from _iter_ranked(view, workflow, limit, offset, page, cursor, payloads)
        return
    ids = drive(
        view.redis, listing.select_run_ids(view.keys, workflow, status, limit, offset, cursor)
    )
    for at in range(0, len(ids), page):
        yield from drive(view.redis, listing.run_states(view.keys, ids[at : at + page], payloads))


def _iter_ranked(
    view: Any,
    workflow: str | None,
    limit: int,
    offset: int,
    page: int,
    cursor: Cursor | None,
    payloads: bool = True,
) -> Iterator[RunState]:
    """Without a status the runs come from one index scored by createdAt
    (``runs:created`` or the workflow's), read ``page`` ids at a time: each page
    starts right after the last id of the one before (a keyset cursor, its score
    read with it: one ZREVRANK), so runs enqueued or removed meanwhile neither
    repeat nor skip a run, and at most a page of ids is held. (Every id of the
    selection was read first: ``redflow runs list --limit 1000000`` held a
    million ids, ~140 MiB, before printing its first run.)"""
    index = view.keys.runs_created if workflow is None else view.keys.workflow_runs(workflow)
    left = limit
    while left > 0:
        ids, cursor = drive(view.redis, _ranked_page(index, min(page, left), offset, cursor))
        if not ids:
            return
        left -= len(ids)
        yield from drive(view.redis, listing.run_states(view.keys, ids, payloads))


def _ranked_page(
    index: str, count: int, offset: int, cursor: Cursor | None
) -> QueryPlan[tuple[list[str], Cursor | None]]:
    """``count`` ids of ``index`` newest first, from ``offset`` or right after
    ``cursor``, and the cursor of the last one."""
    start = offset if cursor is None else (yield from listing.position(index, cursor))
    (pairs,) = yield [("zrevrange", (index, start, start + count - 1, True))]
    if not pairs:
        return [], cursor
    member, score = pairs[-1]
    return [text(m) for m, _ in pairs], (float(score), text(member))


def get_run_any(client: Any, run_id: str) -> RunState | None:
    """:func:`get_run` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run(view.keys, run_id))


def get_run_steps_any(client: Any, run_id: str) -> list[StepState] | None:
    """:func:`get_run_steps` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run_steps(view.keys, run_id))


def count_status(client: Any, status: str) -> int:
    """How many runs are in ``status``, over every shard (one ZCARD each)."""
    return sum(
        int(drive(v.redis, one("zcard", v.keys.runs_status(status)))) for v in shard_views(client)
    )


def workflow_names_all(client: Any) -> list[str]:
    """The names of the synced workflows, sorted: one SMEMBERS of shard 0's
    ``workflows`` set (no metadata read: a filter form that refreshes every few
    seconds must not cost one HGETALL per workflow)."""
    view = shard_views(client)[0]
    return sorted(text(n) for n in drive(view.redis, one("smembers", view.keys.workflows)))


def list_workflows_all(client: Any) -> list[WorkflowMeta]:
    """:func:`list_workflows` with several shards: the names from shard 0's
    ``workflows`` set, each metadata hash from its workflow's shard."""
    views = shard_views(client)
    if len(views) == 1:
        return drive(views[0].redis, list_workflows(views[0].keys))
    names = sorted(text(n) for n in drive(views[0].redis, one("smembers", views[0].keys.workflows)))
    return workflow_metas(client, names)


def workflow_metas(client: Any, names: list[str]) -> list[WorkflowMeta]:
    """The metadata of the synced workflows among ``names``, in that order, each
    hash read from its workflow's shard (one pipeline per shard)."""
    views = shard_views(client)
    groups = {0: list(names)} if len(views) == 1 else _names_by_shard(client, list(names))
    found: dict[str, WorkflowMeta] = {}
    for index, group in groups.items():
        view = views[index]
        raws = drive(view.redis, _hashes([view.keys.workflow(name) for name in group]))
        for name, raw in zip(group, raws, strict=True):
            if raw:
                found[name] = codec.workflow_meta_from_hash(raw, name)
    return [found[n] for n in names if n in found]


def _hashes(keys: list[str]) -> QueryPlan[list[Any]]:
    """A plan reading the hashes ``keys`` (one pipeline)."""
    if not keys:
        return []
    replies = yield [("hgetall", (key,)) for key in keys]
    return replies


def _names_by_shard(client: Any, names: list[str]) -> dict[int, list[str]]:
    """Workflow ``names`` grouped by the index of the shard holding each one."""
    by_shard: dict[int, list[str]] = {}
    for name in names:
        by_shard.setdefault(as_shard(client, client.shard_of_workflow(name)).index, []).append(name)
    return by_shard


async def alist_workflows_all(
    client: Any,
    drive_async: Callable[[Any, QueryPlan[Any]], Awaitable[Any]],
) -> list[WorkflowMeta]:
    """:func:`list_workflows_all` for the asyncio client (its plan driver passed in)."""
    views = shard_views(client)
    if len(views) == 1:
        return cast(
            list[WorkflowMeta], await drive_async(views[0].redis, list_workflows(views[0].keys))
        )
    members = await drive_async(views[0].redis, one("smembers", views[0].keys.workflows))
    names = sorted(text(n) for n in cast(list[Any], members))
    found: dict[str, WorkflowMeta] = {}
    for index, group in _names_by_shard(client, names).items():
        view = views[index]
        raws = await drive_async(view.redis, _hashes([view.keys.workflow(name) for name in group]))
        for name, raw in zip(group, raws, strict=True):
            if raw:
                found[name] = codec.workflow_meta_from_hash(raw, name)
    return [found[n] for n in names if n in found]


async def alist_runs_all(
    client: Any,
    drive_async: Callable[[Any, QueryPlan[Any]], Awaitable[Any]],
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: str | None = None,
) -> list[RunState]:
    """:func:`list_runs_all` for the asyncio client, which passes its plan driver
    (``aio_connection.drive_query``)."""
    views = shard_views(client)
    if len(views) == 1:
        return cast(
            list[RunState],
            await drive_async(
                views[0].redis, list_runs(views[0].keys, workflow, status, limit, offset, after)
            ),
        )
    status = _check_list_args(workflow, status, limit, offset)
    after = listing.check_after(after)
    cursor = None
    if after is not None and not cannot_be_run_id(after):
        view = run_view(client, after)
        cursor = await drive_async(view.redis, listing.cursor_of(view.keys, after))
    if cursor is not None:
        pages = [
            await drive_async(v.redis, listing.page_of(v.keys, workflow, status, limit, 0, cursor))
            for v in views
        ]
        return merge_runs(pages, limit, 0)
    pages = [
        await drive_async(v.redis, list_runs(v.keys, workflow, status, limit + offset, 0))
        for v in views
    ]
    return merge_runs(pages, limit, offset)
