"""Operations views over a client: queues, workflows, cron, supervisors, retry.

What the ``redflow`` command, the dashboard and the metrics endpoint show is
read here, from the same keys the runtime writes (no second source of truth).
Everything is read-only except :func:`retry_run`, which enqueues a new run
through the normal enqueue script.

Supervisor status records: every supervisor writes ``supervisor:<id>`` (JSON,
with a TTL of a few refresh periods) and scores its id in ``supervisors`` by
the refresh time; a record whose key expired is a supervisor that is gone.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import codec
from .client import Client, RunHandle
from .codec import RunStatus
from .cron import CronDef

__all__ = [
    "ChildStatus",
    "CronEntry",
    "QueueStats",
    "SupervisorStatus",
    "WorkflowStats",
    "cron_entries",
    "list_supervisors",
    "queue_stats",
    "retry_run",
    "workflow_stats",
    "write_supervisor_status",
]

SUPERVISOR_TTL_MS = 15_000


class ChildStatus(msgspec.Struct, kw_only=True):
    """One child of a supervisor, as its parent last saw it."""

    slot: int
    pid: int
    state: str
    run_id: str | None = None
    workflow: str | None = None
    run_started_at: int | None = None
    rss: int = 0
    cpu_percent: float = 0.0
    runs_done: int = 0
    restarts: int = 0


class SupervisorStatus(msgspec.Struct, kw_only=True):
    """The status record a supervisor refreshes in Redis."""

    id: str
    app: str
    host: str
    pid: int
    started_at: int
    updated_at: int
    mode: str
    leader: bool
    queues: list[str]
    procs: int
    rss: int = 0
    version: str = ""
    children: list[ChildStatus] = msgspec.field(default_factory=list)


class QueueStats(msgspec.Struct, kw_only=True):
    """Depths of one queue and how long its next run has waited (ms)."""

    name: str
    ready: int
    processing: int
    scheduled: int
    oldest_ready_age_ms: int | None = None


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
    queued: int
    parked: int
    cron: list[CronEntry] = msgspec.field(default_factory=list)


_status_decoder = msgspec.json.Decoder(SupervisorStatus)
_status_encoder = msgspec.json.Encoder()
_cron_decoder = msgspec.json.Decoder(CronDef)


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def write_supervisor_status(
    client: Client, status: SupervisorStatus, ttl_ms: int = SUPERVISOR_TTL_MS
) -> None:
    """Refresh ``status`` (called by the supervisor's parent every few seconds)."""
    with client.redis.pipeline(transaction=False) as pipe:
        pipe.set(client.keys.supervisor(status.id), _status_encoder.encode(status), px=ttl_ms)
        pipe.zadd(client.keys.supervisors, {status.id: status.updated_at})
        pipe.execute()


def remove_supervisor_status(client: Client, supervisor_id: str) -> None:
    with client.redis.pipeline(transaction=False) as pipe:
        pipe.delete(client.keys.supervisor(supervisor_id))
        pipe.zrem(client.keys.supervisors, supervisor_id)
        pipe.execute()


def list_supervisors(client: Client) -> list[SupervisorStatus]:
    """Live supervisors (their records have not expired), oldest first."""
    ids = [_s(x) for x in client.redis.zrange(client.keys.supervisors, 0, -1)]
    if not ids:
        return []
    raws = client.redis.mget([client.keys.supervisor(i) for i in ids])
    out: list[SupervisorStatus] = []
    gone: list[str] = []
    for sid, raw in zip(ids, raws, strict=True):
        if raw is None:
            gone.append(sid)
            continue
        try:
            out.append(_status_decoder.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    if gone:
        client.redis.zrem(client.keys.supervisors, *gone)
    return out


def queue_stats(client: Client) -> list[QueueStats]:
    """Every known queue's ready/processing/scheduled depths and the wait of the
    run it will hand out next (its head: highest priority, then oldest).

    ``processing`` counts the runs of the queue in ``runs:status:running``: one
    read bounded by the runs in flight, not by the queues.
    """
    names = sorted(_s(q) for q in client.redis.smembers(client.keys.queues))
    if not names:
        return []
    running = client.redis.zrange(client.keys.runs_status(RunStatus.RUNNING), 0, -1)
    with client.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zcard(client.keys.q_ready(q))
            pipe.zcard(client.keys.q_scheduled(q))
            pipe.zrange(client.keys.q_ready(q), 0, 0)
        for run_id in running:
            pipe.hget(client.keys.run(_s(run_id)), "queue")
        raw = pipe.execute()
    in_flight: dict[str, int] = {}
    for queue in raw[3 * len(names) :]:
        if queue is not None:
            in_flight[_s(queue)] = in_flight.get(_s(queue), 0) + 1
    now = client.server_time_ms()
    out = []
    heads: list[tuple[int, str]] = []
    for i, q in enumerate(names):
        ready, scheduled, head = raw[3 * i : 3 * i + 3]
        out.append(
            QueueStats(
                name=q,
                ready=int(ready),
                processing=in_flight.get(q, 0),
                scheduled=int(scheduled),
            )
        )
        if head:
            heads.append((i, _s(head[0])))
    if heads:
        with client.redis.pipeline(transaction=False) as pipe:
            for _, run_id in heads:
                pipe.hget(client.keys.run(run_id), "availableAt")
            avail = pipe.execute()
        for (i, _), at in zip(heads, avail, strict=True):
            if at:
                out[i].oldest_ready_age_ms = max(0, now - int(at))
    return out


def cron_entries(client: Client) -> list[CronEntry]:
    """Every cron trigger with its next fire time (epoch ms)."""
    defs = client.redis.hgetall(client.keys.cron_def)
    if not defs:
        return []
    ids = sorted(_s(k) for k in defs)
    scores = client.redis.zmscore(client.keys.cron_next, ids)
    out = []
    for cid, score in zip(ids, scores, strict=True):
        try:
            d = _cron_decoder.decode(defs[cid.encode()])
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            continue
        out.append(
            CronEntry(
                id=cid,
                workflow=d.workflow,
                expression=d.expression,
                timezone=d.timezone,
                next_fire_at=int(score) if score is not None else None,
            )
        )
    return out


def workflow_stats(client: Client) -> list[WorkflowStats]:
    """Synced workflows with running, queued and parked counts and cron schedules."""
    metas = client.list_workflows()
    if not metas:
        return []
    queued_ids = client.redis.zrange(client.keys.runs_status(RunStatus.QUEUED), 0, -1)
    queued_by_wf: dict[str, int] = {}
    if queued_ids:
        with client.redis.pipeline(transaction=False) as pipe:
            for run_id in queued_ids:
                pipe.hget(client.keys.run(_s(run_id)), "workflow")
            for wf in pipe.execute():
                if wf is not None:
                    queued_by_wf[_s(wf)] = queued_by_wf.get(_s(wf), 0) + 1
    with client.redis.pipeline(transaction=False) as pipe:
        for m in metas:
            pipe.scard(client.keys.wf_running(m.name))
            pipe.zcard(client.keys.wf_waiting(m.name))
        counts = pipe.execute()
    crons = cron_entries(client)
    out = []
    for i, m in enumerate(metas):
        out.append(
            WorkflowStats(
                meta=m,
                running=int(counts[2 * i]),
                parked=int(counts[2 * i + 1]),
                queued=queued_by_wf.get(m.name, 0),
                cron=[c for c in crons if c.workflow == m.name],
            )
        )
    return out


def retry_run(client: Client, run_id: str) -> RunHandle:
    """Enqueue a failed or canceled run again, as a new run linked by ``retryOf``."""
    state = client.get_run(run_id)
    if state is None:
        raise ValueError(f"run {run_id} does not exist")
    if state.status not in (RunStatus.FAILED, RunStatus.CANCELED):
        raise ValueError(
            f"run {run_id} is {state.status.value}; only failed or canceled runs can be retried"
        )
    handle = client.run_by_name(
        state.workflow, state.input, queue_override=state.queue, parent_run_id=state.parent_run_id
    )
    client.redis.hset(client.keys.run(handle.id), "retryOf", run_id)
    return handle
