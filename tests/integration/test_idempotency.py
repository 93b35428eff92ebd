"""Idempotency keys live at least until the run they name has finished (a key
never dedupes less than its run lives), then for the rest of their TTL, and
never outlive their run: the retention sweep removes the key of a run it
removes, and cron fire keys are short-lived (issue 10, #11 and #14)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.cron import cron_id_for
from redflow_mp.keys import cron_key
from redflow_mp.maintenance import LeaderLock, cron_tick, sweep_retention
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)

TEN_MINUTES_MS = 10 * 60 * 1000


def test_key_of_a_run_scheduled_past_its_ttl_still_dedupes(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """#14: TTL 1 s, run_at in an hour, the same key 1.2 s later: the same run."""

    @define_workflow("later", registry=registry)
    def later(ctx: Context[Any]) -> None:
        return None

    in_an_hour = client.server_time_ms() / 1000 + 3600
    first = later.run(run_at=in_an_hour, idempotency_key="once", idempotency_ttl=1)
    created = client.server_time_ms()
    wait_until(lambda: client.server_time_ms() >= created + 1_200, 5, message="1.2 s")
    again = later.run(run_at=in_an_hour, idempotency_key="once", idempotency_ttl=1)
    assert again.id == first.id
    assert raw.zcard(client.keys.workflow_runs("later")) == 1
    # no expiry while the run is unfinished
    assert raw.pttl(client.keys.idempotency("later", "once")) == -1


def test_key_expires_by_its_ttl_once_the_run_finished(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("keyed", registry=registry)
    def keyed(ctx: Context[Any]) -> str:
        return "ok"

    long_ttl = keyed.run(idempotency_key="long", idempotency_ttl=3600)
    short_ttl = keyed.run(idempotency_key="short", idempotency_ttl=0.001)
    assert raw.pttl(client.keys.idempotency("keyed", "long")) == -1
    workers.start()
    assert long_ttl.result(timeout=10) == "ok" and short_ttl.result(timeout=10) == "ok"
    # createdAt + ttl when that is later than the finish...
    ttl = raw.pttl(client.keys.idempotency("keyed", "long"))
    assert 3_500_000 < ttl <= 3_600_000
    # ...else at least a second after the finish (a caller racing the finish
    # still finds the run)
    short = raw.pttl(client.keys.idempotency("keyed", "short"))
    assert 0 < short <= 1_000 or not raw.exists(client.keys.idempotency("keyed", "short"))


def test_sweep_removes_the_key_of_the_run_it_removes(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """#11: a key never outlives its run, whatever run_retention says."""

    @define_workflow("swept", registry=registry)
    def swept(ctx: Context[Any]) -> str:
        return "ok"

    workers.start()
    handle = swept.run(idempotency_key="k", idempotency_ttl=7 * 24 * 3600)
    assert handle.result(timeout=10) == "ok"
    key = client.keys.idempotency("swept", "k")
    assert raw.get(key) == handle.id.encode()
    finished = client.server_time_ms()
    wait_until(lambda: client.server_time_ms() > finished + 20, 5, message="20 ms")
    assert sweep_retention(client, 10) == 1
    assert not raw.exists(client.keys.run(handle.id))
    assert not raw.exists(key)


YEARLY = Cron("0 0 1 1 *")


def test_cron_fire_key_expires_within_ten_minutes_of_its_run_finishing(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """#11: a per-second cron keeps ~600 fire keys, not 600k."""

    @define_workflow("ticker", cron=[YEARLY], registry=registry)
    def ticker(ctx: Context[Any]) -> str:
        return "tick"

    client.sync_registry(registry, app="idem-test")
    cid = cron_id_for("ticker", YEARLY)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    fire = client.server_time_ms() - 1_000
    raw.zadd(client.keys.cron_next, {cid: fire})
    tick = cron_tick(client, lock.token)
    assert len(tick.fired) == 1
    workers.start()
    assert client.handle(tick.fired[0]).result(timeout=10) == "tick"
    ttl = raw.pttl(client.keys.idempotency("ticker", cron_key(cid, fire)))
    assert 0 < ttl <= TEN_MINUTES_MS


def test_a_huge_idempotency_ttl_does_not_break_the_finish(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """idempotency_ttl=1e17 s (accepted: finite, positive) made the finish's
    PEXPIREAT fail ("value is not an integer or out of range") half-way through
    finalize_run: the worker crashed, the done message was never published and
    the key never expired. The expiry is capped instead."""
    from redflow_mp import Worker

    @define_workflow("huge-ttl", registry=registry)
    def huge(ctx: Context[Any]) -> int:
        return 7

    handle = huge.run(idempotency_key="big", idempotency_ttl=1e17)
    worker = Worker(client, block_timeout=0.1)
    try:
        assert worker.run_until_idle() == 1
    finally:
        worker.close()
    assert handle.result(timeout=5) == 7
    key = [k for k in raw.scan_iter(match=client.keys.tag + ":idempo:*")]
    assert len(key) == 1
    assert raw.pttl(key[0]) > 0  # expires (far away), not kept for ever
