"""Bounded reads for pages that refresh themselves (the dashboard's run page).

A run may hold a million steps, an 8 MB input, megabytes per step output; a page
that reloads every few seconds must cost what it shows, not what the run holds.
These read a bounded number of steps (HSCAN pages, never the whole hash) and
leave payloads too large to show undecoded: :func:`msgspec.json.format` indents
their JSON text in C and it is cut, instead of decoding megabytes into Python
objects to print a few thousand characters. Same query-plan style as
:mod:`queries` (one plan, driven by :func:`queries.drive`).
"""

from __future__ import annotations

import heapq
from typing import Any

import msgspec

from .codec import RunState, StepState, whole_number
from .hashpages import BytePages
from .keys import Keys
from .listing import PAYLOAD_FIELDS, ROW_FIELDS, payload_trips
from .options import cannot_be_run_id, check_run_id
from .queries import QueryPlan, _run_state, _steps_in_order, drive, run_view

__all__ = [
    "PREVIEW_READ_BYTES",
    "OutputPreview",
    "StepEnds",
    "get_run_preview",
    "get_run_preview_any",
    "get_run_steps_ends",
    "get_run_steps_ends_any",
    "get_run_steps_head",
    "get_run_steps_head_any",
]

#: HSCAN calls :func:`get_run_steps_head` makes at most.
_HEAD_SCANS = 3


#: The most bytes of an input or output the run page reads to show its head: a
#: larger one is not read (its size, HSTRLEN, says what it is). The page reads
#: the run again every few seconds: an 8 MiB input and output were 16 MB read
#: whole (HGETALL) at every look.
PREVIEW_READ_BYTES = 1 << 20
_SHOWN = {"inputJson": "input", "outputJson": "output"}


def get_run_preview(
    keys: Keys, run_id: str, limit: int
) -> QueryPlan[tuple[RunState, dict[str, str]] | None]:
    """:func:`queries.get_run` for a page that shows at most ``limit`` characters of a
    payload. An input or output over ``limit`` bytes is not decoded (8 MB of
    JSON made some 65 MB of Python objects to show 100,000 characters): it is
    ``None`` in the state, and its text, indented and cut at ``limit``
    characters, is in the dict under ``"input"`` / ``"output"``; one over
    :data:`PREVIEW_READ_BYTES` is not even read: the dict says its size.

    The hash is read by its fields (``listing.ROW_FIELDS`` and ``finalAttempt``,
    HMGET), the sizes of its payloads (HSTRLEN), then the payloads it shows in
    round trips of about ``listing.PAYLOAD_TRIP_BYTES`` (``error`` and ``wait``
    whole, as :func:`queries.get_run` reads them)."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    key = keys.run(run_id)
    fields = (*ROW_FIELDS, "finalAttempt")
    row, *lengths, entries = yield [
        ("hmget", (key, *fields)),
        *[("hstrlen", (key, field)) for field in PAYLOAD_FIELDS],
        ("lrange", (keys.run_attempts(run_id), 0, -1)),
    ]
    raw = {f.encode(): v for f, v in zip(fields, row, strict=True) if v is not None}
    sizes = [int(n) for n in lengths]
    if not raw and not any(sizes):  # unknown, or a hash of none of those fields (a hand edit)
        (exists,) = yield [("exists", (key,))]
        if not exists:
            return None
    previews: dict[str, str] = {}
    wanted: list[tuple[str, int]] = []
    for field, size in zip(PAYLOAD_FIELDS, sizes, strict=True):
        if field in _SHOWN and size > PREVIEW_READ_BYTES:
            previews[_SHOWN[field]] = (
                f"({size:,} bytes of JSON, more than this page reads: "
                f"`redflow runs show {run_id} --json` prints it)"
            )
        else:
            wanted.append((field, size))
    for trip in payload_trips(wanted):
        values = yield [("hget", (key, field)) for field in trip]
        for field, value in zip(trip, values, strict=True):
            if value is not None:
                raw[field.encode()] = value
    for field, name in _SHOWN.items():
        value = raw.get(field.encode())
        if value and len(value) > limit:
            previews[name] = _json_preview(bytes(raw.pop(field.encode())), limit)
    return _run_state(run_id, raw, entries), previews


def _json_preview(value: bytes, limit: int) -> str:
    """JSON text indented (in C: no Python objects), cut at ``limit`` characters."""
    try:
        shown = msgspec.json.format(value, indent=2)
    except (msgspec.DecodeError, RecursionError, ValueError):
        shown = value  # corrupt or nested too deeply: the raw text
    text = shown[: limit * 4].decode("utf-8", "replace")[:limit]
    return text + f"\n… ({len(shown):,} bytes in all)"


class OutputPreview(str):
    """A step output too large to decode for a page: its JSON text, indented and cut."""


def get_run_steps_head(
    keys: Keys, run_id: str, limit: int, output_limit: int | None = None
) -> QueryPlan[tuple[list[StepState], int] | None]:
    """Up to ``limit`` of the run's steps in execution order, and how many it has;
    None for an unknown id. Bounded whatever the run holds: at most
    :data:`_HEAD_SCANS` HSCAN calls of ``limit`` entries each (a page that
    refreshes itself must not read a million steps every few seconds). All
    the steps when the run has at most ``limit``; past that, the earliest of
    those read (Redis scans a hash in no particular order). ``output_limit``: an
    output over that many bytes is not decoded; it is an :class:`OutputPreview`."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    steps_key = keys.run_steps(run_id)
    exists, total, (cursor, raw) = yield [
        ("exists", (keys.run(run_id),)),
        ("hlen", (steps_key,)),
        ("hscan", (steps_key, 0, None, limit)),
    ]
    if not exists:
        return None
    raw = dict(raw)
    scans = 1
    while int(cursor) and len(raw) < limit and scans < _HEAD_SCANS:
        ((cursor, more),) = yield [("hscan", (steps_key, cursor, None, limit))]
        raw.update(more)
        scans += 1
    if output_limit is None:
        return _steps_in_order(raw)[:limit], int(total)
    cut = output_limit

    def big(json_text: str) -> OutputPreview:
        return OutputPreview(_json_preview(json_text.encode(), cut))

    return _steps_in_order(raw, cut, big)[:limit], int(total)


def get_run_preview_any(
    client: Any, run_id: str, limit: int
) -> tuple[RunState, dict[str, str]] | None:
    """:func:`get_run_preview` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run_preview(view.keys, run_id, limit))


def get_run_steps_head_any(
    client: Any, run_id: str, limit: int, output_limit: int | None = None
) -> tuple[list[StepState], int] | None:
    """:func:`get_run_steps_head` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run_steps_head(view.keys, run_id, limit, output_limit))


class _StepOrder(msgspec.Struct, rename="camel"):
    """What places a step record in execution order (the rest is skipped, not decoded)."""

    seq: int = 0
    started_at: int = 0
    status: str = "failed"


_order_decoder = msgspec.json.Decoder(_StepOrder)


class StepEnds(msgspec.Struct, kw_only=True):
    """The first and the last steps of a run in execution order, and what the
    run holds: ``total`` records (HLEN), ``by_status`` their count per status (as
    scanned). ``first`` and ``last`` never share a step; together they are every
    step when the run has at most as many as were asked for."""

    first: list[StepState]
    last: list[StepState]
    total: int
    by_status: dict[str, int]

    @property
    def omitted(self) -> int:
        """How many steps neither ``first`` nor ``last`` holds."""
        return max(0, self.total - len(self.first) - len(self.last))


_Item = tuple[int, int, bytes, bytes]  # seq, startedAt, name, the record


def get_run_steps_ends(
    keys: Keys, run_id: str, first: int, last: int
) -> QueryPlan[StepEnds | None]:
    """The run's ``first`` earliest and ``last`` latest steps (execution order) and
    its step count per status; None for an unknown id.

    Every record is read, by HSCAN pages of ~1,000 records or ~1 MiB (by the
    bytes that came: :class:`~redflow_mp.hashpages.BytePages`), but only
    what orders it (its ``seq``) is decoded, and only the kept ones are held
    between pages: memory is one page plus ``first + last`` records, whatever
    the run holds (``redflow runs show`` of a run of 100,000 steps decoded them
    all into ``StepState``s and printed each: 12 s and 182 MB). An unreadable
    record counts as ``failed`` and comes first, as in ``get_run_steps``."""
    check_run_id(run_id)
    if cannot_be_run_id(run_id):
        return None
    for label, value in (("first", first), ("last", last)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{label} must be an int >= 0")
    steps_key = keys.run_steps(run_id)
    exists, size, total = yield [
        ("exists", (keys.run(run_id),)),
        ("hget", (keys.run(run_id), "stepBytes")),
        ("hlen", (steps_key,)),
    ]
    if not exists:
        return None
    # Pages by the bytes that come (hashpages): stepBytes sets the first only (a
    # hand-set 10**15 made a call per record; a missing one, one call of all).
    pages = BytePages(total if isinstance(total, int) else 0, whole_number(size) or 0)
    head: dict[bytes, _Item] = {}
    tail: dict[bytes, _Item] = {}
    by_status: dict[str, int] = {}
    cursor: Any = 0
    while True:
        ((cursor, page),) = yield [("hscan", (steps_key, cursor, None, pages.count))]
        pages.took(page)
        items: list[_Item] = []
        for name_b, data in page.items():
            try:
                order = _order_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                order = _StepOrder()
            by_status[order.status] = by_status.get(order.status, 0) + 1
            items.append((order.seq, order.started_at, bytes(name_b), data))
        # A name HSCAN returns twice (a rehash in between) replaces its first copy.
        head.update((item[2], item) for item in items)
        tail.update((item[2], item) for item in items)
        head = {item[2]: item for item in heapq.nsmallest(first, head.values())}
        tail = {item[2]: item for item in heapq.nlargest(last, tail.values())}
        if not int(cursor):
            break
    for name in head:  # the earliest win: a step is shown once
        tail.pop(name, None)
    return StepEnds(
        first=_steps_in_order({n: item[3] for n, item in head.items()}),
        last=_steps_in_order({n: item[3] for n, item in tail.items()}),
        total=max(int(total), len(head) + len(tail)),
        by_status=by_status,
    )


def get_run_steps_ends_any(client: Any, run_id: str, first: int, last: int) -> StepEnds | None:
    """:func:`get_run_steps_ends` in the shard the id names."""
    view = run_view(client, check_run_id(run_id))
    return drive(view.redis, get_run_steps_ends(view.keys, run_id, first, last))
