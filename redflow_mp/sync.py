"""Registry sync: write a registry's workflow metadata and cron entries to Redis.

``sync_registry(app=...)`` writes ``workflow:<name>`` and the cron definitions
and first fire times of every registered workflow, and removes the metadata
and cron entries (never runs) of workflows that are gone from the registry,
were last synced by the same ``app`` and are older than 30 s.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from . import codec
from .codec import text
from .cron import CronDef, cron_id_for, next_fire_ms
from .options import check_name
from .registry import Registry, Workflow
from .runs import Runs

__all__ = ["STALE_WORKFLOW_GRACE_MS", "sync_registry"]

log = logging.getLogger(__name__)

STALE_WORKFLOW_GRACE_MS = 30_000


def sync_registry(runs: Runs, registry: Registry | None = None, *, app: str) -> None:
    """Write workflow metadata and cron entries of ``registry`` for ``app``.

    Metadata (never runs) of workflows that are gone from the registry, were
    last synced by the same ``app`` and are older than 30 s is removed.
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
    for wf in defs:
        _sync_workflow(runs, wf, app, now)


def _remove_stale_workflows(runs: Runs, registered: set[str], app: str, now: int) -> None:
    existing = [text(n) for n in runs.redis.smembers(runs.keys.workflows)]
    for name in existing:
        if name in registered:
            continue
        key = runs.keys.workflow(name)
        owner, updated, cron_ids = runs.redis.hmget(key, "app", "updatedAt", "cronIdsJson")
        if not owner or text(owner) != app:
            continue
        try:
            updated_ms = int(updated) if updated else 0
        except ValueError:
            # Age unknown: keep it (another host may still serve it) rather than
            # failing the whole sync, which would stop a supervisor from starting.
            log.warning("workflow %r has an unreadable updatedAt %r; kept", name, updated)
            continue
        if now - updated_ms < STALE_WORKFLOW_GRACE_MS:
            continue
        ids = _json_list(cron_ids)
        with runs.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(runs.keys.workflows, name)
            if ids:
                pipe.hdel(runs.keys.cron_def, *ids)
                pipe.zrem(runs.keys.cron_next, *ids)
            pipe.execute()
        log.info("removed stale workflow metadata %r (app %r)", name, app)


def _sync_workflow(runs: Runs, wf: Workflow[Any, Any], app: str, now: int) -> None:
    key = runs.keys.workflow(wf.name)
    old_ids = set(_json_list(runs.redis.hget(key, "cronIdsJson")))
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
            timeout_ms=int(wf.timeout * 1000) if wf.timeout else 0,
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
    with runs.redis.pipeline(transaction=True) as pipe:
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
                "timeoutMs": int(wf.timeout * 1000) if wf.timeout else 0,
            },
        )
        pipe.sadd(runs.keys.workflows, wf.name)
        pipe.sadd(runs.keys.queues, wf.queue)
        gone = sorted(old_ids - set(cron_ids))
        if gone:
            pipe.hdel(runs.keys.cron_def, *gone)
            pipe.zrem(runs.keys.cron_next, *gone)
        for cid, record_json, first_fire in cron_defs:
            pipe.hset(runs.keys.cron_def, cid, record_json)
            pipe.zadd(runs.keys.cron_next, {cid: first_fire}, nx=True)
        pipe.execute()


def _json_list(raw: Any) -> list[str]:
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
