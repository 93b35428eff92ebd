"""Reads of the operator's workflow listing (``redflow workflows``, the
dashboard's workflows page) whose memory does not grow with the cron inputs.

A cron's input is stored twice: in its workflow's metadata (``cronJson``) and in
its entry of ``cron:def``. Read whole, 200 workflows with a 2 MiB input each held
866 MB to list them. Here each stored value is measured first (``HSTRLEN``) and
read in pipelines of at most :data:`LISTING_PAGE_BYTES` (a value above it alone),
decoded page by page; a workflow's ``cronJson`` above
:data:`LISTING_CRON_JSON_BYTES` is decoded without its inputs (schedules only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from . import codec
from .codec import WorkflowMeta
from .cron import Cron
from .queries import _names_by_shard, drive, one, shard_views

__all__ = ["LISTING_CRON_JSON_BYTES", "LISTING_PAGE_BYTES", "byte_pages", "listing_metas"]

#: Bytes of stored values one read of the listing carries at most (one value
#: larger than this is read alone).
LISTING_PAGE_BYTES = 4 * 1024 * 1024
#: A workflow's ``cronJson`` up to this size is listed whole (inputs included);
#: a larger one lists its schedules with ``input`` None.
LISTING_CRON_JSON_BYTES = 16 * 1024

_META_FIELDS = (
    b"name",
    b"queue",
    b"maxConcurrency",
    b"app",
    b"updatedAt",
    b"retriesJson",
    b"cronIdsJson",
    b"priority",
    b"rateLimit",
)


class _Schedule(msgspec.Struct):
    """A ``cronJson`` item without its input (msgspec skips the field unread)."""

    expression: str
    timezone: str = "UTC"
    id: str | None = None


_items = msgspec.json.Decoder(list[msgspec.Raw])
_schedule = msgspec.json.Decoder(_Schedule)


def byte_pages(sizes: Sequence[int], limit: int = LISTING_PAGE_BYTES) -> Iterator[range]:
    """Index ranges of ``sizes`` whose sum stays within ``limit`` (an item larger
    than ``limit``: a range of its own)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            yield range(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield range(start, len(sizes))


def _schedules_only(raw: Any) -> list[Cron]:
    """The schedules of a ``cronJson``, item by item as ``codec`` reads them (an
    item that does not validate is left out, not the whole list); each item is a
    view of ``raw`` (msgspec.Raw), its input skipped unread."""
    try:
        items = _items.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    out: list[Cron] = []
    for item in items:
        try:
            s = _schedule.decode(item)
            out.append(Cron(s.expression, s.timezone, None, s.id))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            continue
    return out


def listing_metas(client: Any, names: Sequence[str]) -> list[WorkflowMeta]:
    """:func:`~redflow_mp.queries.workflow_metas` for a listing: the same
    metadata, except that a ``cronJson`` above :data:`LISTING_CRON_JSON_BYTES`
    gives its schedules with ``input`` None; no read carries more than
    :data:`LISTING_PAGE_BYTES` of ``cronJson`` (one above it alone)."""
    views = shard_views(client)
    groups = {0: list(names)} if len(views) == 1 else _names_by_shard(client, list(names))
    found: dict[str, WorkflowMeta] = {}
    for index, group in groups.items():
        view = views[index]
        batch: list[tuple[str, tuple[Any, ...]]] = []
        for name in group:
            batch.append(("hmget", (view.keys.workflow(name), list(_META_FIELDS))))
            batch.append(("hstrlen", (view.keys.workflow(name), "cronJson")))
        replies = drive(view.redis, _batch(batch)) if batch else []
        sizes: list[int] = []
        present: list[str] = []
        for i, name in enumerate(group):
            values, size = replies[2 * i], int(replies[2 * i + 1])
            raw = {f: v for f, v in zip(_META_FIELDS, values, strict=True) if v is not None}
            if not raw and not size:
                continue  # no such hash
            found[name] = codec.workflow_meta_from_hash(raw, name)
            present.append(name)
            sizes.append(size)
        for page in byte_pages(sizes):
            raws = drive(
                view.redis,
                _batch([("hmget", (view.keys.workflow(present[i]), ["cronJson"])) for i in page]),
            )
            for i, (raw_json,) in zip(page, raws, strict=True):
                meta = found[present[i]]
                if not raw_json:
                    continue
                if sizes[i] <= LISTING_CRON_JSON_BYTES:
                    meta.cron = codec.workflow_meta_from_hash({b"cronJson": raw_json}).cron
                else:
                    meta.cron = _schedules_only(raw_json)
    return [found[n] for n in names if n in found]


def named_defs(view: Any, ids: list[str]) -> Iterator[tuple[list[str], list[Any]]]:
    """The stored ``cron:def`` records of ``ids`` (at most a CRON_PAGE of them), a
    page of at most :data:`LISTING_PAGE_BYTES` at a time: (ids found, records)."""
    if not ids:
        return
    strlens = [("hstrlen", (view.keys.cron_def, cid)) for cid in ids]
    sizes = [int(n) for n in drive(view.redis, _batch(strlens))]
    for page in byte_pages(sizes):
        chunk = [ids[i] for i in page if sizes[i]]
        if not chunk:
            continue
        raws = drive(view.redis, one("hmget", view.keys.cron_def, chunk))
        here = [(cid, raw) for cid, raw in zip(chunk, raws, strict=True) if raw is not None]
        yield [cid for cid, _ in here], [raw for _, raw in here]


def _batch(commands: list[tuple[str, tuple[Any, ...]]]) -> Any:
    """A plan of ``commands`` (one pipeline; one command: sent alone)."""
    replies = yield commands
    return replies
