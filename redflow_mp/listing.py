"""Which runs a listing shows: the ids of a page of runs, newest first,
optionally of one workflow and/or one status (``queries.list_runs`` reads them).

Every page reads the index that answers it (``runs:created``,
``workflow-runs:<name>``, ``runs:status:<s>``). Without a status, one index
scored by createdAt answers, and the page is a rank range: O(log n + limit) at
any depth. With a status, the smaller indexes are intersected in memory and a
large one is walked in chunks. A walk that finds too little after a few chunks
reads the smallest index instead (up to 200,000 members), newest first by its
own score and only until the runs left cannot be on the page
(``_read_newest``; a page deeper than 10,000 reads it whole): a sparse match
costs the newest part of the smaller index. Past 200,000 (both filters, or one status with a
sparse match) the walk goes on, its chunk doubling up to 32,000: a few dozen
round trips for a million runs. No ZMSCORE asks for more than 2,000 members (a
chunk's go as several in one round trip): one of 32,000 on a million-run index
held Redis for 27-45 ms, in front of every claim (a ZREVRANGE of 32,000 takes
~2 ms).

A page placed by ``offset`` with a status filter (no workflow) deep in a
large status (``--status succeeded --offset 900000`` among a million finished
runs) is found from the other side (``_complement_start``): the runs of
``runs:created`` NOT of that status are the members of the other status
indexes, usually few (the failed ones); their createdAt (ZMSCORE) and a few
single-run reads of ``runs:created`` place the page (its start is the offset
plus the runs of other statuses newer than it), and the walk starts there:
O(runs of the other statuses), not O(offset). It applies when the other status
indexes are sorted sets (or absent: a key of another type, a neighbour's, is
left to the walk, which does not read it), the status indexes together hold as
many runs as ``runs:created`` (each run in one of them, as the scripts keep
them) and the other statuses hold fewer runs than the offset and at most
200,000; otherwise (or with a workflow) the walk goes through the ``offset``
runs before the page. A keyset cursor (:data:`Cursor`: the createdAt and id of the last
run of the previous page) places it instead: the walk starts right after the
cursor's position (one ZREVRANK, or a ZCOUNT when the run is gone from the
walked index), and a page read whole starts after the cursor in its sorted
pairs. Runs added meanwhile are newer than the cursor: pages neither repeat
nor skip a run.

Plans are sans-I/O generators, as in :mod:`redflow_mp.queries`.
"""

from __future__ import annotations

import bisect
import functools
import heapq
from collections.abc import Callable, Generator
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import ResponseError

from . import codec
from .codec import RunState, text
from .errors import RedflowError, RedisBusyError, WrongTypeError
from .keys import STATUSES, Keys
from .options import cannot_be_run_id
from .replies import is_busy
from .shards import shard_index_of_run

__all__ = [
    "PAYLOAD_FIELDS",
    "PAYLOAD_TRIP_BYTES",
    "RANK_TRIP",
    "ROWS_TRIP",
    "ROW_FIELDS",
    "Batch",
    "Cursor",
    "QueryPlan",
    "check_after",
    "cursor_of",
    "mapped_reads",
    "page_of",
    "payload_trips",
    "position",
    "read_error",
    "run_states",
    "select_run_ids",
]

T = TypeVar("T")
P = ParamSpec("P")

#: redis-py calls sent together: (method name, positional arguments).
Batch = list[tuple[str, tuple[Any, ...]]]
QueryPlan = Generator[Batch, list[Any], T]


def read_error(exc: ResponseError, batch: Batch) -> Exception | None:
    """The library's error for a read (``batch``: one command, or several
    pipelined) that Redis refused: ``BUSY`` (another program's script past
    ``busy-reply-threshold``; nothing was changed) is a :class:`RedisBusyError`,
    ``WRONGTYPE`` a :class:`WrongTypeError` naming the command and its key (a
    pipeline's error names them already, the server's reply to a command sent
    alone does not); None for any other error (raised as it is). Both classes
    are ``redis.ResponseError`` subclasses, as the raw reply was."""
    text = str(exc)
    if is_busy(exc):
        return RedisBusyError(
            "Redis is busy running a script past its busy-reply-threshold (another "
            f"program's?); the read was refused and nothing was changed ({text})"
        )
    if "WRONGTYPE" not in text:
        return None
    if len(batch) == 1 and text.startswith("WRONGTYPE"):
        name, args = batch[0]
        if args and isinstance(args[0], str | bytes):
            key = args[0].decode("utf-8", "replace") if isinstance(args[0], bytes) else args[0]
            text = f"{text} ({name.upper()} {key}"
        else:
            text = f"{text} ({name.upper()}"
        return WrongTypeError(
            f"{text}: a key of another type under the prefix, written by hand or by "
            "another program)"
        )
    return WrongTypeError(
        f"{text} (a key of another type under the prefix, written by hand or by another program)"
    )


def mapped_reads(fn: Callable[P, T]) -> Callable[P, T]:
    """For a function of reads sent straight to redis-py (``admin``'s pipelines):
    a refusal is the library's error, as :func:`read_error` makes it. A lone
    command is sent as a plan (``queries.drive(r, queries.one(...))``), whose
    refusal names the command and its key; a pipeline's error names them itself."""

    @functools.wraps(fn)
    def reading(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ResponseError as exc:
            mapped = None if isinstance(exc, RedflowError) else read_error(exc, [])
            if mapped is None:
                raise
            raise mapped from exc

    return reading


_SCAN_LIMIT = 10_000
#: A large walk that found too little after this many chunks switches to reading
#: the smallest index whole (when it has at most _READ_LIMIT members): a sparse
#: match (a workflow's few failed runs among many) costs the smaller index, not
#: the whole walk.
_WALK_BUDGET = 8
_READ_LIMIT = 200_000
#: The walk's first chunk, and the largest it grows to (doubling each time): a
#: sparse match past _READ_LIMIT costs O(log n + n / _CHUNK_MAX) round trips
#: instead of n / 1,000, and one chunk's Redis time stays a few milliseconds.
_CHUNK_MIN = 1000
_CHUNK_MAX = 32_000
#: How much later than its score in a status index a run's createdAt may be:
#: both are Redis's clock, which a failover to a server whose clock is behind
#: may move back (see _read_newest).
_SKEW_MS = 60_000
#: Members per ZMSCORE: ~2-3 ms of Redis on a million-member index; more go as
#: several commands in one batch.
_PIECE = 2000
#: The shallowest offset for which a large status's page is placed from the other
#: statuses (``_complement_start``) rather than walked to.
_COMPLEMENT_FROM = _WALK_BUDGET * _CHUNK_MIN
#: The most reads placing such a page (each one a ZREVRANGE of one run); past it
#: (runs of other statuses dense around the page) the walk places it.
_COMPLEMENT_ROUNDS = 32
#: Ids one ZREVRANGE of a page without a status brings at most (a larger
#: ``limit`` is read in several, by keyset: :func:`_ranked_ids`).
RANK_TRIP = 10_000
#: A keyset cursor: the ``(createdAt, id)`` of the last run of the previous page.
Cursor = tuple[float, str]


def check_after(after: object) -> str | None:
    if after is None:
        return None
    if not isinstance(after, str):
        raise TypeError(f"after must be a run id (str), not {type(after).__name__}")
    if after:
        # a malformed id (<ulid>~x) is the ValueError its lookups raise, with any
        # shard count (with one it was read as a run that is gone: the first page)
        shard_index_of_run(after, 1)
    return after or None


def cursor_of(keys: Keys, after: str) -> QueryPlan[Cursor | None]:
    """The cursor of run ``after`` (its score in ``runs:created``), or None."""
    if cannot_be_run_id(after):
        return None
    (score,) = yield [("zscore", (keys.runs_created, after))]
    return None if score is None else (float(score), after)


#: The fields of a run hash a runs table shows (``payloads=False`` of
#: :func:`run_states`): every field ``RunState`` is made of but the payloads
#: (``inputJson``, ``outputJson``, ``errorJson``, up to ``max_payload_bytes`` each,
#: and ``wait``, 3 MB for a fan-out of 100,000 children). The dashboard's runs
#: page of 25 runs with 8 MiB inputs read 210 MB in one pipeline at every refresh:
#: another client waited 427 ms, and the server held the reply in memory.
ROW_FIELDS = (
    "id", "workflow", "queue", "status", "attempt", "maxAttempts", "createdAt",
    "availableAt", "startedAt", "finishedAt", "updatedAt", "cancelRequestedAt",
    "cancelReason", "idempotencyKey", "parentRunId", "cronId", "timeoutMs",
    "crashCount", "lastCrash", "retryOf", "priority", "attemptStartedAt",
)  # fmt: skip
_ROW_KEYS = tuple(f.encode() for f in ROW_FIELDS)


#: The fields of a run hash that hold its payloads: every field ``RunState`` is
#: made of but :data:`ROW_FIELDS`.
PAYLOAD_FIELDS = ("inputJson", "outputJson", "errorJson", "wait")
#: Bytes of payloads one round trip of :func:`run_states` brings, about: a field
#: larger than that comes alone. A page of 50 runs with 8 MiB inputs was one
#: pipeline of HGETALLs, 400 MB: another client's PING waited 365 ms behind it,
#: and Redis held the whole reply in its output buffer for that client.
PAYLOAD_TRIP_BYTES = 4 << 20
#: Runs whose rows (:data:`ROW_FIELDS`, and the sizes of their payloads) one
#: round trip of :func:`run_states` reads: a few hundred KiB of reply at most.
ROWS_TRIP = 1000


def run_states(keys: Keys, ids: list[str], payloads: bool = True) -> QueryPlan[list[RunState]]:
    """The runs ``ids`` that still exist, in that order: their rows
    (:data:`ROW_FIELDS`, HMGET) and the sizes of their payloads (HSTRLEN of
    :data:`PAYLOAD_FIELDS`), :data:`ROWS_TRIP` runs a round trip, then the
    payloads in round trips of about :data:`PAYLOAD_TRIP_BYTES` (a larger one
    alone): the same states as reading each hash whole, without a reply of every
    payload at once. ``payloads=False``: only :data:`ROW_FIELDS` are read
    (``input``, ``output``, ``error`` and ``wait`` are None), for a table of runs."""
    if not ids:
        return []
    raws: list[dict[Any, Any] | None] = []
    sizes: list[list[int]] = []
    per_run = 1 + (len(PAYLOAD_FIELDS) if payloads else 0)
    for at in range(0, len(ids), ROWS_TRIP):
        chunk = ids[at : at + ROWS_TRIP]
        batch: Batch = []
        for run_id in chunk:
            key = keys.run(run_id)
            batch.append(("hmget", (key, *ROW_FIELDS)))
            if payloads:
                batch.extend(("hstrlen", (key, field)) for field in PAYLOAD_FIELDS)
        replies = yield batch
        for i in range(len(chunk)):
            row, *lengths = replies[i * per_run : (i + 1) * per_run]
            raws.append({k: v for k, v in zip(_ROW_KEYS, row, strict=True) if v is not None})
            sizes.append([int(n) for n in lengths])
    # A hash holding none of those fields (a hand edit left it only a payload, or
    # only fields no run reads) is still a run, listed as the whole read lists it
    # (every field its default): one more round trip, for those ids only (the
    # usual one is a run removed since its id was read, gone from both reads).
    bare = [at for at, raw in enumerate(raws) if not raw and not any(sizes[at])]
    for part in range(0, len(bare), ROWS_TRIP):
        some = bare[part : part + ROWS_TRIP]
        there = yield [("exists", (keys.run(ids[at]),)) for at in some]
        for at, exists in zip(some, there, strict=True):
            raws[at] = {} if exists else None
    if payloads:
        yield from _read_payloads(keys, ids, raws, sizes)
    out = []
    for run_id, raw in zip(ids, raws, strict=True):
        if raw is not None:
            state = codec.run_state_from_hash(raw)
            if not state.id:
                state.id = run_id
            out.append(state)
    return out


def payload_trips(wanted: list[tuple[T, int]]) -> list[list[T]]:
    """``wanted`` (an item and its size in bytes, in order) cut into round trips
    of at most :data:`PAYLOAD_TRIP_BYTES` each; an item larger than that is a
    trip of its own. Items of size 0 are left out (an empty payload reads as an
    absent one)."""
    trips: list[list[T]] = []
    trip: list[T] = []
    held = 0
    for item, size in wanted:
        if size <= 0:
            continue
        if trip and held + size > PAYLOAD_TRIP_BYTES:
            trips.append(trip)
            trip, held = [], 0
        trip.append(item)
        held += size
    if trip:
        trips.append(trip)
    return trips


def _read_payloads(
    keys: Keys, ids: list[str], raws: list[dict[Any, Any] | None], sizes: list[list[int]]
) -> QueryPlan[None]:
    """Put the payload fields of the runs ``raws`` (by their ``sizes``) into them,
    read by :func:`payload_trips` (one HGET a field). A run whose payload is gone
    since its size was read and whose hash is gone too (removed by retention in
    between) is gone (None), as it is for a read after that; a payload removed
    alone (a wait that ended) is absent, as it now is."""
    wanted = [
        ((at, field), size)
        for at, raw in enumerate(raws)
        if raw is not None
        for field, size in zip(PAYLOAD_FIELDS, sizes[at], strict=True)
    ]
    vanished: dict[int, None] = {}
    for trip in payload_trips(wanted):
        values = yield [("hget", (keys.run(ids[at]), field)) for at, field in trip]
        for (at, field), value in zip(trip, values, strict=True):
            raw = raws[at]
            if value is None:
                vanished[at] = None
            elif raw is not None:
                raw[field.encode()] = value
    if vanished:
        there = yield [("exists", (keys.run(ids[at]),)) for at in vanished]
        for at, exists in zip(vanished, there, strict=True):
            if not exists:
                raws[at] = None


def position(index: str, cursor: Cursor) -> QueryPlan[int]:
    """How many members of ``index`` (scored by createdAt) come before ``cursor``
    newest first: its rank + 1, or, when the run is not there, the members of a
    higher score and those of its score with a higher id (ZREVRANGE order)."""
    score, run_id = cursor
    (rank,) = yield [("zrevrank", (index, run_id))]
    if rank is not None:
        return int(rank) + 1
    newer, ties = yield [
        ("zcount", (index, f"({score!r}", "+inf")),
        ("zrangebyscore", (index, score, score)),
    ]
    return int(newer) + sum(1 for m in ties if text(m) > run_id)


def select_run_ids(
    keys: Keys,
    workflow: str | None,
    status: str | None,
    limit: int,
    offset: int,
    cursor: Cursor | None = None,
) -> QueryPlan[list[str]]:
    created = keys.runs_created
    if status is None:
        # One index scored by createdAt answers it (runs:created, or the
        # workflow's, which lists the same runs under the same scores): the page
        # is a rank range, O(log n + limit) at any depth. (The workflow's was
        # walked and checked against runs:created: 0.1 s of Redis for a page at
        # offset 50,000, 1.3 s at 500,000.)
        index = created if workflow is None else keys.workflow_runs(workflow)
        start = offset if cursor is None else (yield from position(index, cursor))
        if limit <= RANK_TRIP:
            (raw,) = yield [("zrevrange", (index, start, start + limit - 1))]
            return [text(x) for x in raw]
        return (yield from _ranked_ids(index, start, limit))
    indexes = [created]
    if workflow is not None:
        indexes.append(keys.workflow_runs(workflow))
    indexes.append(keys.runs_status(status))
    sizes = yield [("zcard", (key,)) for key in indexes]
    smallest_size, smallest = min(zip(sizes, indexes, strict=True))
    if smallest_size == 0:
        return []
    others = [k for k in indexes if k != smallest and k != created]
    if smallest_size <= _SCAN_LIMIT:
        (members,) = yield [("zrange", (smallest, 0, -1))]
        keep = yield from _created_of_all(keys, members, others)
        return _page(keep, limit, offset, cursor)
    readable = smallest_size <= _READ_LIMIT
    # Large indexes: walk an index scored by createdAt newest first, in chunks,
    # keeping members present in the others. Never walk runs:status:<s>: it
    # is scored by the time a run entered that status, so walking it would
    # list runs in finishing order instead of newest-created first (and page
    # differently from the small path above).
    walk = keys.workflow_runs(workflow) if workflow is not None else created
    # A readable smallest index is read whole once the walk found too little.
    whole = smallest if readable and smallest != walk else None
    required = [k for k in indexes if k != walk]
    if (
        cursor is None
        and workflow is None
        and offset >= _COMPLEMENT_FROM
        and sizes[0] - sizes[-1] < min(offset, _READ_LIMIT + 1)  # the other statuses' runs
    ):
        begin = yield from _complement_start(keys, status, offset)
        if begin is not None:  # the walk starts at the page: no offset walked
            return (yield from _walk(keys, walk, required, None, others, limit, 0, begin))
    begin = 0 if cursor is None else (yield from position(walk, cursor))
    return (yield from _walk(keys, walk, required, whole, others, limit, offset, begin, cursor))


def _ranked_ids(index: str, start: int, limit: int) -> QueryPlan[list[str]]:
    """``limit`` ids of ``index`` newest first from rank ``start``, read
    :data:`RANK_TRIP` a round trip, each read right after the last id of the one
    before (a keyset cursor: runs added or removed meanwhile neither repeat nor
    skip one). ``list_runs(limit=10**9)`` read a million-run index in one reply."""
    out: list[str] = []
    while len(out) < limit:
        count = min(RANK_TRIP, limit - len(out))
        (pairs,) = yield [("zrevrange", (index, start, start + count - 1, True))]
        out.extend(text(m) for m, _ in pairs)
        if len(pairs) < count:
            break
        member, score = pairs[-1]
        start = yield from position(index, (float(score), text(member)))
    return out


def _complement_start(keys: Keys, status: str, offset: int) -> QueryPlan[int | None]:
    """Where the page ``offset`` runs deep into ``status`` starts in ``runs:created``
    (a rank, newest first), from the createdAt of the runs of every other status; None
    when that does not apply (see the module doc): the caller walks."""
    created = keys.runs_created
    other = [keys.runs_status(s) for s in STATUSES if s != status]
    # A key of another type among them (a neighbour's) does not fail the listing,
    # which the walk answers from runs:created and the status's index alone.
    kinds = [text(kind) for kind in (yield [("type", (key,)) for key in other])]
    if any(kind not in ("zset", "none") for kind in kinds):
        return None
    sizes = [("zcard", (created,)), ("zcard", (keys.runs_status(status),))] + [
        ("zcard", (key,)) for key in other
    ]
    if not _complement_fits((yield sizes), offset):
        return None
    # The sizes again and the first chunk of each other index in one batch, which
    # Redis runs without another client's command in between: read one after the
    # other, a run moving from one to another meanwhile (running, then
    # succeeded) was read in both, or in neither, and the page placed a run off.
    # (Larger indexes go on in chunks: a run is counted once, at worst missed.)
    present = [key for key, kind in zip(other, kinds, strict=True) if kind == "zset"]
    replies = yield sizes + [("zrange", (key, 0, _SCAN_LIMIT - 1)) for key in present]
    if not _complement_fits(replies[: len(sizes)], offset):
        return None
    rest = [int(x) for x in replies[2 : len(sizes)]]
    firsts = dict(zip(present, replies[len(sizes) :], strict=True))
    members: list[Any] = []
    for key, n in zip(other, rest, strict=True):
        members.extend(firsts.get(key, ()))
        # (an index absent at the TYPE read and made since is read from its start)
        for start in range(_SCAN_LIMIT if key in firsts else 0, n, _SCAN_LIMIT):
            (got,) = yield [("zrange", (key, start, start + _SCAN_LIMIT - 1))]
            members.extend(got)
    members = list(dict.fromkeys(members))
    # (createdAt, id) of those runs, ascending; then the page's start p is the
    # least fixed point of p = offset + (those newer than runs:created's p-th run),
    # reached in a few reads (each adds the runs of other statuses passed since).
    pairs = yield from _created_of_all(keys, members, [])
    pairs.sort()
    begin = offset
    for _ in range(_COMPLEMENT_ROUNDS):
        (at,) = yield [("zrevrange", (created, begin, begin, True))]
        if not at:  # past the end: an empty page
            return begin
        here = (float(at[0][1]), text(at[0][0]))
        newer = len(pairs) - bisect.bisect_right(pairs, here)
        if offset + newer == begin:
            return begin
        begin = offset + newer
    return None


def _complement_fits(sizes: list[Any], offset: int) -> bool:
    """Whether the ZCARDs ``sizes`` (runs:created, the status's index, the other
    statuses' indexes) let the other statuses place a page ``offset`` deep: every
    run in one status index, fewer of other statuses than the offset, and at most
    _READ_LIMIT of them."""
    total, mine, *rest = (int(x) for x in sizes)
    complement = sum(rest)
    return total == mine + complement and complement < offset and complement <= _READ_LIMIT


def _page(
    keep: list[tuple[float, str]], limit: int, offset: int, cursor: Cursor | None
) -> list[str]:
    """The page of ``keep`` ((createdAt, id) pairs) newest first: from ``offset``,
    or right after ``cursor``."""
    keep.sort(reverse=True)
    start = offset
    if cursor is not None:  # the first pair older than the cursor (keep is descending)
        start = bisect.bisect_left(keep, True, key=lambda pair: pair < cursor)
    return [run_id for _, run_id in keep[start : start + limit]]


def _walk(
    keys: Keys,
    walk: str,
    required: list[str],
    whole: str | None,
    others: list[str],
    limit: int,
    offset: int,
    begin: int = 0,
    cursor: Cursor | None = None,
) -> QueryPlan[list[str]]:
    """The page of ``walk``'s members (newest first) present in ``required``, walked
    in chunks; after _WALK_BUDGET chunks, ``whole`` (if any) is read whole instead.
    With ``cursor``, the walk starts at ``begin`` (the position just after it)
    and ``offset`` is not walked."""
    out: list[str] = []
    skip = offset if cursor is None else 0
    start = begin
    chunk = _CHUNK_MIN
    while len(out) < limit:
        if whole is not None and start - begin >= _WALK_BUDGET * _CHUNK_MIN:
            need = limit if cursor is not None else offset + limit
            if need <= _SCAN_LIMIT:  # a page near the top (or after a cursor)
                keep = yield from _read_newest(keys, whole, others, need, cursor)
            else:  # deep: most of the index is read anyway, the plain read is cheaper
                keep = yield from _read_whole(keys, whole, others)
            return _page(keep, limit, offset, cursor)
        (members,) = yield [("zrevrange", (walk, start, start + chunk - 1))]
        if not members:
            break
        start += chunk
        if whole is None:  # past _READ_LIMIT a sparse match walks on: longer strides
            chunk = min(2 * chunk, _CHUNK_MAX)
        for run_id in (yield from _members_of_all(members, required)):
            if skip:
                skip -= 1
                continue
            out.append(run_id)
            if len(out) >= limit:
                break
    return out


def _scores(keys_: list[str], members: list[Any]) -> QueryPlan[list[list[Any]]]:
    """The score of each of ``members`` in each of ``keys_`` (a column per key), in
    ZMSCOREs of at most _PIECE members sent together."""
    pieces = [members[i : i + _PIECE] for i in range(0, len(members), _PIECE)]
    if not keys_ or not pieces:
        return [[None] * len(members) for _ in keys_]
    replies = yield [("zmscore", (key, piece)) for key in keys_ for piece in pieces]
    n = len(pieces)
    return [[x for reply in replies[j * n : (j + 1) * n] for x in reply] for j in range(len(keys_))]


def _members_of_all(members: list[Any], others: list[str]) -> QueryPlan[list[str]]:
    if not others:
        return [text(m) for m in members]
    scores = yield from _scores(others, members)
    return [text(m) for i, m in enumerate(members) if all(col[i] is not None for col in scores)]


def _read_newest(
    keys: Keys, index: str, others: list[str], need: int, cursor: Cursor | None
) -> QueryPlan[list[tuple[float, str]]]:
    """(createdAt, id) of ``index``'s members present in ``others`` (and older
    than ``cursor``), enough for the ``need`` newest created: ``index`` is read
    newest first by its own score, in chunks growing to _SCAN_LIMIT, until the
    rest cannot be among them.

    A run's score in ``index`` (the time it entered a status, or its createdAt
    in a workflow's index) is never before its createdAt (both from Redis's
    clock; :data:`_SKEW_MS` allowed for a failed-over server's): once the
    ``need``-th newest createdAt found is past the last score read by more than
    that, no run not read yet is newer. Runs fail, finish or get canceled soon
    after they are created, so the first page of a sparse status costs a chunk
    or two of its index, not the whole of it (it read 20,000 failed runs, 82 ms
    of Redis for each dashboard refresh at a million runs). At worst it reads
    the whole index, as before."""
    keep: list[tuple[float, str]] = []
    top: list[float] = []  # the `need` newest createdAt kept so far (a min-heap)
    start = 0
    chunk = _CHUNK_MIN
    while True:
        (pairs,) = yield [("zrevrange", (index, start, start + chunk - 1, True))]
        if not pairs:
            break
        start += chunk
        got = yield from _created_of_all(keys, [m for m, _ in pairs], others)
        for pair in got:
            if cursor is not None and pair >= cursor:
                continue
            keep.append(pair)
            if len(top) < need:
                heapq.heappush(top, pair[0])
            elif pair[0] > top[0]:
                heapq.heapreplace(top, pair[0])
        if len(pairs) < chunk:
            break
        chunk = min(2 * chunk, _SCAN_LIMIT)
        if len(top) >= need and float(pairs[-1][1]) + _SKEW_MS < top[0]:
            break
    return keep


def _read_whole(keys: Keys, index: str, others: list[str]) -> QueryPlan[list[tuple[float, str]]]:
    """(createdAt, id) of ``index``'s members present in ``others``, reading
    ``index`` in chunks of _SCAN_LIMIT (each chunk checked as it comes)."""
    keep: list[tuple[float, str]] = []
    start = 0
    while True:
        (members,) = yield [("zrange", (index, start, start + _SCAN_LIMIT - 1))]
        if not members:
            break
        start += _SCAN_LIMIT
        keep.extend((yield from _created_of_all(keys, members, others)))
    return keep


def _created_of_all(
    keys: Keys, members: list[Any], others: list[str]
) -> QueryPlan[list[tuple[float, str]]]:
    """(createdAt, id) of the ``members`` present in ``runs:created`` and ``others``."""
    results = yield from _scores([keys.runs_created, *others], members)
    created_scores = results[0]
    keep: list[tuple[float, str]] = []
    for i, member in enumerate(members):
        created_at = created_scores[i]
        if created_at is None:
            continue
        if all(col[i] is not None for col in results[1:]):
            keep.append((created_at, text(member)))
    return keep


def page_of(
    keys: Keys,
    workflow: str | None,
    status: str | None,
    limit: int,
    offset: int,
    cursor: Cursor | None,
    payloads: bool = True,
) -> QueryPlan[list[RunState]]:
    if limit == 0:
        return []
    ids = yield from select_run_ids(keys, workflow, status, limit, offset, cursor)
    return (yield from run_states(keys, ids, payloads))
