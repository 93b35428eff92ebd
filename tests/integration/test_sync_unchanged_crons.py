"""A registry sync writes its workflows in transactions of a bounded number of
cron entries: 10,000 workflows with 10 crons each were 10 transactions of
10,000 entries (each EXEC 50 ms of Redis CPU, 183 ms on a loaded machine), with
an HMGET of 10,000 definitions before each.

A registry sync (each supervisor start, each HUP) keeps the next fire time of
a cron entry whose schedule did not change, and no longer computes one for it:
10,000 workflows with a cron each spent about 9 s of a supervisor's start in
croniter (half of its 18 s before the first claim), for times it then did not
write (ZADD NX)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Cron, Registry, define_workflow, sync
from tests.helpers import monitor

pytestmark = pytest.mark.timeout(120)

WORKFLOWS = 300


def _noop(ctx: object) -> None:
    return None


def _define(registry: Registry) -> None:
    for i in range(WORKFLOWS):
        define_workflow(f"cw-{i}", queue="cq", cron=[Cron("7 3 1 1 *")], registry=registry)(_noop)


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = sync.next_fire_ms  # type: ignore[attr-defined]

    def counting(*args: Any) -> int:
        got = int(real(*args))
        calls.append(got)
        return got

    monkeypatch.setattr(sync, "next_fire_ms", counting)
    return calls


def test_a_sync_of_unchanged_crons_computes_no_fire_time(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _define(registry)
    client.sync_registry(registry, app="crons")
    before: Any = raw.zrange(client.keys.cron_next, 0, -1, withscores=True)
    calls = _counted(monkeypatch)
    client.sync_registry(registry, app="crons")
    assert len(calls) == 0, f"{len(calls)} fire times computed for {WORKFLOWS} unchanged crons"
    assert raw.zrange(client.keys.cron_next, 0, -1, withscores=True) == before


def test_a_lost_next_fire_time_is_computed_again_and_a_kept_one_stays(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _define(registry)
    client.sync_registry(registry, app="crons")
    k = client.keys
    ids: Any = raw.zrange(k.cron_next, 0, 1)
    lost, kept = ids[0], ids[1]
    raw.zrem(k.cron_next, lost)  # evicted, deleted by hand
    raw.zadd(k.cron_next, {kept: 5_000_000_000_000})  # a time fire_cron wrote
    calls = _counted(monkeypatch)
    client.sync_registry(registry, app="crons")
    assert len(calls) == 1
    assert raw.zscore(k.cron_next, lost) == calls[0]
    assert raw.zscore(k.cron_next, kept) == 5_000_000_000_000


def test_a_sync_of_many_crons_per_workflow_is_written_in_bounded_transactions(
    client: Client, registry: Registry, redis_url: str
) -> None:
    per, workflows = 40, 60  # 2,400 entries: fewer workflows than a chunk of them
    for i in range(workflows):
        crons = [Cron(f"{m % 60} {m // 60} 1 1 *") for m in range(per)]
        define_workflow(f"mw-{i}", queue="cq", cron=crons, registry=registry)(_noop)
    with monitor(redis_url) as mon:
        client.sync_registry(registry, app="crons")
        lines = mon.snapshot()
    cron_def = f'"{client.keys.cron_def}"'
    reads = [ln.count('" "') - 1 for ln in lines if '"hmget"' in ln.lower() and cron_def in ln]
    assert reads, "no read of the cron definitions"
    assert max(reads) <= 1000, f"one HMGET of {max(reads)} cron definitions"
    execs = sum(1 for ln in lines if ln.lower().endswith('"exec"'))
    assert execs >= per * workflows // 1000, f"{per * workflows} cron entries in {execs} EXECs"
