"""Migration of a v1 keyspace (ready and wf-waiting LISTs, processing LISTs,
lease STR keys, idempotency keys with a TTL) to keyspace v2, built by hand with
raw commands as a v1 supervisor would have left it; and the refusal to serve a
v1 keyspace without migrating it first (the supervisor's refusal is in
tests/process/test_lifecycle.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client, RedflowError
from redflow_mp.ids import new_token
from redflow_mp.migrate import check_keyspace, migrate_keyspace, ready_score
from redflow_mp.scripts import Claimed
from tests.conftest import _clustered
from tests.helpers import status_index_reads, status_of, text, texts

pytestmark = pytest.mark.timeout(60)


# A migration SCANs the whole database (the v1 names it looks for are no set's
# members): on the session's server, shared with every test an xdist worker ran
# before (hundreds of thousands of keys), test_migrate_a_hand_built_v1_keyspace
# hit its 60 s timeout on a loaded machine. Each case here gets a server of its
# own (``server``), whose SCANs see its keys only; a cluster run keeps the
# session's cluster.
@pytest.fixture()
def redis_url(request: pytest.FixtureRequest) -> str:
    if _clustered(request):
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("server").url)


@pytest.fixture()
def raw(request: pytest.FixtureRequest) -> Iterator[Any]:
    if _clustered(request):
        r: Any = request.getfixturevalue("redis_cluster").client()
    else:
        r = request.getfixturevalue("server").client()
    try:
        yield r
    finally:
        r.close()


def _run(raw: redis.Redis, client: Client, rid: str, status: str, **fields: str | int) -> None:
    k = client.keys
    now = client.server_time_ms()
    values: dict[str, str | int] = {
        "id": rid,
        "workflow": "wf",
        "queue": "mq",
        "status": status,
        "inputJson": "{}",
        "attempt": 1,
        "maxAttempts": 1,
        "createdAt": now,
        "availableAt": now,
        "updatedAt": now,
        "maxConcurrency": 10,
    }
    values.update(fields)
    for name, value in values.items():
        raw.hset(k.run(rid), name, value)
    raw.zadd(k.runs_created, {rid: now})
    raw.zadd(k.workflow_runs("wf"), {rid: now})
    raw.zadd(k.runs_status(status), {rid: now})


def _v1_keyspace(raw: redis.Redis, client: Client) -> int:
    """A v1 keyspace with one of everything; returns the scheduled run's due time."""
    k = client.keys
    tag = k.tag
    raw.sadd(k.queues, "mq")
    raw.sadd(k.workflows, "wf")
    for rid in ("R1", "R2", "R3"):
        _run(raw, client, rid, "queued")
        raw.lpush(f"{tag}:q:mq:ready", rid)  # v1: LPUSH in, pop from the right
    raw.set(k.idempotency("wf", "key-r1"), "R1", px=3_600_000)
    raw.hset(k.run("R1"), "idempotencyKey", "key-r1")
    _run(raw, client, "P1", "running", startedAt=1)
    raw.set(f"{tag}:run:P1:lease", "old-token", px=60_000)
    raw.sadd(k.wf_running("wf"), "P1")
    _run(raw, client, "P2", "succeeded", finishedAt=1)
    raw.lpush(f"{tag}:q:mq:processing", "P2", "P1")
    due = client.server_time_ms() + 3_600_000
    _run(raw, client, "S1", "scheduled", availableAt=due)
    raw.zadd(k.q_scheduled("mq"), {"S1": due})
    for rid in ("W1", "W2"):
        _run(raw, client, rid, "queued")
        raw.rpush(f"{tag}:wf-waiting:wf", rid)  # v1: RPUSH in, LPOP out
    raw.sadd(k.parked, "wf")
    return due


def _claim(client: Client) -> Claimed | None:
    return client.scripts.claim(("mq",), 30_000, new_token())[1]


def test_migrate_a_hand_built_v1_keyspace(raw: redis.Redis, client: Client) -> None:
    k = client.keys
    due = _v1_keyspace(raw, client)
    with pytest.raises(RedflowError, match="redflow migrate"):
        check_keyspace(client, ("mq",), ("wf",))

    report = migrate_keyspace(client)
    assert report.ready_runs == 3 and report.requeued == ["P1"] and report.waiting_runs == 2
    assert (report.stale_entries, report.lease_keys, report.live_leases) == (1, 1, 1)
    assert report.queues == ["mq"] and report.due_queues == 1 and report.idempotency_keys == 1
    assert "live lease" in report.summary()  # P1's v1 lease had not expired: a warning
    assert "P1" in report.summary()
    check_keyspace(client, ("mq",), ("wf",))
    assert raw.hget(k.meta, "keyspace") == b"2"
    # structures
    assert raw.type(k.q_ready("mq")) == b"zset"
    assert raw.type(k.wf_waiting("wf")) == b"zset"
    assert not raw.exists(f"{k.tag}:q:mq:processing", f"{k.tag}:run:P1:lease")
    # the run in flight went back, at the front, and is no longer counted running
    assert status_of(raw, client, "P1") == "queued"
    assert raw.hget(k.run("P1"), "lastCrash") == b"keyspace migration"
    assert not raw.exists(k.wf_running("wf"), k.runs_status("running"))
    assert status_of(raw, client, "P2") == "succeeded"
    # the scheduled run will be promoted when due
    assert raw.zscore(k.due_queues, "mq") == due
    # the idempotency key of an unfinished run no longer expires
    assert raw.pttl(k.idempotency("wf", "key-r1")) == -1
    assert raw.hget(k.run("R1"), "idempotencyTtlMs") is not None
    # order kept: the requeued run first, then the ready list from its oldest end
    assert texts(raw.zrange(k.q_ready("mq"), 0, -1)) == ["P1", "R1", "R2", "R3"]
    assert texts(raw.zrange(k.wf_waiting("wf"), 0, -1)) == ["W1", "W2"]
    claimed = [_claim(client) for _ in range(4)]
    assert [c.id if c else None for c in claimed] == ["P1", "R1", "R2", "R3"]
    # a second run of the migration finds nothing to do
    again = migrate_keyspace(client)
    assert again.ready_runs == 0 and again.requeued == [] and again.waiting_runs == 0


def test_parked_runs_migrated_are_released_in_order(raw: redis.Redis, client: Client) -> None:
    k = client.keys
    _v1_keyspace(raw, client)
    raw.hset(k.workflow("wf"), "maxConcurrency", 1)
    migrate_keyspace(client)
    first = _claim(client)
    assert first is not None and first.id == "P1"
    assert _claim(client) is None  # R1..R3 parked behind max_concurrency 1
    assert texts(raw.zrange(k.wf_waiting("wf"), 0, -1))[:2] == ["W1", "W2"]
    assert client.scripts.finalize("P1", first.token, "succeeded", b"1") == "succeeded"
    nxt = _claim(client)
    assert nxt is not None and nxt.id == "W1"


def test_ready_score_matches_the_lua_one(raw: redis.Redis, client: Client) -> None:
    rid = client.scripts.enqueue(
        "SCORE-1", "wf", "q", b"{}", 1, 0, "", 0, "", "", None, None, priority=7
    )[0]
    created = int(text(raw.hget(client.keys.run(rid), "createdAt")))
    assert raw.zscore(client.keys.q_ready("q"), rid) == ready_score(7, created)


def test_migrate_reads_the_unfinished_runs_in_chunks(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping the idempotency keys read every unfinished run at once: with a
    million queued runs (even in a keyspace at v2 already), one ZRANGE 0 -1 and
    one pipeline of a million HMGETs, 1 GB in the CLI and 91 s. Now a chunk at a
    time: every read of a status index is bounded by the chunk."""
    monkeypatch.setattr("redflow_mp.migrate._CHUNK", 2, raising=False)
    k = client.keys
    for i in range(5):
        _run(raw, client, f"R{i}", "queued", idempotencyKey=f"key-{i}")
        raw.set(k.idempotency("wf", f"key-{i}"), f"R{i}", px=3_600_000)
    _run(raw, client, "T0", "queued", idempotencyKey="key-t", idempotencyTtlMs=5)
    raw.set(k.idempotency("wf", "key-t"), "T0", px=3_600_000)  # v2 already: left alone
    reports = []
    status_reads = status_index_reads(raw, lambda: reports.append(migrate_keyspace(client)))
    report = reports[0]
    assert report.idempotency_keys == 5
    assert all(raw.pttl(k.idempotency("wf", f"key-{i}")) == -1 for i in range(5))
    assert raw.pttl(k.idempotency("wf", "key-t")) > 0
    assert status_reads
    for command in status_reads:
        start, stop = int(command[2]), int(command[3])
        assert 0 <= start <= stop < start + 2, command
