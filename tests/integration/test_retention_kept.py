"""Retention behind runs it keeps: finished run_workflow children of a parent that
is not finished are kept (``sweep_runs.lua``) and scored again, and the runs
that finished after them are still swept in the same tick.

The keyspace is written directly (a parent suspended on its fan-out, its
children finished in 1970): what is under test is the sweep script and the
duty that calls it, with the default retention of 7 days."""

from __future__ import annotations

import time
from typing import Any

import redis

from redflow_mp import Client, Registry, create_client
from redflow_supervisor.duties.retention import (
    BACKLOG_PAUSE,
    SWEEP_BATCH,
    SWEEP_BATCHES,
    TICK_BUDGET,
    RetentionDuty,
)

WEEK_S = 7 * 24 * 3600


def _finished(raw: redis.Redis, client: Client, run_id: str, at: int, parent: str = "") -> None:
    k = client.keys
    raw.hset(
        k.run(run_id),
        mapping={
            "id": run_id,
            "workflow": "kid",
            "queue": "q",
            "status": "succeeded",
            "createdAt": at - 5,
            "finishedAt": at,
            "updatedAt": at,
            "parentRunId": parent,
        },
    )
    if parent:
        raw.sadd(k.run_children(parent), run_id)
    raw.zadd(k.runs_status("succeeded"), {run_id: at})
    raw.zadd(k.runs_created, {run_id: at - 5})
    raw.zadd(k.workflow_runs("kid"), {run_id: at - 5})


def _fan_out(raw: redis.Redis, client: Client, kept: int, plain: int) -> list[str]:
    """A suspended parent whose ``kept`` children finished in 1970, then ``plain``
    runs of no parent finished a moment later (also long past the retention)."""
    parent = "parent-1"
    raw.hset(client.keys.run(parent), mapping={"id": parent, "status": "suspended"})
    for i in range(kept):
        _finished(raw, client, f"kid-{i}", 1_000, parent)
    ids = [f"plain-{i}" for i in range(plain)]
    for run_id in ids:
        _finished(raw, client, run_id, 2_000)
    return ids


def test_runs_behind_a_page_of_kept_children_are_swept_in_the_same_tick(
    raw: redis.Redis, client: Client
) -> None:
    """A page of kept children ended the sweep call with 'nothing more to do': the
    duty waited its interval (30 s) and every later tick stopped at the next page
    of them, so 100 kept runs held back every finished run behind them (a fan-out
    of 10,000 children kept a day's finished runs for 50 minutes)."""
    plain = _fan_out(raw, client, kept=SWEEP_BATCH * 3 + 7, plain=50)
    # a frozen clock: TICK_BUDGET never cuts the tick on a loaded machine
    duty = RetentionDuty(client, retention_s=WEEK_S, clock=lambda: 0.0)
    duty.tick(0.0)
    left = [run_id for run_id in plain if raw.exists(client.keys.run(run_id))]
    assert not left, f"{len(left)} of {len(plain)} runs past retention left after a tick"
    assert duty.removed == len(plain)
    assert raw.scard(client.keys.run_children("parent-1")) == SWEEP_BATCH * 3 + 7
    assert all(raw.exists(client.keys.run(f"kid-{i}")) for i in range(SWEEP_BATCH * 3 + 7))


def test_a_tick_that_reads_only_kept_children_comes_back_soon(
    raw: redis.Redis, client: Client
) -> None:
    """More kept children than a tick reads (20 calls of 100): the duty saw no run
    removed and waited its interval (30 s) before the next page."""
    kept = SWEEP_BATCH * SWEEP_BATCHES + 30
    with raw.pipeline(transaction=False) as pipe:
        plain = _fan_out(pipe, client, kept=kept, plain=20)
        pipe.execute()
    duty = RetentionDuty(client, retention_s=WEEK_S)
    due = duty.tick(0.0)
    assert due < 5.0, f"next tick after {due} s with {kept} runs read and more left"
    for _ in range(10):  # TICK_BUDGET may cut a tick on a loaded machine
        if duty.removed == len(plain):
            break
        assert due < 5.0, f"next tick after {due} s with kept runs left to read"
        due = duty.tick(due)
    assert duty.removed == len(plain)
    assert not any(raw.exists(client.keys.run(run_id)) for run_id in plain)


def test_a_backlog_tick_pauses_after_its_calls_not_from_its_start(
    raw: redis.Redis, client: Client
) -> None:
    """The pause between backlog ticks was counted from the tick's start: a tick
    of 20 calls that took longer than the pause (130 ms median on a loaded 2-core
    machine over 300,000 old runs) was due again as it returned, so the parent's
    loop spent 97% of a million-run backlog inside the sweep, in stretches of up
    to 470 ms, and Redis never got the pause either."""
    raw.zadd(client.keys.runs_status("succeeded"), {f"run-{i}": 1_000 for i in range(2_500)})
    sweep_step = client.scripts.sweep_step

    def slow(retention_ms: int, batch: int) -> tuple[int, bool]:
        time.sleep(0.01)  # a loaded Redis: each call ~10 ms
        return sweep_step(retention_ms, batch)

    client.scripts.sweep_step = slow  # type: ignore[method-assign]
    duty = RetentionDuty(client, retention_s=WEEK_S)
    start = time.monotonic()
    due = duty.tick(0.0)
    took = time.monotonic() - start
    assert duty.removed >= SWEEP_BATCH
    assert due >= took + BACKLOG_PAUSE * 0.99, (
        f"next tick due {due:.3f} s after the tick's start, which took {took:.3f} s: no pause"
    )


def test_a_backlog_tick_holds_the_parent_for_its_budget_only(
    raw: redis.Redis, client: Client
) -> None:
    """A backlog tick made its 20 calls whatever they took: on a loaded machine
    one tick held the parent's loop for up to 470 ms (130 ms median). It stops
    starting calls once TICK_BUDGET is spent."""
    raw.zadd(client.keys.runs_status("succeeded"), {f"run-{i}": 1_000 for i in range(2_500)})
    sweep_step = client.scripts.sweep_step
    calls: list[float] = []

    def slow(retention_ms: int, batch: int) -> tuple[int, bool]:
        start = time.monotonic()
        time.sleep(0.02)  # a loaded Redis: each call ~20 ms
        out = sweep_step(retention_ms, batch)
        calls.append(time.monotonic() - start)
        return out

    client.scripts.sweep_step = slow  # type: ignore[method-assign]
    duty = RetentionDuty(client, retention_s=WEEK_S)
    due = duty.tick(0.0)
    held = sum(calls)
    assert held < TICK_BUDGET + max(calls), (
        f"a tick made {len(calls)} sweep calls and held the parent {held:.2f} s"
    )
    assert due < 1.0, "the backlog's next tick is not soon"
    assert duty.removed == SWEEP_BATCH * len(calls)


def test_backlog_ticks_take_turns_at_which_shard_is_swept_first(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    """With TICK_BUDGET spent on the first shard, the others get one call a tick:
    in a fixed order every tick spent it on shard 0 and shards 1 and 2 swept 100
    runs a tick while their backlog lasted."""
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=3)
    try:
        firsts: list[int] = []
        for shard in c.shards:
            shard.redis.zadd(
                shard.keys.runs_status("succeeded"), {f"r{i}": 1_000 for i in range(2_500)}
            )
            step = shard.scripts.sweep_call  # (several shards: the call naming pairs)

            def slow(
                retention_ms: int, batch: int, *args: Any, step: Any = step, i: int = shard.index
            ) -> Any:
                if not firsts or firsts[-1] < 0:
                    firsts[-1:] = [i]
                time.sleep(0.02)
                return step(retention_ms, batch, *args)

            shard.scripts.sweep_call = slow  # type: ignore[method-assign,assignment]
        duty = RetentionDuty(c, retention_s=WEEK_S)
        now = 0.0
        for _ in range(3):
            firsts.append(-1)
            now = duty.tick(now)
        assert sorted(firsts) == [0, 1, 2], f"the shards swept first in 3 ticks: {firsts}"
    finally:
        c.close()
