"""A retry policy's delay is at most 1e9 s (about 31 years), as a step's timeout
is: a ``max_delay`` of 1e15 s (a typo in units, a computed value) scheduled the
retry at ``now + 1e18`` ms, which Redis wrote to the run as ``9.69e+17`` (past
2**53 ms, a float's text), so ``RunState.available_at`` read back as None and
the run showed no due time in ``get_run``, the CLI and the dashboard."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, RunStatus, define_workflow
from redflow_mp.retry import MAX_DELAY_MS, retry_delay_ms
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_huge_retry_delay_is_capped_and_the_due_time_stays_readable(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow(
        "far-retry",
        retries=Retries(max_attempts=3, initial_delay=1e15, max_delay=1e15, jitter=0),
        registry=registry,
    )
    def far_retry(ctx: Context[Any]) -> None:
        raise ValueError("boom")

    workers.start()
    handle = far_retry.run()
    wait_until(lambda: (s := handle.state()) is not None and s.attempt == 2, 20, 0.02)
    state = handle.state()
    assert state is not None and state.status is RunStatus.SCHEDULED, state
    stored = raw.hget(client.keys.run(handle.id), "availableAt")
    assert stored is not None and stored.isdigit(), stored  # before: b'9.6904419189295322e+17'
    assert state.available_at is not None, state  # before: None
    assert state.available_at <= client.server_time_ms() + MAX_DELAY_MS


def test_retry_delay_ms_never_passes_the_bound() -> None:
    for policy in (
        Retries(max_attempts=9, initial_delay=1e15, max_delay=1e15),
        Retries(max_attempts=9, initial_delay=1e300, max_delay=1e300, jitter=1),
        Retries(max_attempts=200, initial_delay=1, multiplier=1e10, max_delay=1e20),
    ):
        for attempt in (1, 2, 8):
            delay = retry_delay_ms(policy, attempt, policy.max_attempts)
            assert delay is not None and 0 <= delay <= MAX_DELAY_MS, (policy, attempt, delay)
    assert MAX_DELAY_MS == 10**12
