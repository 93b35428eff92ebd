"""What clears a run's crash count (``max_run_crashes`` counts the crashes since
the run last made progress): a step that succeeds once the execution replayed
the steps recorded before it, in an async handler too and past a sleep. A
handler whose step names change at each execution (a timestamp in them) makes
none: its count stays, so a poison pill of that kind still reaches the cap."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from redflow_mp import AsyncContext, Client, Registry, define_workflow
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def _crashed_while_suspended(raw: redis.Redis, client: Client, run_id: str) -> None:
    """The run suspended in its sleep; charge it two crashes (as requeue does)."""
    wait_until(lambda: run_status(client, run_id) == "suspended", timeout=20)
    raw.hset(client.keys.run(run_id), mapping={"crashCount": 2, "lastCrash": "SIGKILL"})


@pytest.mark.parametrize("fickle", [False, True])
def test_a_step_after_a_replay_clears_the_crash_count_a_fickle_one_does_not(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, fickle: bool
) -> None:
    @define_workflow("haul", registry=registry, max_concurrency=4)
    async def haul(ctx: AsyncContext[Any]) -> str:
        async def one() -> int:
            return 1

        first = f"a-{time.time_ns()}" if fickle else "a"
        await ctx.step.run(first, one)
        await ctx.step.sleep("rest", 0.3)
        await ctx.step.run("b", one)
        return "done"

    workers.start()
    handle = haul.run(None)
    _crashed_while_suspended(raw, client, handle.id)
    assert handle.result(timeout=30) == "done"
    state = client.get_run(handle.id)
    assert state is not None and state.last_crash == "SIGKILL"
    # deterministic: "rest" and "b" succeeded after "a" was replayed; fickle: the
    # replay reached a step nobody recorded, then never got past "a-<first>"
    assert state.crash_count == (2 if fickle else 0)
    assert workers.errors == []
