"""Registry sync: write a registry's workflow metadata and cron entries to Redis.

``sync_registry(app=...)`` writes ``workflow:<name>`` and the cron definitions
and first fire times of every registered workflow, records the app's
registration in ``wf-apps:<name>``, and withdraws the app's registration of
workflows that are gone from its registry (older than 30 s); the metadata and
cron entries (never runs) go with the last app's registration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import redis

from . import codec
from .codec import text
from .cron import CronDef, cron_id_for, next_fire_ms
from .options import check_name, timeout_to_ms
from .registry import Registry, Workflow
from .runs import Runs
from .shardset import Shard

__all__ = [
    "REFRESH_INTERVAL_MS",
    "STALE_WORKFLOW_GRACE_MS",
    "refresh_registrations",
    "registry_gaps",
    "sync_registry",
]

log = logging.getLogger(__name__)

STALE_WORKFLOW_GRACE_MS = 30_000
#: How often a running supervisor renews its app's registrations
#: (:func:`refresh_registrations`): well inside the grace above.
REFRESH_INTERVAL_MS = 10_000
_READ_CHUNK = 1000


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
    _remove_stale_workflows(runs, {wf.name for wf in defs}, app, now)
    # One read and one transaction per shard and chunk of workflows, not two
    # round trips per workflow (5,000 workflows: 4.2 s at every start).
    by_shard: dict[int, list[Workflow[Any, Any]]] = {}
    for wf in defs:
        by_shard.setdefault(runs.shard_of_workflow(wf.name).index, []).append(wf)
    for group in by_shard.values():
        for at in range(0, len(group), _READ_CHUNK):
            _sync_workflows(runs, group[at : at + _READ_CHUNK], app, now)


def refresh_registrations(runs: Runs, registry: Registry, *, app: str) -> None:
    """Renew ``app``'s registration time of the workflows of ``registry`` that it
    still registers (a running supervisor calls this every
    :data:`REFRESH_INTERVAL_MS`).

    Why: the supervisors of one app may load different modules (a GPU host and a
    CPU host, both ``--app etl``). Each one's sync withdraws the app's
    registration of workflows its own registry lacks once it is older than
    :data:`STALE_WORKFLOW_GRACE_MS`; registrations written only at start made
    the second host's start remove the first host's workflow metadata and cron
    entries while that host still served them. Renewed, a registration is stale
    only once no running supervisor of the app has the workflow. Only existing
    registrations are renewed: one withdrawn meanwhile is not brought back (the
    supervisor's next sync, at HUP or start, writes it again)."""
    app = check_name(app.strip(), "app")
    now = runs.server_time_ms()
    for shard, chunk in _shard_chunks(runs, [wf.name for wf in registry.list()]):
        with shard.redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.hexists(shard.keys.wf_apps(name), app)
            present = pipe.execute()
        held = [name for name, yes in zip(chunk, present, strict=True) if yes]
        if not held:
            continue
        with shard.redis.pipeline(transaction=False) as pipe:
            for name in held:
                pipe.hset(shard.keys.wf_apps(name), app, now)
            pipe.execute()


def _registrations(name: str, raw: dict[Any, Any], legacy: list[Any]) -> dict[str, int]:
    """``app -> last sync ms`` of ``name`` (legacy owner when no record exists);
    an unreadable time counts as "now" (kept, never removed on a guess)."""
    entries = {text(a): t for a, t in raw.items()}
    if not entries and legacy[0]:
        entries = {text(legacy[0]): legacy[1]}
    out: dict[str, int] = {}
    for owner, value in entries.items():
        try:
            out[owner] = int(value)
        except (TypeError, ValueError):
            log.warning(
                "workflow %r has an unreadable sync time %r for app %r; kept",
                name,
                value,
                owner,
            )
            out[owner] = 2**62
    return out


def _remove_stale_workflows(runs: Runs, registered: set[str], app: str, now: int) -> None:
    candidates = [
        n
        for n in (text(m) for m in runs.redis.smembers(runs.keys.workflows))
        if n not in registered
    ]
    if not candidates:
        return
    # One pipeline per shard and chunk (a workflow's keys are in its shard), not
    # per workflow: a supervisor of an app that shares the prefix with apps
    # registering 5,000 workflows made 5,000 round trips at each start.
    read: dict[str, tuple[Any, Any]] = {}
    for shard, chunk in _shard_chunks(runs, candidates):
        with shard.redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.hgetall(shard.keys.wf_apps(name))
                pipe.hmget(shard.keys.workflow(name), "app", "updatedAt")
            replies = pipe.execute()
        for i, name in enumerate(chunk):
            read[name] = (replies[2 * i], replies[2 * i + 1])
    for name in candidates:
        regs = _registrations(name, *read[name])
        mine = regs.get(app)
        if mine is None or now - mine < STALE_WORKFLOW_GRACE_MS:
            continue  # not ours, or ours and recent enough that old hosts may serve it
        try:
            _withdraw(runs, name, app, now)
        except redis.WatchError:
            # Someone synced this workflow meanwhile: leave it to the next sync.
            log.debug("workflow %r changed during sync; not withdrawn", name)


def _withdraw(runs: Runs, name: str, app: str, now: int) -> None:
    """Remove ``app``'s registration of ``name``; the metadata goes with the last one."""
    shard = runs.shard_of_workflow(name)
    keys = shard.keys
    key, apps_key = keys.workflow(name), keys.wf_apps(name)
    with shard.redis.pipeline(transaction=True) as pipe:
        pipe.watch(key, apps_key)  # type: ignore[no-untyped-call]
        regs = _registrations(name, pipe.hgetall(apps_key), pipe.hmget(key, "app", "updatedAt"))
        mine = regs.pop(app, None)
        if mine is None or now - mine < STALE_WORKFLOW_GRACE_MS:
            pipe.unwatch()
            return
        if regs:
            latest = max(regs, key=lambda a: regs[a])
            pipe.multi()
            pipe.hdel(apps_key, app)
            pipe.hset(key, "app", latest)
            pipe.execute()
            log.info(
                "workflow %r: app %r no longer registers it; kept for %s",
                name,
                app,
                ", ".join(repr(a) for a in sorted(regs)),
            )
            return
        ids = _json_list(pipe.hget(key, "cronIdsJson"))
        pipe.multi()
        pipe.delete(key, apps_key)
        if shard.index == 0:
            pipe.srem(runs.keys.workflows, name)
        if ids:
            pipe.hdel(keys.cron_def, *ids)
            pipe.zrem(keys.cron_next, *ids)
        pipe.execute()
    if shard.index != 0:  # the `workflows` set is shard 0's
        runs.redis.srem(runs.keys.workflows, name)
    log.info("removed stale workflow metadata %r (app %r, the last to register it)", name, app)


def _sync_workflows(runs: Runs, wfs: list[Workflow[Any, Any]], app: str, now: int) -> None:
    """Write ``wfs`` (workflows of one shard) in one read and one MULTI/EXEC."""
    # with shards > 1 the workflow's keys (metadata, its cron entries, its queue in
    # `queues`) are in its shard; the `workflows` set (listing) is shard 0's
    shard = runs.shard_of_workflow(wfs[0].name)
    keys = shard.keys
    with shard.redis.pipeline(transaction=False) as read:
        for wf in wfs:
            read.hmget(keys.workflow(wf.name), "cronIdsJson", "app", "updatedAt")
            read.exists(keys.wf_apps(wf.name))
        replies = read.execute()
    if shard.index != 0:
        runs.redis.sadd(runs.keys.workflows, *(wf.name for wf in wfs))
    with shard.redis.pipeline(transaction=True) as pipe:
        for i, wf in enumerate(wfs):
            (old_ids_json, old_app, old_updated), has_apps = replies[2 * i], replies[2 * i + 1]
            _write_workflow(
                pipe, shard, wf, app, now, (old_ids_json, old_app, old_updated, has_apps)
            )
        pipe.execute()


def _write_workflow(
    pipe: Any, shard: Any, wf: Workflow[Any, Any], app: str, now: int, old: tuple[Any, ...]
) -> None:
    """Queue on ``pipe`` the writes of one workflow's metadata and cron entries;
    ``old``: what its metadata held (cronIdsJson, app, updatedAt, wf-apps exists)."""
    old_ids_json, old_app, old_updated, has_apps = old
    keys = shard.keys
    key, apps_key = keys.workflow(wf.name), keys.wf_apps(wf.name)
    old_ids = set(_json_list(old_ids_json))
    cron_ids: list[str] = []
    cron_defs: list[tuple[str, bytes, int]] = []
    for trigger in wf.cron:
        cid = cron_id_for(wf.name, trigger)
        if cid in cron_ids:
            continue
        cron_ids.append(cid)
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
        cron_defs.append(
            (
                cid,
                msgspec.json.encode(record),
                next_fire_ms(trigger.expression, trigger.timezone, now),
            )
        )
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
    pipe.hset(apps_key, app, now)
    if shard.index == 0:
        pipe.sadd(keys.workflows, wf.name)
    pipe.sadd(keys.queues, wf.queue)
    gone = sorted(old_ids - set(cron_ids))
    if gone:
        pipe.hdel(keys.cron_def, *gone)
        pipe.zrem(keys.cron_next, *gone)
    for cid, record_json, first_fire in cron_defs:
        pipe.hset(keys.cron_def, cid, record_json)
        pipe.zadd(keys.cron_next, {cid: first_fire}, nx=True)


def registry_gaps(runs: Runs, names: list[str]) -> list[str]:
    """Which of the workflows ``names`` have lost what a sync wrote: their
    metadata hash, or a cron entry (``cron:def`` or ``cron:next``) that the
    stored metadata names. What a FLUSHALL, a restart without persistence or a
    failover to an empty replica leaves: no cron fires again and no
    ``run_by_name`` finds the workflow until a sync writes them again.

    Judged on what is stored (whichever app synced it last), never on this
    registry's definitions, so two apps that define a workflow differently
    never make each other sync again. Two pipelined round trips per shard and
    chunk of 1,000 workflows."""
    gaps: list[str] = []
    for shard, chunk in _shard_chunks(runs, names):
        keys = shard.keys
        with shard.redis.pipeline(transaction=False) as read:
            for name in chunk:
                read.hmget(keys.workflow(name), "name", "cronIdsJson")
            stored = read.execute()
        crons: list[tuple[str, list[str]]] = []
        for name, (has_name, ids_json) in zip(chunk, stored, strict=True):
            if has_name is None:
                gaps.append(name)
            elif ids := _json_list(ids_json):
                crons.append((name, ids))
        if not crons:
            continue
        with shard.redis.pipeline(transaction=False) as read:
            for _, ids in crons:
                read.hmget(keys.cron_def, *ids)
                read.zmscore(keys.cron_next, ids)
            found = read.execute()
        for i, (name, _) in enumerate(crons):
            defs, nexts = found[2 * i], found[2 * i + 1]
            if any(d is None for d in defs) or any(n is None for n in nexts):
                gaps.append(name)
    return gaps


def _shard_chunks(runs: Runs, names: list[str]) -> Iterator[tuple[Shard, list[str]]]:
    """``names`` (workflows) grouped by the shard holding their keys, in chunks of
    at most _READ_CHUNK: one pipeline each, never a round trip per workflow."""
    by_shard: dict[int, list[str]] = {}
    for name in names:
        by_shard.setdefault(runs.shard_of_workflow(name).index, []).append(name)
    for group in by_shard.values():
        shard = runs.shard_of_workflow(group[0])
        for at in range(0, len(group), _READ_CHUNK):
            yield shard, group[at : at + _READ_CHUNK]


def _json_list(raw: Any) -> list[str]:
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
