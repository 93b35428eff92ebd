"""Batch enqueue sends each chunk before the previous chunk's reply is read
(``Client._send_chunks``, ``Transport.ahead``): replies stay matched to their
chunks, and after an error reply or a lost connection every chunk not answered
yet is resent one by one (harmless for a chunk already applied: its run ids are
fixed), so every run is written once, in order, and the connection stays in
step for the commands that follow."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, RedisOutOfMemoryError, Registry, define_workflow
from redflow_mp import transport as transport_mod
from redflow_mp.batch import BATCH_CHUNK
from tests.helpers import texts

pytestmark = pytest.mark.timeout(60)

N = 2 * BATCH_CHUNK + 7  # three chunks: two in flight at once, then one more


def _job(registry: Registry) -> Any:
    @define_workflow("ov-job", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def _ready(raw: redis.Redis, client: Client) -> list[str]:
    return texts(raw.zrange(client.keys.tag + ":q:default:ready", 0, -1))


def _in_step(raw: redis.Redis, client: Client, job: Any) -> None:
    """A later call on the same connection gets its own reply (no stale one)."""
    handle = job.run({"after": 1})
    state = handle.state()
    assert state is not None and state.input == {"after": 1}
    assert client.redis.ping() is True


def test_replies_stay_matched_to_their_chunks(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry)
    keys = [f"k{i % 600}" for i in range(N)]  # repeats across chunks: earlier runs returned
    handles = job.run_many([{"n": i} for i in range(N)], idempotency_keys=keys)
    ids = [h.id for h in handles]
    assert ids[600:] == ids[: N - 600]
    assert len(set(ids)) == 600
    assert _ready(raw, client) == ids[:600]
    last = handles[N - 1].state()
    assert last is not None and last.input == {"n": (N - 1) % 600}
    _in_step(raw, client, job)


def test_a_flushed_script_cache_is_reloaded_and_every_run_written_once(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry)
    job.run_many([{}])  # scripts loaded
    raw.script_flush()
    before = raw.zcard(client.keys.runs_created)
    handles = job.run_many([{"n": i} for i in range(N)])
    ids = [h.id for h in handles]
    assert len(set(ids)) == N
    assert raw.zcard(client.keys.runs_created) == before + N
    assert _ready(raw, client)[-N:] == ids
    _in_step(raw, client, job)


def test_a_refused_batch_raises_writes_nothing_and_leaves_the_connection_in_step(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _job(registry)
    job.run_many([{}])
    before = raw.zcard(client.keys.runs_created)
    raw.config_set("maxmemory", 1)
    try:
        with pytest.raises(RedisOutOfMemoryError):
            job.run_many([{"n": i} for i in range(N)])
    finally:
        raw.config_set("maxmemory", 0)
    assert raw.zcard(client.keys.runs_created) == before
    _in_step(raw, client, job)


def test_a_connection_lost_between_chunks_resends_and_writes_each_run_once(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(registry)
    job.run_many([{}])
    wire = client.transport.ahead()
    assert wire is not None
    wire_id = client.transport.call("CLIENT", "ID")
    real = transport_mod._Wire.read
    reads: list[int] = []

    def read(self: Any) -> Any:
        reads.append(1)
        if len(reads) == 2:  # chunk 1 answered, chunks 2 and 3 on the wire
            raw.client_kill_filter(_id=wire_id)
        return real(self)

    monkeypatch.setattr(transport_mod._Wire, "read", read)
    before = raw.zcard(client.keys.runs_created)
    handles = job.run_many([{"n": i} for i in range(N)])
    ids = [h.id for h in handles]
    assert len(reads) >= 2
    assert len(set(ids)) == N
    assert raw.zcard(client.keys.runs_created) == before + N
    assert _ready(raw, client)[-N:] == ids
    _in_step(raw, client, job)
