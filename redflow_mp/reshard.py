"""Re-sharding: ``redflow migrate --shards M`` moves a prefix's keyspace from the
shard count it records (N) to M. For a prefix whose supervisors are stopped.

What moves, and the rule that decides where (docs/operations.md, "Shards"):

* **A run stays the run its id names.** A run id names its shard (``<ulid>~<k>``,
  none = 0). A run whose id names shard ``k`` goes to the tag of shard
  ``k % M`` under M shards (the same tag when it did not change: shard 0 always
  keeps ``{<prefix>}``; clients read ``~k`` with ``k >= M`` as shard ``k % M``),
  with all its keys (``run:<id>``, steps, attempts, awaits, waiters, children,
  kicked, events and their lists: DUMP/RESTORE, content and TTL exact) and index
  entries with their scores (``runs:created``, ``runs:status:<s>``,
  ``workflow-runs:<wf>``, and for an unfinished run its ``q:<queue>:ready`` (+
  ``ready-queues``) or ``q:<queue>:scheduled`` entry (+ ``due-queues``), ``leases``
  and ``timers``).
  Going 1 -> M no run moves at all; M -> 1 every run moves to ``{<prefix>}``.
* **An unfinished run must land in its workflow's new shard** (queued,
  scheduled, running or suspended: its workflow's concurrency gate, rate limit
  and wf-waiting set live there): the migration refuses, before changing
  anything, while one exists whose id names another shard under M than its
  workflow's (``k % M != crc32(workflow) % M``; always fine for M = 1). Let
  those finish (stop enqueuing; a supervisor with the current count drains
  them) or cancel them, then run it again. A ``running`` run (its supervisor is
  gone: the command refuses live ones) moves with its ``leases`` entry: the
  reaper of its new shard puts it back when that lease is past, as after any
  crash. Every run suspended on children (moved or not) gets a timer due now:
  the promoter wakes it, it replays and suspends again, registering with its
  children where they now live (a finish kicked into a shard it left is not
  lost: the replay reads the children).
* **A workflow's keys** go to its new shard (``crc32(name) % M``):
  ``workflow:<name>``, ``wf-apps`` (and its name in the ``app-wfs`` index of
  each app that registers it), ``wf-running``, ``wf-waiting``, ``rate``,
  ``rate-started``,
  its cron definitions and next fire times, and its idempotency keys. An
  idempotency key whose run stays in another shard gets, next to it, a stub
  ``run:<id>`` hash (``movedTo``) expiring with the key, so the enqueue script
  (which dedupes only on a key whose run exists in its own shard) still
  returns that run's id until the key expires.
* Queue names (``queues``) are copied to every new shard; shard 0's ``meta``
  records ``shards`` = M last.

Resumable: shard 0's ``meta`` records ``reshardTo`` = M first (every client,
supervisor and ``redflow`` command is refused while it is there); each key is
copied (``RESTORE ... REPLACE``) before its source is deleted, and each index
entry is added at the target before it is removed at the source, so a run
killed at any point and run again (with the same M) completes the move,
nothing lost or duplicated. Reads with SCAN once per moved workflow (its
idempotency keys): an offline step, never on a per-run path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

import msgspec
from redis.exceptions import ResponseError

from .codec import text, whole_number
from .cron import CronDef
from .errors import RedflowError, ShardsMismatchError
from .queries import shard_views
from .refusals import doing
from .shardmeta import recorded_count, target_count
from .shards import SHARD_SEPARATOR, shard_index_of_workflow
from .withdrawal import index_refused, warn_index

__all__ = ["ReshardReport", "live_supervisors", "reshard"]

log = logging.getLogger(__name__)

FIELD_TARGET = "reshardTo"
_UNFINISHED = ("queued", "scheduled", "running", "suspended")
_FINISHED = ("succeeded", "failed", "canceled")
#: Runs read (and commands pipelined) at a time by the checks over every run.
_CHUNK = 1000
_RUN_SUFFIXES = (
    ":steps",
    ":awaits",
    ":waiters",
    ":children",
    ":events",
    ":event-keys",
    ":event-key-order",
    ":attempts",
    ":kicked",
    ":parents",
)
_cron_decoder = msgspec.json.Decoder(CronDef)


class ReshardReport(msgspec.Struct, kw_only=True):
    """What :func:`reshard` changed."""

    prefix: str
    old_shards: int
    new_shards: int
    workflows_moved: list[str] = msgspec.field(default_factory=list)
    runs_moved: int = 0
    unfinished_moved: int = 0
    parents_rewoken: int = 0
    keys_moved: int = 0
    idempotency_keys: int = 0
    cron_entries: int = 0

    def summary(self) -> str:
        return "\n".join(
            [
                f"prefix {self.prefix!r}: {self.old_shards} shard(s) -> {self.new_shards}",
                f"  workflows moved to another shard: {len(self.workflows_moved)}"
                + (f" ({', '.join(self.workflows_moved[:20])})" if self.workflows_moved else ""),
                f"  finished runs moved (ids kept): {self.runs_moved}",
                f"  unfinished runs moved (ids kept): {self.unfinished_moved}",
                f"  runs suspended on children woken to re-register: {self.parents_rewoken}",
                f"  keys moved: {self.keys_moved}",
                f"  idempotency keys moved: {self.idempotency_keys}",
                f"  cron entries moved: {self.cron_entries}",
            ]
        )


def live_supervisors(client: Any) -> list[str]:
    """Ids of the supervisors of the prefix whose status record has not expired."""
    ids = [text(x) for x in client.redis.zrange(client.keys.supervisors, 0, -1)]
    if not ids:
        return []
    raws = client.redis.mget([client.keys.supervisor(i) for i in ids])
    return [sid for sid, raw in zip(ids, raws, strict=True) if raw is not None]


def _suffix(run_id: str) -> int:
    sep = run_id.rfind(SHARD_SEPARATOR)
    if sep < 0:
        return 0
    tail = run_id[sep + 1 :]
    return whole_number(tail) or 0


def reshard(old: Any, new: Any, *, force: bool = False) -> ReshardReport:
    """Move the keyspace of ``old`` (a client with the recorded shard count) to the
    layout of ``new`` (the same URL and prefix, the target count). Raises
    :class:`RedflowError` (nothing changed) while supervisors are alive (unless
    ``force``) or an unfinished run's id names another shard than its workflow's
    under the new count."""
    n, m = old.shard_count, new.shard_count
    report = ReshardReport(prefix=old.prefix, old_shards=n, new_shards=m)
    meta = old.keys.meta
    where = f"{old.transport.describe()} (prefix {old.prefix!r}, {n} -> {m} shards)"
    # Each step named: a refusal (a key of another type, BUSY) is the library's
    # error saying which step and keys met it, not redis-py's bare reply
    # (refusals.py). Every step may be run again: the migration is resumable.
    with doing(f"checking the recorded shard count ({meta}) and live supervisors", where):
        pending = _preflight(old, n, m, force)
    olds, news = shard_views(old), shard_views(new)
    with doing("checking the unfinished runs (runs:status:<s>, run:<id>)", where):
        _refuse_unfinished(old, olds, news, m)
    if pending is None and n == m:
        return report
    with doing(f"recording the target shard count ({meta})", where):
        old.redis.hset(meta, FIELD_TARGET, m)
    with doing("copying the queue names (queues)", where):
        _copy_queue_names(olds, news)
    with doing(f"reading the workflow names ({old.keys.workflows}, parked, cron:def)", where):
        names = sorted(_workflow_names(old, olds))
    for name in names:
        src = olds[shard_index_of_workflow(name, n)]
        dst = news[shard_index_of_workflow(name, m)]
        if src.keys.tag != dst.keys.tag:
            with doing(f"moving workflow {name!r} ({src.keys.workflow(name)}, ...)", where):
                _move_workflow(name, src, dst, news, m, report)
    for view in olds:
        for status in (*_FINISHED, *_UNFINISHED):
            _move_finished(view, status, news, m, report, where)
    with doing("waking the runs suspended on children (timers)", where):
        _rewake_parents(news, report)
    for k, view in enumerate(news):
        with doing(f"recording shard {k} ({view.keys.meta})", where):
            view.redis.hset(view.keys.meta, mapping={"prefix": new.prefix, "shard": k})
    for view in olds:
        if all(view.keys.tag != v.keys.tag for v in news):  # a tag no longer used
            with doing(f"deleting the keys of tag {view.keys.tag} no longer used", where):
                _drop_tag(view)
    with doing(f"recording {m} shards ({meta})", where), old.redis.pipeline(True) as pipe:
        pipe.hset(meta, "shards", m)
        pipe.hdel(meta, FIELD_TARGET)
        pipe.execute()
    log.info("%s", report.summary())
    return report


def _drop_tag(view: Any) -> None:
    bells = [view.keys.q_bell(text(q)) for q in view.redis.smembers(view.keys.queues)]
    stale = (view.keys.meta, view.keys.queues, view.keys.lock_cron, view.keys.due_queues)
    lists = view.redis.scan_iter(match=_glob_escape(view.keys.tag) + ":qset:*", count=1000)
    view.redis.delete(*stale, view.keys.ready_queues, *bells, *lists)


def _preflight(old: Any, n: int, m: int, force: bool) -> bytes | None:
    """The target of an interrupted migration (None: none); raises when this one
    may not run."""
    meta = old.keys.meta
    recorded = old.redis.hget(meta, "shards")
    pending = old.redis.hget(meta, FIELD_TARGET)
    if pending is not None and target_count(meta, pending) != m:
        raise ShardsMismatchError(
            f"a migration of prefix {old.prefix!r} to {text(pending)} shards was interrupted: "
            f"finish it first (`redflow migrate --prefix {old.prefix} --shards {text(pending)}`)"
        )
    if pending is None and recorded is not None and recorded_count(meta, recorded) != n:
        raise ShardsMismatchError(f"prefix {old.prefix!r} records {text(recorded)} shards, not {n}")
    if not force:
        alive = live_supervisors(old)
        if alive:
            raise RedflowError(
                f"supervisors still run on prefix {old.prefix!r} ({', '.join(alive[:10])}): "
                "stop them first (or pass --force if they are gone for good)"
            )
    return cast(bytes | None, pending)


def _copy_queue_names(olds: list[Any], news: list[Any]) -> None:
    queues: set[str] = set()
    for view in olds:
        queues |= {text(q) for q in view.redis.smembers(view.keys.queues)}
    if queues:
        for view in news:
            view.redis.sadd(view.keys.queues, *sorted(queues))


def _refuse_unfinished(old: Any, olds: list[Any], news: list[Any], m: int) -> None:
    blocked: list[str] = []
    for view in olds:
        for status in _UNFINISHED:
            for ids in _chunks(view, status):
                with view.redis.pipeline(transaction=False) as pipe:
                    for run_id in ids:
                        pipe.hget(view.keys.run(run_id), "workflow")
                    workflows = pipe.execute()
                for run_id, wf in zip(ids, workflows, strict=True):
                    if wf is None:  # its keys already moved by an interrupted run
                        continue
                    named = news[_suffix(run_id) % m].keys.tag
                    if named != news[shard_index_of_workflow(text(wf), m)].keys.tag:
                        blocked.append(f"{run_id} ({status}, workflow {text(wf)!r})")
    if blocked:
        raise RedflowError(
            f"{len(blocked)} unfinished run(s) of prefix {old.prefix!r} would leave their "
            f"workflow's shard ({', '.join(blocked[:5])}{', ...' if len(blocked) > 5 else ''}): "
            f"a run keeps its id, whose shard number k maps to shard k % {m}, and its "
            "workflow's new shard is another. Let them finish (stop enqueuing; a "
            "supervisor with the current --shards drains them) or cancel them, then run "
            "the migration again. Nothing was changed."
        )


def _rewake_parents(news: list[Any], report: ReshardReport) -> None:
    """A timer due now for every run suspended on children: woken, it replays and
    suspends again with its children's waiters where they now live."""
    for view in news:
        for ids in _chunks(view, "suspended"):
            with view.redis.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.scard(view.keys.run_awaits(run_id))
                counts = pipe.execute()
            parents = [run_id for run_id, n in zip(ids, counts, strict=True) if int(n) > 0]
            if parents:
                secs, usecs = view.redis.time()
                now = int(secs) * 1000 + int(usecs) // 1000
                view.redis.zadd(view.keys.timers, dict.fromkeys(parents, now), lt=True)
                report.parents_rewoken += len(parents)


def _chunks(view: Any, status: str) -> Iterator[list[str]]:
    """The ids of ``runs:status:<status>`` of ``view``, _CHUNK at a time (read by
    rank: for readers that do not change that index). A million queued runs
    were one ZRANGE 0 -1 (~100 ms of Redis) and a pipeline of a million reads
    (~750 MB in the CLI)."""
    start = 0
    while True:
        ids = [
            text(x)
            for x in view.redis.zrange(view.keys.runs_status(status), start, start + _CHUNK - 1)
        ]
        if not ids:
            return
        start += _CHUNK
        yield ids


def _workflow_names(old: Any, olds: list[Any]) -> set[str]:
    names = {text(w) for w in old.redis.smembers(old.keys.workflows)}
    for view in olds:
        names |= {text(w) for w in view.redis.smembers(view.keys.parked)}
        for raw in view.redis.hvals(view.keys.cron_def):
            try:
                names.add(_cron_decoder.decode(raw).workflow)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        names |= _scanned(view, "workflow:")
    return names


def _scanned(view: Any, head: str) -> set[str]:
    pattern = _glob_escape(f"{view.keys.tag}:{head}") + "*"
    start = len(view.keys.tag) + 1 + len(head)
    return {text(k)[start:] for k in view.redis.scan_iter(match=pattern, count=1000)}


def _glob_escape(name: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in name)


def _move_key(src: Any, dst: Any, key_src: str, key_dst: str) -> bool:
    """Copy one key (content and TTL exact), then delete the source; False when
    the source is gone (moved by an earlier, interrupted run)."""
    dumped = src.redis.dump(key_src)
    if dumped is None:
        return False
    ttl = int(src.redis.pttl(key_src))
    dst.redis.restore(key_dst, max(0, ttl), dumped, replace=True)
    src.redis.delete(key_src)
    return True


def _move_app_index(name: str, src: Any, dst: Any) -> None:
    """``name`` in the ``app-wfs`` index (the registry duty's) of each app its
    moved ``wf-apps`` names, from the shard it left to the one it is in now (an
    index of another type is logged and left as it is)."""
    try:
        apps = [text(a) for a in dst.redis.hkeys(dst.keys.wf_apps(name))]
    except ResponseError:  # of another type: the start-up syncs list them again
        return
    for app in apps:  # (each app names it in wf-apps: it belongs in its index)
        for view, write in ((src, "srem"), (dst, "sadd")):
            key = view.keys.app_wfs(app)
            try:
                getattr(view.redis, write)(key, name)
            except ResponseError as exc:  # the index is an aid: the reshard goes on
                if not index_refused(exc):
                    raise
                warn_index(key, exc)


def _move_workflow(
    name: str, src: Any, dst: Any, news: list[Any], m: int, report: ReshardReport
) -> None:
    s, d = src.keys, dst.keys
    for fn in (
        "workflow",
        "wf_apps",
        "wf_running",
        "wf_waiting",
        "wf_suspended",
        "rate",
        "rate_started",
    ):
        if _move_key(src, dst, getattr(s, fn)(name), getattr(d, fn)(name)):
            report.keys_moved += 1
    _move_app_index(name, src, dst)
    if src.redis.srem(s.parked, name):
        dst.redis.sadd(d.parked, name)
    for cid, raw in src.redis.hgetall(s.cron_def).items():
        try:
            if _cron_decoder.decode(raw).workflow != name:
                continue
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        score = src.redis.zscore(s.cron_next, cid)
        dst.redis.hset(d.cron_def, cid, raw)
        if score is not None:
            dst.redis.zadd(d.cron_next, {cid: score})
        src.redis.zrem(s.cron_next, cid)
        src.redis.hdel(s.cron_def, cid)
        src.redis.hdel(s.cron_last, cid)  # its run id names the old shard
        skipped = src.redis.hget(s.cron_skipped, cid)  # a fire time: the same in any shard
        if skipped is not None:
            dst.redis.hset(d.cron_skipped, cid, skipped)
        src.redis.hdel(s.cron_skipped, cid)
        report.cron_entries += 1
    idem_head = s.idempotency(name, "")[: -len("0:")]  # "{tag}:idempo:<len:wf>:"
    for key_b in list(src.redis.scan_iter(match=_glob_escape(idem_head) + "*", count=1000)):
        key = text(key_b)
        target = d.tag + key[len(s.tag) :]
        run_id = src.redis.get(key)
        if run_id is None:
            continue
        # Copy, stub, then delete: a run killed after the delete found no key
        # at the source again and never wrote the stub (the key then enqueued
        # a second run).
        _copy_key(src, dst, key, target)
        _stub(dst, news, m, text(run_id), target)
        src.redis.delete(key)
        report.idempotency_keys += 1
    report.workflows_moved.append(name)


def _stub(dst: Any, news: list[Any], m: int, run_id: str, idem_key: str) -> None:
    """A ``run:<id>`` stub next to a moved idempotency key whose run lives in
    another shard: the enqueue script dedupes on it; it expires with the key."""
    home = news[_suffix(run_id) % m]
    if home.keys.tag == dst.keys.tag:
        return
    ttl = int(dst.redis.pttl(idem_key))
    with dst.redis.pipeline(transaction=True) as pipe:
        pipe.hset(dst.keys.run(run_id), mapping={"id": run_id, "movedTo": home.keys.tag})
        if ttl > 0:
            pipe.pexpire(dst.keys.run(run_id), ttl)
        pipe.execute()


def _run_keys(view: Any, run_id: str) -> list[str]:
    k = view.keys
    base = k.run(run_id)
    keys = [base, *(base + suffix for suffix in _RUN_SUFFIXES)]
    keys += [k.run_events(run_id, text(e)) for e in view.redis.smembers(k.run_event_names(run_id))]
    return keys


def _move_finished(
    src: Any, status: str, news: list[Any], m: int, report: ReshardReport, where: str
) -> None:
    """Move the runs of ``status`` in ``src`` whose id names another tag under M
    (the finished ones, and the unfinished ones with their queue, lease and timer
    entries); a refusal names the run (or the index) it met."""
    index = src.keys.runs_status(status)
    # A chunk at a time (a million finished runs were one ZRANGE 0 -1, ~100 ms of
    # Redis, all held in the CLI), by rank: a run moved leaves the index, so the
    # next chunk starts past the runs that stay (none moves meanwhile: no
    # supervisor runs, unless --force; a rerun takes what was missed).
    start = 0
    while True:
        with doing(f"reading the {status} runs to move ({index})", where):
            entries = src.redis.zrange(index, start, start + _CHUNK - 1, withscores=True)
        if not entries:
            return
        for raw_id, status_score in entries:
            run_id = text(raw_id)
            dst = news[_suffix(run_id) % m]
            if dst.keys.tag == src.keys.tag:
                start += 1
                continue
            with doing(f"moving {status} run {run_id} ({src.keys.run(run_id)}, ...)", where):
                _move_run(src, dst, run_id, status, status_score)
            if status in _FINISHED:
                report.runs_moved += 1
            else:
                report.unfinished_moved += 1


def _run_index_keys(keys: Any, queue: str | None) -> list[str]:
    """The per-run index entries an unfinished run may hold besides the status
    indexes (ZSETs scored per run: leases, timers, ready, scheduled)."""
    out = [keys.leases, keys.timers]
    if queue is not None:
        out += [keys.q_ready(queue), keys.q_scheduled(queue)]
    return out


def _move_run(src: Any, dst: Any, run_id: str, status: str, status_score: float) -> None:
    s, d = src.keys, dst.keys
    wf_raw, queue_raw = src.redis.hmget(s.run(run_id), ["workflow", "queue"])
    created = src.redis.zscore(s.runs_created, run_id)
    queue = text(queue_raw) if queue_raw is not None else None
    if wf_raw is not None:  # not moved yet (or half): copy every key, then the indexes
        for key in _run_keys(src, run_id):
            _copy_key(src, dst, key, d.tag + key[len(s.tag) :])
        scored = [
            (to, src.redis.zscore(frm, run_id))
            for frm, to in zip(_run_index_keys(s, queue), _run_index_keys(d, queue), strict=True)
        ]
        with dst.redis.pipeline(transaction=False) as pipe:
            if created is not None:
                pipe.zadd(d.runs_created, {run_id: created})
                pipe.zadd(d.workflow_runs(text(wf_raw)), {run_id: created})
            for key, score in scored:
                if score is not None:
                    pipe.zadd(key, {run_id: score})
                    if queue is not None and key == d.q_ready(queue):
                        pipe.zadd(d.ready_queues, {queue: score}, lt=True)  # (mark_ready)
                    if queue is not None and key == d.q_scheduled(queue):
                        pipe.zadd(d.due_queues, {queue: score}, lt=True)
            pipe.zadd(d.runs_status(status), {run_id: status_score})
            pipe.execute()
        src.redis.delete(*_run_keys(src, run_id))
    else:  # keys moved by an interrupted run: its workflow is read at the target
        wf_raw, queue_raw = dst.redis.hmget(d.run(run_id), ["workflow", "queue"])
        queue = text(queue_raw) if queue_raw is not None else None
    with src.redis.pipeline(transaction=False) as pipe:
        for key in _run_index_keys(s, queue):
            pipe.zrem(key, run_id)
        if wf_raw is not None:
            pipe.zrem(s.workflow_runs(text(wf_raw)), run_id)
        pipe.zrem(s.runs_created, run_id)
        pipe.execute()
    src.redis.zrem(s.runs_status(status), run_id)  # last: a rerun finds the run by it


def _copy_key(src: Any, dst: Any, key_src: str, key_dst: str) -> None:
    dumped = src.redis.dump(key_src)
    if dumped is None:
        return
    ttl = int(src.redis.pttl(key_src))
    dst.redis.restore(key_dst, max(0, ttl), dumped, replace=True)
