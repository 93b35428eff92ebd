"""fire_cron.lua (fenced by the leader token, stale fire time, max_concurrency
skip, at most one run per fire time), due_crons.lua, sweep_runs.lua. (The
leader lock is redis-py's Lock: tests/integration/test_cron.py.)"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.keys import cron_key
from tests.helpers import status_of, wait_until

pytestmark = pytest.mark.timeout(30)

CID = "wf:c1"


def _fire(
    client: Client, token: str, fire_ms: int, next_ms: int, *, max_concurrency: int = 1
) -> tuple[int, str]:
    return client.scripts.fire_cron(
        token,
        CID,
        fire_ms,
        next_ms,
        new_run_id(),
        "wf",
        "q",
        b'{"from":"cron"}',
        2,
        cron_key(CID, fire_ms),
        60_000,
        max_concurrency,
        None,
    )


def _leader(raw: redis.Redis, client: Client) -> str:
    token = new_token()
    raw.set(client.keys.lock_cron, token, px=30_000)
    return token


def test_fire_enqueues_once_and_advances(raw: redis.Redis, client: Client) -> None:
    k = client.keys
    token = _leader(raw, client)
    raw.zadd(k.cron_next, {CID: 1_000})
    code, rid = _fire(client, token, 1_000, 2_000)
    assert code == 1 and rid
    h = raw.hgetall(k.run(rid))
    assert h[b"cronId"] == CID.encode()
    assert h[b"idempotencyKey"] == cron_key(CID, 1_000).encode()
    assert h[b"inputJson"] == b'{"from":"cron"}'
    assert h[b"maxAttempts"] == b"2"
    assert status_of(raw, client, rid) == "queued"
    assert raw.zscore(k.cron_next, CID) == 2_000
    # the same fire time again: cron:next moved on
    assert _fire(client, token, 1_000, 2_000) == (-2, "")
    assert raw.zcard(k.runs_created) == 1


def test_fire_is_fenced_by_the_leader_token(raw: redis.Redis, client: Client) -> None:
    k = client.keys
    _leader(raw, client)
    raw.zadd(k.cron_next, {CID: 1_000})
    assert _fire(client, "not-the-leader", 1_000, 2_000) == (-1, "")
    raw.delete(k.lock_cron)
    assert _fire(client, "", 1_000, 2_000) == (-1, "")
    assert raw.zscore(k.cron_next, CID) == 1_000
    assert not raw.exists(k.runs_created)


def test_fire_time_creates_at_most_one_run_across_a_leader_change(
    raw: redis.Redis, client: Client
) -> None:
    k = client.keys
    old = _leader(raw, client)
    raw.zadd(k.cron_next, {CID: 1_000})
    code, first = _fire(client, old, 1_000, 2_000)
    assert code == 1
    # a new leader that saw the old schedule (cron:next reset to the same fire time)
    new = _leader(raw, client)
    raw.zadd(k.cron_next, {CID: 1_000})
    assert _fire(client, old, 1_000, 2_000) == (-1, "")
    code, again = _fire(client, new, 1_000, 2_000)
    assert (code, again) == (3, first)
    assert raw.zcard(k.runs_created) == 1


def test_fire_skips_when_the_workflow_is_at_max_concurrency(
    raw: redis.Redis, client: Client
) -> None:
    k = client.keys
    token = _leader(raw, client)
    raw.zadd(k.cron_next, {CID: 1_000})
    raw.sadd(k.wf_running("wf"), "SOME-RUN")
    assert _fire(client, token, 1_000, 2_000) == (2, "")
    assert raw.zscore(k.cron_next, CID) == 2_000  # schedule moves on, no run
    assert not raw.exists(k.runs_created)
    raw.zadd(k.cron_next, {CID: 2_000})
    code, _ = _fire(client, token, 2_000, 3_000, max_concurrency=2)
    assert code == 1


def test_fire_is_fenced_by_the_definition_read(raw: redis.Redis, client: Client) -> None:
    """A definition replaced since the leader read it (a registry sync) is not
    fired: reply -3, no run, the schedule left as it is; the stored one fires."""
    k = client.keys
    token = _leader(raw, client)
    read, stored = b'{"v":1}', b'{"v":2}'
    raw.hset(k.cron_def, CID, stored)
    raw.zadd(k.cron_next, {CID: 1_000})

    def fire(definition: bytes) -> tuple[int, str]:
        digest = hashlib.sha1(definition, usedforsecurity=False).hexdigest()
        args = ("wf", "q", definition, 1, cron_key(CID, 1_000), 60_000, 1, None, 0, digest)
        return client.scripts.fire_cron(token, CID, 1_000, 2_000, new_run_id(), *args)

    assert fire(read) == (-3, "")
    assert raw.zscore(k.cron_next, CID) == 1_000 and not raw.exists(k.runs_created)
    raw.hdel(k.cron_def, CID)  # removed meanwhile
    assert fire(stored) == (-3, "")
    raw.hset(k.cron_def, CID, stored)
    code, rid = fire(stored)
    assert code == 1 and raw.hget(k.run(rid), "inputJson") == stored
    assert raw.zscore(k.cron_next, CID) == 2_000


def test_due_crons_reads_due_entries_by_server_clock(raw: redis.Redis, client: Client) -> None:
    k = client.keys
    now = client.server_time_ms()
    raw.hset(k.cron_def, mapping={"a": b'{"x":1}', "b": b'{"x":2}'})
    raw.zadd(k.cron_next, {"a": now - 10, "b": now + 60_000, "orphan": now - 5})
    server_now, earliest, due = client.scripts.due_crons(10)
    assert server_now >= now
    assert earliest == now + 60_000
    assert due == [("a", now - 10, b'{"x":1}'), ("orphan", now - 5, b"")]
    assert client.scripts.due_crons(1)[2] == [("a", now - 10, b'{"x":1}')]


def test_due_crons_holds_a_bounded_size_of_definitions(raw: redis.Redis, client: Client) -> None:
    """Each definition holds its cron's input (up to ``max_payload_bytes``, 8 MiB):
    100 due entries were read in one reply of every definition, 800 MiB for inputs
    at the limit (held by Redis's reply and the leader at once). A reply holds the
    definitions up to ``DUE_CRON_BYTES``, at least one; ``earliest`` is then the
    fire time of the first one left out (due now: the leader reads again)."""
    k = client.keys
    now = client.server_time_ms()
    big = b"x" * (3 << 20)  # three of them: 9 MiB
    raw.hset(k.cron_def, mapping={"a": big, "b": big, "c": big, "d": b"{}"})
    raw.zadd(k.cron_next, {"a": now - 40, "b": now - 30, "c": now - 20, "d": now - 10})
    _, earliest, due = client.scripts.due_crons(100)
    assert sum(len(d) for _, _, d in due) <= max(4 << 20, len(big))  # DUE_CRON_BYTES
    assert [cid for cid, _, _ in due] == ["a"]
    assert earliest == now - 30
    _, earliest, due = client.scripts.due_crons(100, 1)
    assert [cid for cid, _, _ in due] == ["b"] and earliest == now - 20
    _, earliest, due = client.scripts.due_crons(100, 2)
    assert [cid for cid, _, _ in due] == ["c", "d"] and earliest is None


# ------------------------------------------------------------------- sweep


def _finish(client: Client, enq: Callable[..., str], mode: str, **kw: object) -> str:
    rid = enq(**kw)
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == rid
    payload = b'"x"' if mode == "succeeded" else b'{"type":"E","message":"m"}'
    client.scripts.write_step(rid, tok, "s", b'{"status":"succeeded"}', 5_000)
    assert client.scripts.finalize(rid, tok, mode, payload) == mode
    return rid


def test_sweep_removes_only_runs_finished_before_the_retention(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    old_ok = _finish(client, enq, "succeeded", workflow="a")
    old_failed = _finish(client, enq, "failed", workflow="b")
    fresh = _finish(client, enq, "succeeded", workflow="c")
    queued = enq(workflow="d")
    assert client.scripts.sweep(60_000, 100) == 0
    ago = client.server_time_ms() - 120_000
    raw.zadd(k.runs_status("succeeded"), {old_ok: ago})
    raw.zadd(k.runs_status("failed"), {old_failed: ago})
    assert client.scripts.sweep(60_000, 100) == 2
    for rid, wf, status in ((old_ok, "a", "succeeded"), (old_failed, "b", "failed")):
        assert not raw.exists(k.run(rid), k.run_steps(rid))
        assert raw.zscore(k.leases, rid) is None
        assert raw.zscore(k.runs_created, rid) is None
        assert raw.zscore(k.workflow_runs(wf), rid) is None
        assert raw.zscore(k.runs_status(status), rid) is None
    assert raw.exists(k.run(fresh), k.run_steps(fresh)) == 2
    assert raw.zscore(k.runs_created, fresh) is not None
    assert status_of(raw, client, queued) == "queued"


def test_sweep_is_bounded_by_batch(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [_finish(client, enq, "succeeded", workflow=f"w{i}") for i in range(5)]
    raw.zadd(k.runs_status("succeeded"), dict.fromkeys(ids, 1))
    assert client.scripts.sweep(1_000, 2) == 2
    assert client.scripts.sweep(1_000, 2) == 2
    assert client.scripts.sweep(1_000, 2) == 1
    assert not raw.exists(k.runs_created)


def test_sweep_removes_the_idempotency_key_only_while_it_names_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    mine = _finish(client, enq, "succeeded", workflow="a", key="k")
    moved = _finish(client, enq, "succeeded", workflow="b", key="k")
    raw.set(k.idempotency("b", "k"), "NEWER-RUN")  # the key moved on to another run
    raw.zadd(k.runs_status("succeeded"), {mine: 1, moved: 1})
    assert client.scripts.sweep(1_000, 10) == 2
    assert not raw.exists(k.idempotency("a", "k"))
    assert raw.get(k.idempotency("b", "k")) == b"NEWER-RUN"


def _lazyfreed(raw: Any) -> int:
    """Values freed in the background so far (every node of a cluster, summed)."""
    if isinstance(raw, redis.RedisCluster):
        nodes: Any = raw.info("memory", target_nodes=redis.RedisCluster.ALL_NODES)
        return sum(int(info["lazyfreed_objects"]) for info in nodes.values())
    return int(raw.info("memory")["lazyfreed_objects"])


def test_sweep_frees_a_big_run_off_the_main_thread(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A run's keys went by DEL, which frees a value on Redis's main thread: the
    steps hash of a run with a million steps (one per row of an ETL loop) held
    Redis for ~0.5 s inside one sweep call. They go by UNLINK now (freed in the
    background; small values are still freed at once)."""
    k = client.keys
    rid = _finish(client, enq, "succeeded", workflow="a")
    steps: dict[Any, Any] = {f"row-{i}": '{"status":"succeeded"}' for i in range(10_000)}
    raw.hset(k.run_steps(rid), mapping=steps)
    raw.zadd(k.runs_status("succeeded"), {rid: 1})
    before = _lazyfreed(raw)
    assert client.scripts.sweep(1_000, 10) == 1
    assert not raw.exists(k.run(rid), k.run_steps(rid))
    # (counted by the background thread once it freed the value)
    wait_until(
        lambda: _lazyfreed(raw) > before,
        5,
        message="the steps hash freed in the background (it was freed by DEL)",
    )
