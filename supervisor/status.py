"""Supervisor status records: what each supervisor publishes about itself and its
children, for ``redflow supervisors``, the dashboard and operators.

Every supervisor writes ``supervisor:<id>`` (JSON, with a TTL of a few refresh
periods) and scores its id in ``supervisors`` by the refresh time; a record
whose key expired is a supervisor that is gone (:func:`list_supervisors`
forgets it). These keys belong to supervisors only: no run state is read or
written here.
"""

from __future__ import annotations

import msgspec
import redis

from redflow_mp.client import Client
from redflow_mp.codec import text

__all__ = [
    "SUPERVISOR_TTL_MS",
    "ChildStatus",
    "SupervisorStatus",
    "list_supervisors",
    "remove_supervisor_status",
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


_status_decoder = msgspec.json.Decoder(SupervisorStatus)
_status_encoder = msgspec.json.Encoder()


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


#: Ids read (and records fetched) a command at a time by :func:`list_supervisors`:
#: a ``supervisors`` index a neighbour filled with a million ids is read in short
#: commands, not one ``ZRANGE`` and one ``MGET`` that hold Redis for seconds.
LIST_CHUNK = 1000


def list_supervisors(client: Client) -> list[SupervisorStatus]:
    """Live supervisors (their records have not expired), oldest first.

    The ids of expired records are removed from the index on the way, best
    effort: a user who may only read (the documented viewer of "Redis ACL", a
    read-only replica) lists the live ones all the same."""
    out: list[SupervisorStatus] = []
    start = 0
    while True:
        ids = [
            text(x)
            for x in client.redis.zrange(client.keys.supervisors, start, start + LIST_CHUNK - 1)
        ]
        if not ids:
            return out
        raws = client.redis.mget([client.keys.supervisor(i) for i in ids])
        gone: list[str] = []
        for sid, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(sid)
                continue
            try:
                out.append(_status_decoder.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        start += len(ids)
        if gone and _forget(client, gone):
            start -= len(gone)
        if len(ids) < LIST_CHUNK:
            return out


def _forget(client: Client, gone: list[str]) -> bool:
    """Remove ``gone`` from the index; False when this user may not write there."""
    try:
        client.redis.zrem(client.keys.supervisors, *gone)
    except (redis.exceptions.NoPermissionError, redis.exceptions.ReadOnlyError):
        return False
    return True
