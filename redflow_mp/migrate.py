"""Keyspace migration: v1 (ready/wf-waiting LISTs, processing LISTs, lease STR
keys) to v2 (ZSETs, the ``leases`` ZSET, ``due-queues``), and the check that
refuses to serve a v1 keyspace.

:func:`migrate_keyspace` is for a namespace whose supervisors and workers are
stopped (``redflow migrate`` runs it). It is idempotent (a second run finds
nothing to convert) and keeps every run:

* a ready LIST becomes a ZSET in the same claim order (its scores are spaced a
  millisecond apart, ending before the migration, so later runs come after;
  parked runs are scored before every ready run);
* a run left in a processing LIST that is still ``running`` is put back at the
  front of its queue (``lastCrash`` = ``keyspace migration``), its lease key
  and concurrency slot dropped; other entries are stale and dropped;
* a wf-waiting LIST becomes a ZSET in the same release order;
* every queue with scheduled runs gets its ``due-queues`` entry;
* the idempotency key of an unfinished run stops expiring (v2 expires it when
  the run finishes) and the run records the key's TTL;
* ``meta`` gets ``keyspace`` = 2.

It reads with SCAN and, to convert a v1 LIST in one transaction, that whole
list, once: fine for a one-off offline step, never used on a per-run path. The
runs themselves are read in chunks (:data:`_CHUNK`). Each queue's and workflow's lists
change in one MULTI/EXEC guarded by WATCH.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import redis

from .codec import text
from .errors import RedflowError
from .refusals import doing
from .runs import Runs

__all__ = [
    "KEYSPACE_VERSION",
    "MigrationReport",
    "check_keyspace",
    "keyspace_problem",
    "migrate_keyspace",
    "ready_score",
]

log = logging.getLogger(__name__)

KEYSPACE_VERSION = 2
BAND = 2**44  # one priority band of ready scores (lua/_lib.lua: BAND)
MIGRATION_CAUSE = "keyspace migration"
_UNFINISHED = ("queued", "scheduled", "running")
#: Runs read (and commands pipelined) at a time.
_CHUNK = 1000


def ready_score(priority: int, at_ms: int) -> int:
    """The ready / wf-waiting score of a run (the formula of ``lua/_lib.lua``)."""
    p = min(9, max(0, int(priority)))
    return (9 - p) * BAND + int(at_ms)


class MigrationReport(msgspec.Struct, kw_only=True):
    """What :func:`migrate_keyspace` changed."""

    prefix: str
    queues: list[str] = msgspec.field(default_factory=list)
    ready_runs: int = 0
    requeued: list[str] = msgspec.field(default_factory=list)
    stale_entries: int = 0
    live_leases: int = 0
    waiting_runs: int = 0
    due_queues: int = 0
    idempotency_keys: int = 0
    lease_keys: int = 0

    def summary(self) -> str:
        lines = [
            f"keyspace of prefix {self.prefix!r} is at version {KEYSPACE_VERSION}",
            f"  ready lists converted: {len(self.queues)} ({self.ready_runs} runs)",
            f"  runs in flight put back at the front of their queue: {len(self.requeued)}"
            + (f" ({', '.join(self.requeued[:20])})" if self.requeued else ""),
            f"  stale processing entries dropped: {self.stale_entries}",
            f"  parked runs converted: {self.waiting_runs}",
            f"  queues with scheduled runs indexed: {self.due_queues}",
            f"  idempotency keys kept until their run finishes: {self.idempotency_keys}",
            f"  lease keys deleted: {self.lease_keys}",
        ]
        if self.live_leases:
            lines.append(
                f"  WARNING: {self.live_leases} of those runs had a live lease: a v1 "
                "supervisor may still be running them (stop it; they will run again)"
            )
        return "\n".join(lines)


def _glob_escape(name: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in name)


def _scan_names(r: redis.Redis, tag: str, head: str, tail: str) -> set[str]:
    """The <name> of every key ``{tag}:<head><name><tail>``."""
    pattern = _glob_escape(f"{tag}:{head}") + "*" + _glob_escape(tail)
    start = len(tag) + 1 + len(head)
    out = set()
    for key in r.scan_iter(match=pattern, count=1000):
        name = text(key)[start:]
        if tail:
            name = name[: -len(tail)]
        out.add(name)
    return out


def keyspace_problem(client: Runs, queues: Iterable[str], workflows: Iterable[str]) -> str | None:
    """Why this namespace cannot be served by this version (a v1 structure on one
    of ``queues`` or ``workflows``), or None."""
    k = client.keys
    qs = list(queues)
    wfs = list(workflows)
    with client.redis.pipeline(transaction=False) as pipe:
        for q in qs:
            pipe.type(k.q_ready(q))
            pipe.exists(k.v1_processing(q))
        for wf in wfs:
            pipe.type(k.wf_waiting(wf))
        replies = pipe.execute()
    found: list[str] = []
    for i, q in enumerate(qs):
        if text(replies[2 * i]) == "list":
            found.append(f"queue {q!r} has a ready LIST")
        if replies[2 * i + 1]:
            found.append(f"queue {q!r} has a processing LIST")
    for j, wf in enumerate(wfs):
        if text(replies[2 * len(qs) + j]) == "list":
            found.append(f"workflow {wf!r} has a wf-waiting LIST")
    if not found:
        return None
    return (
        f"the keyspace of prefix {client.prefix!r} was written by an older redflow-mp "
        f"(keyspace v1: {'; '.join(found[:5])}); stop every supervisor and worker of this "
        f"prefix, run `redflow migrate --prefix {client.prefix}` with the same --url, "
        "then start again"
    )


def check_keyspace(client: Runs, queues: Iterable[str], workflows: Iterable[str]) -> None:
    """Raise :class:`RedflowError` (naming ``redflow migrate``) if ``queues`` or
    ``workflows`` still have keyspace v1 structures."""
    problem = keyspace_problem(client, queues, workflows)
    if problem is not None:
        raise RedflowError(problem)


def migrate_keyspace(client: Runs) -> MigrationReport:
    """Convert a v1 keyspace to v2 in place (supervisors stopped); see the module doc."""
    r = client.redis
    k = client.keys
    where = f"{client.transport.describe()} (prefix {client.prefix!r})"
    report = MigrationReport(prefix=client.prefix)
    # Each step named: a refusal (a key of another type, BUSY) is the library's
    # error saying which step and keys met it, not redis-py's bare reply (refusals.py).
    with doing(f"reading the queue and workflow names ({k.queues}, {k.workflows}, ...)", where):
        queues = {text(q) for q in r.smembers(k.queues)}
        queues |= _scan_names(r, k.tag, "q:", ":ready")
        queues |= _scan_names(r, k.tag, "q:", ":processing")
        queues |= _scan_names(r, k.tag, "q:", ":scheduled")
        workflows = {text(w) for w in r.smembers(k.workflows)}
        workflows |= {text(w) for w in r.smembers(k.parked)}
        workflows |= _scan_names(r, k.tag, "wf-waiting:", "")
        # One clock for every converted entry, ending before now: parked runs (they
        # were ahead when parked) first, then each queue's runs in claim order.
        lists = [k.wf_waiting(wf) for wf in sorted(workflows)]
        lists += [key for q in sorted(queues) for key in (k.q_ready(q), k.v1_processing(q))]
        clock = itertools.count(client.server_time_ms() - _list_lengths(client, lists) - 1)
    for wf in sorted(workflows):
        with doing(f"converting the parked runs of workflow {wf!r} ({k.wf_waiting(wf)})", where):
            _migrate_waiting(client, wf, clock, report)
    for q in sorted(queues):
        keys = f"{k.q_ready(q)}, {k.v1_processing(q)}, {k.q_scheduled(q)}"
        with doing(f"converting queue {q!r} ({keys})", where):
            _migrate_queue(client, q, clock, report)
    with doing("keeping the idempotency keys of the unfinished runs", where):
        _keep_idempotency_keys(client, report)
    with doing("deleting the v1 lease keys (run:<id>:lease)", where):
        for key in r.scan_iter(match=_glob_escape(k.tag + ":run:") + "*:lease", count=1000):
            if text(r.type(key)) == "string":
                report.lease_keys += int(r.delete(key))
    with doing(f"recording keyspace {KEYSPACE_VERSION} ({k.meta})", where):
        r.hset(k.meta, "keyspace", KEYSPACE_VERSION)
    log.info("%s", report.summary())
    return report


def _run_fields(client: Runs, ids: Sequence[str], *fields: str) -> list[list[Any]]:
    """The ``fields`` of each run, in pipelines of _CHUNK commands."""
    out: list[list[Any]] = []
    for at in range(0, len(ids), _CHUNK):
        with client.redis.pipeline(transaction=False) as pipe:
            for run_id in ids[at : at + _CHUNK]:
                pipe.hmget(client.keys.run(run_id), list(fields))
            out.extend(pipe.execute())
    return out


def _list_lengths(client: Runs, keys: Sequence[str]) -> int:
    with client.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        types = pipe.execute()
    with client.redis.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, types, strict=True):
            if text(kind) == "list":
                pipe.llen(key)
        return sum(int(n) for n in pipe.execute())


def _migrate_queue(client: Runs, q: str, clock: Iterator[int], report: MigrationReport) -> None:
    r = client.redis
    k = client.keys
    ready, processing = k.q_ready(q), k.v1_processing(q)
    for _ in range(20):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(ready, processing)  # type: ignore[no-untyped-call]
                converted = _list(pipe, ready)
                claimed = _list(pipe, processing)
                if converted is None and claimed is None:
                    pipe.unwatch()
                    break
                # v1 pushed on the left and took from the right: the right end is first.
                order = list(reversed(claimed or []))
                info = _run_fields(client, order, "status", "workflow")
                back = [i for i, f in zip(order, info, strict=True) if text(f[0]) == "running"]
                workflow = {i: text(f[1]) for i, f in zip(order, info, strict=True) if f[1]}
                queued = list(reversed(converted or []))
                first = set(back)
                entries = back + [i for i in queued if i not in first]
                leases = [k.v1_lease(i) for i in order]
                with r.pipeline(transaction=False) as ttls:
                    for key in leases:
                        ttls.pttl(key)
                    remaining = [int(t) for t in ttls.execute()]
                present = sum(1 for t in remaining if t != -2)
                live = sum(1 for t in remaining if t > 0)
                scores = _scores(client, entries, clock)
                now = client.server_time_ms()
                pipe.multi()
                for run_id in back:
                    pipe.hset(
                        k.run(run_id),
                        mapping={
                            "status": "queued",
                            "lastCrash": MIGRATION_CAUSE,
                            "updatedAt": now,
                        },
                    )
                    pipe.zrem(k.runs_status("running"), run_id)
                    pipe.zadd(k.runs_status("queued"), {run_id: now})
                    if run_id in workflow:
                        pipe.srem(k.wf_running(workflow[run_id]), run_id)
                if converted is not None:
                    pipe.delete(ready)
                pipe.delete(processing, *leases)
                if scores:
                    # Into a ready set that is a v2 ZSET already, the runs put back
                    # go ahead of every run that became ready after the migration
                    # began (their scores end before it).
                    pipe.zadd(ready, scores)
                    low = min(scores.values())  # (see lua/_lib.lua: mark_ready)
                    pipe.zadd(k.ready_queues, {q: low}, lt=True)
                pipe.sadd(k.queues, q)
                pipe.execute()
            except redis.WatchError:
                continue
        if converted is not None:
            report.queues.append(q)
            report.ready_runs += len(queued)
        report.requeued.extend(back)
        report.stale_entries += len(order) - len(back)
        report.live_leases += live
        report.lease_keys += present
        break
    else:
        raise RedflowError(f"queue {q!r} kept changing during the migration: stop its clients")
    head = r.zrange(k.q_scheduled(q), 0, 0, withscores=True)
    if head:
        r.zadd(k.due_queues, {q: head[0][1]}, lt=True)
        report.due_queues += 1


def _scores(client: Runs, ids: Sequence[str], clock: Iterator[int]) -> dict[str, int]:
    """Ready scores keeping the order of ``ids`` (within each priority band), a
    millisecond apart on the migration's clock."""
    prio = _run_fields(client, ids, "priority")
    return {
        run_id: ready_score(int(text(p[0])) if p[0] else 0, next(clock))
        for run_id, p in zip(ids, prio, strict=True)
    }


def _list(pipe: Any, key: str) -> list[str] | None:
    """The members of a LIST key (None when it is not a list)."""
    if text(pipe.type(key)) != "list":
        return None
    return [text(x) for x in pipe.lrange(key, 0, -1)]


def _migrate_waiting(client: Runs, wf: str, clock: Iterator[int], report: MigrationReport) -> None:
    r = client.redis
    key = client.keys.wf_waiting(wf)
    for _ in range(20):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                ids = _list(pipe, key)  # v1: pushed on the right, taken from the left
                if ids is None:
                    pipe.unwatch()
                    return
                scores = _scores(client, ids, clock)
                pipe.multi()
                pipe.delete(key)
                if scores:
                    pipe.zadd(key, scores)
                    pipe.sadd(client.keys.parked, wf)
                pipe.execute()
            except redis.WatchError:
                continue
        report.waiting_runs += len(ids)
        return
    raise RedflowError(f"the parked runs of {wf!r} kept changing during the migration")


def _keep_idempotency_keys(client: Runs, report: MigrationReport) -> None:
    """v1 gave every key a TTL from enqueue; v2 keeps it until the run finishes.

    Reads the unfinished runs _CHUNK at a time (a million queued runs were one
    pipeline of a million HMGETs: ~1 GB in this process and the replies
    buffered in Redis), each chunk's keys checked in one round trip."""
    r = client.redis
    k = client.keys
    now = client.server_time_ms()
    for status in _UNFINISHED:
        start = 0
        while True:
            ids = [text(x) for x in r.zrange(k.runs_status(status), start, start + _CHUNK - 1)]
            if not ids:
                break
            start += _CHUNK
            fields = _run_fields(
                client, ids, "workflow", "idempotencyKey", "idempotencyTtlMs", "createdAt"
            )
            keyed = [
                (run_id, k.idempotency(text(wf), text(key)), created)
                for run_id, (wf, key, ttl, created) in zip(ids, fields, strict=True)
                if wf and key and not ttl
            ]
            if not keyed:
                continue
            with r.pipeline(transaction=False) as pipe:
                for _, idem, _ in keyed:
                    pipe.get(idem)
                    pipe.pttl(idem)
                seen = pipe.execute()
            with r.pipeline(transaction=True) as pipe:
                kept = 0
                for i, (run_id, idem, created) in enumerate(keyed):
                    owner, left = seen[2 * i], int(seen[2 * i + 1])
                    if owner != run_id.encode() or left <= 0:
                        continue
                    age = max(0, now - int(text(created) or now))
                    pipe.persist(idem)
                    pipe.hset(k.run(run_id), "idempotencyTtlMs", left + age)
                    kept += 1
                if kept:
                    pipe.execute()
            report.idempotency_keys += kept
