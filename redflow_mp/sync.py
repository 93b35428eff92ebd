"""Registry sync: write a registry's workflow metadata and cron entries to Redis.

``sync_registry(app=...)`` writes ``workflow:<name>`` and the cron definitions
and first fire times of every registered workflow, records the app's
registration in ``wf-apps:<name>``, and withdraws the app's registration of
workflows that are gone from its registry (older than 30 s, and listed by no
live registration of the app: what each running supervisor renews with
:func:`renew_registration`); the metadata and cron entries (never runs) go with
the last app's registration.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import redis

from . import codec, cronswap
from .codec import text
from .cron import CronDef, cron_id_for, next_fire_ms
from .cronswap import (
    broken_cron_keys,
    cron_keys,
    own_cron_ids,
    remove_cron_entries,
    same_schedule,
)
from .options import check_name, timeout_to_ms
from .registry import Registry, Workflow
from .runs import Runs, encode_payload
from .shardset import Shard
from .withdrawal import (
    _READ_CHUNK,
    STALE_WORKFLOW_GRACE_MS,
    execute_sparing_index,
    json_list,
    live_names,
    registrations,
    remove_stale_workflows,
    shard_chunks,
)

__all__ = [
    "REFRESH_INTERVAL_MS",
    "STALE_WORKFLOW_GRACE_MS",
    "SYNC_CHUNK_BYTES",
    "check_cron_inputs",
    "loaded_live",
    "registration_digest",
    "registry_gaps",
    "renew_registration",
    "sync_registry",
    "withdraw_stale",
]

log = logging.getLogger(__name__)

#: How often a running supervisor renews its app's live registration
#: (:func:`renew_registration`): well inside the grace above.
REFRESH_INTERVAL_MS = 10_000
_cron_decoder = msgspec.json.Decoder(CronDef)


def sync_registry(runs: Runs, registry: Registry | None = None, *, app: str) -> None:
    """Write workflow metadata and cron entries of ``registry`` for ``app``.

    Ownership: several apps (supervisors started with different ``--app``)
    may register the same workflow. Each sync records, per workflow it
    registers, ``app -> now`` in ``wf-apps:<name>``; the metadata hash holds
    the definition of the latest sync (its ``app`` field names that app), so
    apps sharing a workflow should define it alike. When ``app`` syncs a
    registry that no longer lists a workflow it registered:

    - if ``app`` synced it less than 30 s ago, nothing changes (other hosts
      of the same app may still run the previous code: a rolling deploy);
    - nor while a running supervisor of ``app`` loads it (its live
      registration, :func:`renew_registration`: hosts of one app may load
      different modules);
    - otherwise ``app`` withdraws its own registration, and the metadata and
      cron entries (never runs) are removed only when no other app still
      registers the workflow. An app never withdraws another app's
      registration, however old: a supervisor syncs at start and on HUP only,
      so an old sync time does not mean the app is gone.

    Metadata written before this rule (an ``app`` field, no ``wf-apps``
    record) counts as that app's registration at its ``updatedAt``.
    """
    if not isinstance(app, str):
        raise TypeError("app must be a str")
    if not app.strip():
        raise ValueError("sync_registry requires a non-empty app")
    app = check_name(app.strip(), "app")
    reg = registry if registry is not None else runs.registry
    if not isinstance(reg, Registry):
        raise TypeError("registry must be a Registry")
    now = runs.server_time_ms()
    defs = reg.list()
    check_cron_inputs(defs, runs.max_payload_bytes)
    remove_stale_workflows(runs, {wf.name for wf in defs}, app, now, every=True)
    # One read and one transaction per shard and chunk of workflows, not two
    # round trips per workflow (5,000 workflows: 4.2 s at every start).
    by_shard: dict[int, list[Workflow[Any, Any]]] = {}
    for wf in defs:
        by_shard.setdefault(runs.shard_of_workflow(wf.name).index, []).append(wf)
    for group in by_shard.values():
        for chunk in _weighed_chunks(group):
            _sync_workflows(runs, chunk, app, now)


def check_cron_inputs(wfs: list[Workflow[Any, Any]], limit: int) -> None:
    """Refuse, before anything is written, a cron input past ``limit``
    (``max_payload_bytes``): it is the input of every run the cron creates,
    which ``run()`` would refuse (a 20 MiB one was synced, and a once-a-second
    cron held 339 MB of Redis after 12 s)."""
    for wf in wfs:
        for trigger in wf.cron:
            if trigger.input is None:
                continue
            what = (
                f"input of cron {cron_id_for(wf.name, trigger)!r} "
                f"(workflow {wf.name!r}, {trigger.expression!r})"
            )
            encode_payload(trigger.input, what, limit)


#: Encoded cron inputs one chunk of the sync (one read, one transaction) carries
#: at most; a workflow whose inputs weigh more is a chunk of its own. Chunked by
#: count only, one HMGET and one MULTI could carry 1,000 inputs of 8 MiB.
SYNC_CHUNK_BYTES = 16 * 1024 * 1024


def _input_bytes(wf: Workflow[Any, Any]) -> int:
    """The encoded size of ``wf``'s cron inputs (each stored twice: in its
    ``cron:def`` record and in the metadata's ``cronJson``)."""
    return sum(len(codec.encode_json(c.input)) for c in wf.cron if c.input is not None)


def _weighed_chunks(wfs: list[Workflow[Any, Any]]) -> Iterator[list[Workflow[Any, Any]]]:
    """``wfs`` in chunks of at most _READ_CHUNK workflows and cron entries together
    and at most :data:`SYNC_CHUNK_BYTES` of cron inputs (a workflow with more
    alone): a chunk is one read and one transaction. Chunked by workflows only,
    10,000 workflows with 10 crons each were transactions of 10,000 entries,
    50 ms of Redis CPU each."""
    chunk: list[Workflow[Any, Any]] = []
    weight = size = 0
    for wf in wfs:
        w, b = 1 + len(wf.cron), _input_bytes(wf)
        if chunk and (weight + w > _READ_CHUNK or size + b > SYNC_CHUNK_BYTES):
            yield chunk
            chunk, weight, size = [], 0, 0
        chunk.append(wf)
        weight += w
        size += b
    if chunk:
        yield chunk


def withdraw_stale(runs: Runs, names: Iterable[str], *, app: str) -> None:
    """The withdrawal half of :func:`sync_registry` for a running supervisor of
    ``app`` that loads the workflows ``names``: the app's registrations of other
    workflows go by the same rules (older than :data:`STALE_WORKFLOW_GRACE_MS`,
    listed by no live registration of the app). A supervisor calls this every
    minute: a deploy that drops a workflow restarts each host within the grace of
    the previous process's last renewal, so its start-up sync keeps the
    workflow, and nothing looked again (its cron fired until the next deploy).
    Cost: what the app registers (its ``app-wfs`` index, read a page at a
    time, less ``names``: two reads each), not every workflow of the prefix
    (other apps' 10,000 workflows cost 20,001 commands a minute; see
    :mod:`~redflow_mp.withdrawal`)."""
    app = check_name(app.strip(), "app")
    remove_stale_workflows(runs, set(names), app, runs.server_time_ms(), every=False)


def registration_digest(app: str, names: Iterable[str]) -> str:
    """The id of the live registration of ``app`` loading the workflows ``names``:
    supervisors of one app that load the same modules share one record. Each part
    is length-prefixed: a name may hold any character (NUL too), and names joined
    by a separator made ``a``, ``b`` and ``a<NUL>b`` one record, the first host's."""
    h = hashlib.sha1(usedforsecurity=False)
    for part in (app, *sorted(set(names))):
        data = part.encode()
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()[:20]


def renew_registration(runs: Runs, names: Sequence[str], *, app: str, digest: str) -> bool:
    """Keep ``app``'s live registration of the workflows ``names`` (``digest``: its
    :func:`registration_digest`) for :data:`STALE_WORKFLOW_GRACE_MS` more; a running
    supervisor calls this every :data:`REFRESH_INTERVAL_MS`. Returns True when the
    record was gone (first call, expired, deleted, FLUSHALL) and was written again.

    Why: the supervisors of one app may load different modules (a GPU host and a
    CPU host, both ``--app etl``). Each one's sync withdraws the app's
    registration of workflows its own registry lacks once it is older than
    :data:`STALE_WORKFLOW_GRACE_MS`, unless a live registration of the app still
    lists the workflow. Steady state: one ``PEXPIRE`` and one ``SADD`` of a member
    already there, whatever the number of workflows (renewing each workflow's
    ``wf-apps`` time read and wrote two keys per workflow per tick: 1,000
    workflows and 20 supervisors made 4,000 commands/s on an idle Redis). The
    names are written again (one pipeline) only when the record is gone, so a
    lost registration comes back within one renewal period."""
    app = check_name(app.strip(), "app")
    if not names:
        return False
    keys = runs.keys
    key = keys.app_reg(digest)
    with runs.redis.pipeline(transaction=False) as pipe:
        pipe.pexpire(key, STALE_WORKFLOW_GRACE_MS)
        pipe.sadd(keys.app_live(app), digest)
        alive, _ = pipe.execute()
    if alive:
        return False
    names = list(names)
    with runs.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for at in range(0, len(names), _READ_CHUNK):
            pipe.sadd(key, *names[at : at + _READ_CHUNK])
        pipe.pexpire(key, STALE_WORKFLOW_GRACE_MS)
        pipe.execute()
    return True


def loaded_live(runs: Runs, name: str) -> bool:
    """Whether a running supervisor loads the workflow ``name``: a live
    registration (:func:`renew_registration`) of an app that registered it lists
    it. A worker that claimed a run of a workflow it does not load puts the run
    back for such a supervisor (a rolling deploy that adds a workflow on a queue
    the old code serves too; two apps sharing a queue) instead of failing it.
    Four reads (more with several apps), only on that rare path."""
    shard = runs.shard_of_workflow(name)
    try:
        with shard.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(shard.keys.wf_apps(name))
            pipe.hmget(shard.keys.workflow(name), "app", "updatedAt")
            apps, legacy = pipe.execute()
    except redis.ResponseError:  # a key of another type: nobody is known to load it
        return False
    return any(live_names(runs, app, [name]) for app in registrations(name, apps, legacy))


def _sync_workflows(runs: Runs, wfs: list[Workflow[Any, Any]], app: str, now: int) -> None:
    """Write ``wfs`` (workflows of one shard): one read, the cron entries a changed
    cron replaces (``cronswap.py``: atomic against the leader's fires), one
    MULTI/EXEC; all of it again while an entry replaced changes under the sync."""
    for _ in range(cronswap.ATTEMPTS - 1):
        if _sync_chunk(runs, wfs, app, now):
            return
        log.debug("cron entries replaced by the sync changed since its read; read again")
    # A leader firing hundreds of every-second entries of one workflow can refuse
    # every try: the last one replaces them whatever fired meanwhile, so that a
    # supervisor's start never fails for it (such an entry may fire a time twice).
    log.warning(
        "cron entries replaced by the registry sync changed under it %d times in a row "
        "(a leader firing them, or another sync): replacing them anyway; a replaced "
        "cron may fire once more at the time it fired meanwhile",
        cronswap.ATTEMPTS - 1,
    )
    if not _sync_chunk(runs, wfs, app, now, force=True):
        raise RuntimeError("cron entries changed under a forced registry sync")  # never


def _sync_chunk(
    runs: Runs, wfs: list[Workflow[Any, Any]], app: str, now: int, force: bool = False
) -> bool:
    """One try of :func:`_sync_workflows`: False (the metadata not written) when a
    cron entry it replaces changed since its read."""
    # with shards > 1 the workflow's keys (metadata, its cron entries, its queue in
    # `queues`) are in its shard; the `workflows` set (listing) is shard 0's
    shard = runs.shard_of_workflow(wfs[0].name)
    keys = shard.keys
    all_ids = sorted({cron_id_for(wf.name, c) for wf in wfs for c in wf.cron})
    broken, replies, read_at = _read_chunk(shard, wfs, all_ids)
    stored: dict[str, Any] = {}
    if all_ids and keys.cron_def not in broken:
        if isinstance(replies[2 * len(wfs)], Exception):
            raise replies[2 * len(wfs)]
        stored = dict(zip(all_ids, replies[2 * len(wfs)], strict=True))
    # The next fire times already scheduled: an unchanged entry keeps its own
    # (ZADD NX), so none is computed for it (croniter: ~0.9 ms an entry, about
    # 9 s of a supervisor's start with 10,000 crons).
    scheduled = _scheduled(all_ids, replies[2 * len(wfs) + 1] if all_ids else None)
    if keys.cron_def not in broken:  # whose the ids a workflow drops are (own_cron_ids)
        stored.update(_dropped_defs(shard, wfs, replies, set(all_ids)))
    written = set(all_ids)
    plans = [
        _plan(wf, replies[2 * i][0], stored, scheduled, written, keys.cron_def in broken)
        for i, wf in enumerate(wfs)
    ]
    swapped = cronswap.apply(shard, plans, stored, broken, force)
    if swapped is None:
        return False
    if shard.index != 0:
        runs.redis.sadd(runs.keys.workflows, *(wf.name for wf in wfs))
    replan: list[str] = []
    with shard.redis.pipeline(transaction=True) as pipe:
        for i, wf in enumerate(wfs):
            (_, old_app, old_updated, old_rate), has_apps = replies[2 * i], replies[2 * i + 1]
            if old_rate and text(old_rate) != (wf.rate_limit.text if wf.rate_limit else ""):
                replan.append(wf.name)
            _write_workflow(
                pipe,
                shard,
                wf,
                app,
                now,
                (old_app, old_updated, has_apps),
                plans[i],
                (broken, read_at, i in swapped),
            )
        execute_sparing_index(pipe, keys.tag)  # (an index of another type: logged)
    _replan_rates(shard, replan)
    return True


def _read_chunk(
    shard: Shard, wfs: list[Workflow[Any, Any]], all_ids: list[str]
) -> tuple[set[str], list[Any], int]:
    """One pipelined read of what a sync of ``wfs`` needs: (the cron keys of
    another type, the replies after their TYPEs, the server's time after them)."""
    keys = shard.keys
    with shard.redis.pipeline(transaction=False) as read:
        for k, _ in cron_keys(keys):
            read.type(k)
        for wf in wfs:
            read.hmget(keys.workflow(wf.name), "cronIdsJson", "app", "updatedAt", "rateLimit")
            read.exists(keys.wf_apps(wf.name))
        if all_ids:
            read.hmget(keys.cron_def, *all_ids)
            read.zmscore(keys.cron_next, all_ids)
        # last: a first fire time is computed from a time after everything read
        # (an entry another sync removed fired before it)
        read.time()
        # a cron key of the wrong type fails only its own read (TYPE says which)
        replies = read.execute(raise_on_error=False)
    n_cron_keys = len(cron_keys(keys))
    broken = broken_cron_keys(keys, replies[:n_cron_keys])
    replies = replies[n_cron_keys:]
    for reply in [*replies[: 2 * len(wfs)], replies[-1]]:
        if isinstance(reply, Exception):
            raise reply
    return broken, replies, int(replies[-1][0]) * 1000 + int(replies[-1][1]) // 1000


def _plan(
    wf: Workflow[Any, Any],
    old_ids_json: Any,
    stored: dict[str, Any],
    scheduled: dict[str, int],
    written: set[str],
    defs_broken: bool,
) -> cronswap.Plan:
    """The cron entries of ``wf`` this sync writes, those its metadata listed
    (``old_ids_json``) that go, and those it replaces (cronswap.Plan)."""
    entries: list[tuple[str, bytes, Any, bool, int | None]] = []
    replaced: list[str] = []
    for trigger in wf.cron:
        cid = cron_id_for(wf.name, trigger)
        if any(e[0] == cid for e in entries):
            continue
        record = CronDef(
            id=cid,
            workflow=wf.name,
            queue=wf.queue,
            expression=trigger.expression,
            timezone=trigger.timezone,
            input_json=codec.encode_json(trigger.input).decode(),
            max_concurrency=wf.max_concurrency,
            max_attempts=wf.retries.max_attempts,
            timeout_ms=timeout_to_ms(wf.timeout) if wf.timeout else 0,
            priority=wf.priority,
        )
        same = same_schedule(stored.get(cid), record)
        kept = None
        if same and stored.get(cid) is not None and cid in scheduled:
            kept = scheduled[cid]  # kept by ZADD NX (written back if gone since)
        elif not same:
            replaced.append(cid)  # its schedule changed under the same id
        entries.append((cid, msgspec.json.encode(record), trigger, same, kept))
    # Not an id another workflow of this sync writes: the ids of before named
    # `reports` + `daily:eu` and `reports:daily` + `eu` alike (cron_id_for), and the
    # first sync after the upgrade removed the other one's entry.
    # Nor one whose stored definition names another workflow: that one's sync wrote
    # it, another app's or this one's in another chunk (its entry is not ours to drop).
    gone = sorted(set(json_list(old_ids_json)) - {e[0] for e in entries} - written)
    if gone and not defs_broken:
        gone = own_cron_ids(wf.name, gone, [stored.get(cid) for cid in gone])
    return cronswap.Plan(entries, gone, gone + replaced)


def _scheduled(ids: list[str], scores: Any) -> dict[str, int]:
    """Id -> next fire time of ``ids`` from the ZMSCORE reply ``scores`` (an error:
    none known)."""
    if not ids or isinstance(scores, Exception):
        return {}
    return {
        cid: int(score)
        for cid, score in zip(ids, scores, strict=True)
        if score is not None and math.isfinite(score)
    }


def _dropped_defs(
    shard: Shard, wfs: list[Workflow[Any, Any]], replies: list[Any], written: set[str]
) -> dict[str, Any]:
    """The stored definitions of the cron ids that ``wfs``' metadata (``replies``)
    lists and this sync no longer writes (one read, only when there are any: an
    upgrade's ids, a changed cron)."""
    dropped: set[str] = set()
    for i in range(len(wfs)):
        dropped.update(json_list(replies[2 * i][0]))
    ids = sorted(dropped - written)
    if not ids:
        return {}
    return dict(zip(ids, shard.redis.hmget(shard.keys.cron_def, ids), strict=True))


def _replan_rates(shard: Shard, names: list[str]) -> None:
    """The workflows ``names`` changed their rate limit: it applies to the runs
    already waiting on a start the old one reserved (replan_rate.lua puts them
    back to be claimed, and reserve, under the new one); kept, a lifted limit
    left its backlog waiting as long as the old one had planned."""
    for name in names:
        moved, more = shard.scripts.replan_rate(name)
        while more:
            n, more = shard.scripts.replan_rate(name)
            moved += n
        if moved:
            log.info("rate limit of %r changed: %d reserved runs replanned", name, moved)


def _write_workflow(
    pipe: Any,
    shard: Any,
    wf: Workflow[Any, Any],
    app: str,
    now: int,
    old: tuple[Any, ...],
    plan: cronswap.Plan,
    cron_state: tuple[set[str], int, bool],
) -> None:
    """Queue on ``pipe`` the writes of one workflow's metadata and cron entries;
    ``old``: what its metadata held (app, updatedAt, wf-apps exists); ``plan``:
    its cron entries; ``cron_state``: the cron keys of the wrong type (left out),
    the server's time after the read (a new entry's first fire time is the next
    after it), and whether ``swap_crons`` wrote its entries that replace others
    and removed those (cronswap.apply)."""
    broken, read_at, swapped = cron_state
    old_app, old_updated, has_apps = old
    keys = shard.keys
    key, apps_key = keys.workflow(wf.name), keys.wf_apps(wf.name)
    cron_ids = [e[0] for e in plan.entries]
    cron_json = msgspec.json.encode(
        [
            {
                "expression": c.expression,
                "timezone": c.timezone,
                "input": c.input,
                **({"id": c.id} if c.id else {}),
            }
            for c in wf.cron
        ]
    )
    pipe.hset(
        key,
        mapping={
            "name": wf.name,
            "queue": wf.queue,
            "maxConcurrency": wf.max_concurrency,
            "app": app,
            "updatedAt": now,
            "cronJson": cron_json,
            "retriesJson": msgspec.json.encode(wf.retries),
            "cronIdsJson": msgspec.json.encode(cron_ids),
            "timeoutMs": timeout_to_ms(wf.timeout) if wf.timeout else 0,
            "priority": wf.priority,
            "rateLimit": wf.rate_limit.text if wf.rate_limit else "",
        },
    )
    if not has_apps and old_app and text(old_app) != app:
        # Metadata from before wf-apps: keep its owner's registration.
        pipe.hsetnx(apps_key, text(old_app), old_updated or now)
        pipe.sadd(keys.app_wfs(text(old_app)), wf.name)
    pipe.hset(apps_key, app, now)
    pipe.sadd(keys.app_wfs(app), wf.name)  # the index withdraw_stale reads
    if shard.index == 0:
        pipe.sadd(keys.workflows, wf.name)
    pipe.sadd(keys.queues, wf.queue)

    if plan.gone and not swapped:
        remove_cron_entries(pipe, keys, plan.gone, broken)
    for cid, record_json, trigger, same, kept in plan.entries:
        if swapped and kept is None:
            continue  # written by swap_crons
        if keys.cron_def not in broken:
            pipe.hset(keys.cron_def, cid, record_json)
        # An unchanged schedule keeps its next fire time (a restart or HUP must
        # not move it); one whose expression or timezone changed under the same
        # explicit id takes its new one: kept, a yearly schedule changed to every
        # minute waited up to a year for its first fire.
        if keys.cron_next not in broken:
            first_fire = kept
            if first_fire is None:
                first_fire = next_fire_ms(trigger.expression, trigger.timezone, read_at)
            pipe.zadd(keys.cron_next, {cid: first_fire}, nx=same)


def registry_gaps(runs: Runs, names: list[str]) -> list[str]:
    """Which of the workflows ``names`` have lost what a sync wrote: their
    metadata hash, or a cron entry (``cron:def`` or ``cron:next``) that the
    stored metadata names. What a FLUSHALL, a restart without persistence or a
    failover to an empty replica leaves: no cron fires again and no
    ``run_by_name`` finds the workflow until a sync writes them again.

    Judged on what is stored (whichever app synced it last), never on this
    registry's definitions, so two apps that define a workflow differently
    never make each other sync again. Two pipelined round trips per shard and
    chunk of 1,000 workflows. A cron definition is asked whether it exists
    (HEXISTS), not read: a supervisor checks every minute, and the definitions
    hold the cron inputs (up to max_payload_bytes each, or whatever a hand edit
    left: HMGET read 8 MB a minute for one edited entry)."""
    gaps: list[str] = []
    for shard, chunk in shard_chunks(runs, names):
        keys = shard.keys
        with shard.redis.pipeline(transaction=False) as read:
            for name in chunk:
                read.hmget(keys.workflow(name), "name", "cronIdsJson")
            stored = read.execute()
        crons: list[tuple[str, list[str]]] = []
        for name, (has_name, ids_json) in zip(chunk, stored, strict=True):
            if has_name is None:
                gaps.append(name)
            elif ids := json_list(ids_json):
                crons.append((name, ids))
        if not crons:
            continue
        with shard.redis.pipeline(transaction=False) as read:
            for _, ids in crons:
                for cid in ids:
                    read.hexists(keys.cron_def, cid)
                read.zmscore(keys.cron_next, ids)
            found = iter(read.execute())
        for name, ids in crons:
            defined = [next(found) for _ in ids]
            nexts = next(found)
            if not all(defined) or any(n is None for n in nexts):
                gaps.append(name)
    return gaps
