"""Durable waits after the Redis clock went back (NTP setting right a clock that
ran ahead, a failover to a server whose clock is behind). A wait that suspended
while the clock was a day ahead holds times from that clock: its step record
(start, deadline), the run's wait and suspend time, its `timers` entry. The
tests write those as such a suspension left them (the clock is faked the way
tests/integration/test_cron_clock.py fakes it)."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, Registry, StepTimeoutError, codec, define_workflow
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


def _as_if_ahead(raw: redis.Redis, client: Client, run_id: str, step: str, by_ms: int) -> None:
    """Rewrite the suspended run ``run_id``'s times as a suspension at a Redis
    clock ``by_ms`` ahead left them: ``step``'s waiting record, the run's wait and
    suspend time, its status index entry and its timer."""
    k = client.keys
    stored = raw.hget(k.run_steps(run_id), step)
    assert stored is not None
    record = codec.decode_step(stored)
    assert record.status == "waiting" and record.output_json
    waiting = json.loads(record.output_json)
    waiting["wakeAt"] += by_ms
    record = msgspec.structs.replace(
        record, started_at=record.started_at + by_ms, output_json=json.dumps(waiting)
    )
    wait = json.loads(raw.hget(k.run(run_id), "wait") or b"{}")
    wait["wakeAt"] += by_ms
    suspended = int(raw.hget(k.run(run_id), "suspendedAt") or 0) + by_ms
    timer = raw.zscore(k.timers, run_id)
    assert timer is not None
    with raw.pipeline(transaction=True) as pipe:  # long before the wait is due
        pipe.hset(k.run_steps(run_id), step, codec.encode_step(record))
        pipe.hset(k.run(run_id), mapping={"wait": json.dumps(wait), "suspendedAt": suspended})
        pipe.zadd(k.runs_status("suspended"), {run_id: suspended})
        pipe.zadd(k.timers, {run_id: int(timer) + by_ms})
        pipe.execute()


def _succeeds_after(
    raw: redis.Redis, client: Client, run_id: str, rewritten: float, what: str
) -> None:
    """The run ends ``succeeded`` within 12 s of ``rewritten`` (when the clock went
    back); else the failure says when its timer (``what``) would fire."""
    deadline = rewritten + 12
    while time.monotonic() < deadline and run_status(client, run_id) != "succeeded":
        time.sleep(0.05)
    timer = raw.zscore(client.keys.timers, run_id)
    assert run_status(client, run_id) == "succeeded", (
        f"still {run_status(client, run_id)} 12 s after the clock went back: its "
        f"{what} {((timer or 0) - client.server_time_ms()) / 1000:.0f} s from now"
    )


def test_a_sleep_suspended_at_a_clock_a_day_ahead_wakes_its_duration_after_the_clock_went_back(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """sleep(3) that suspended while the Redis clock was a day ahead: its wake-up
    time was a day and 3 s away once the clock was set right. Now it ends at most
    its duration after the clock went back, and not before it was due."""

    @define_workflow("clock-sleeper", registry=registry)
    def sleeper(ctx: Context[Any]) -> str:
        ctx.step.sleep("nap", 3.0)
        return "woke"

    workers.start()
    begun = time.monotonic()
    handle = sleeper.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    _as_if_ahead(raw, client, handle.id, "nap", DAY_MS)
    rewritten = time.monotonic()
    got = None
    deadline = rewritten + 12
    while time.monotonic() < deadline and got is None:
        if run_status(client, handle.id) == "succeeded":
            got = handle.result(timeout=1)
        time.sleep(0.05)
    timer = raw.zscore(client.keys.timers, handle.id)
    assert got == "woke", (
        f"still {run_status(client, handle.id)} 12 s after the clock went back: wakes "
        f"{((timer or 0) - client.server_time_ms()) / 1000:.0f} s from now"
    )
    assert time.monotonic() - begun >= 3.0  # never before it was due
    assert time.monotonic() - rewritten <= 3.0 + 6.0


def test_an_event_wait_timeout_set_at_a_clock_a_day_ahead_runs_out_after_its_duration(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """wait_for_event(timeout=3) suspended at a clock a day ahead: its deadline was
    a day away once the clock was set right. Now it times out at most its
    duration after the clock went back; an event sent before that is received."""

    @define_workflow("clock-waiter", registry=registry, max_concurrency=2)
    def waiter(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.wait_for_event("ev", "go", timeout=3)
        except StepTimeoutError:
            return "timed out"

    workers.start()
    begun = time.monotonic()
    quiet = waiter.run()
    told = waiter.run()
    for run_id in (quiet.id, told.id):
        wait_until(lambda: run_status(client, run_id) == "suspended", timeout=10)  # noqa: B023
        _as_if_ahead(raw, client, run_id, "ev", DAY_MS)
    rewritten = time.monotonic()
    assert client.send_event(told.id, "go", {"n": 1}) is True
    _succeeds_after(raw, client, quiet.id, rewritten, "deadline is")
    assert quiet.result(timeout=1) == "timed out"
    assert time.monotonic() - begun >= 3.0
    assert told.result(timeout=10) == {"n": 1}


def test_a_run_workflow_timeout_set_at_a_clock_a_day_ahead_runs_out_after_its_duration(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """run_workflow(timeout=3) suspended at a clock a day ahead: the same."""

    @define_workflow("clock-kid", registry=registry)
    def kid(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("never", "never")
        return 0

    @define_workflow("clock-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.run_workflow("kid", kid, 1, timeout=3)
        except StepTimeoutError:
            return "timed out"

    workers.start()
    begun = time.monotonic()
    handle = parent.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    _as_if_ahead(raw, client, handle.id, "kid", DAY_MS)
    rewritten = time.monotonic()
    _succeeds_after(raw, client, handle.id, rewritten, "deadline is")
    assert handle.result(timeout=1) == "timed out"
    assert time.monotonic() - begun >= 3.0


def test_a_sleep_until_suspended_at_a_clock_ahead_keeps_its_time(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """sleep_until names a time: woken because it suspended at a clock ahead, the
    run replays and suspends again until that same time."""
    until_ms = client.server_time_ms() + DAY_MS + 60_000

    @define_workflow("clock-until", registry=registry)
    def until(ctx: Context[Any]) -> str:
        ctx.step.sleep_until("then", until_ms / 1000)
        return "then"

    workers.start()
    handle = until.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    # what a suspension at a clock a day ahead wrote: the same wake-up time,
    # started (and suspended) a day later than now
    _as_if_ahead(raw, client, handle.id, "then", 0)
    k = client.keys
    raw.zadd(k.runs_status("suspended"), {handle.id: client.server_time_ms() + DAY_MS})
    wait_until(lambda: raw.hget(k.run(handle.id), "wokenAt") is not None, timeout=10)
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    assert raw.zscore(k.timers, handle.id) == until_ms
