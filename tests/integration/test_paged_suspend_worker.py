"""Review probes: a paged suspend (wait_scripts.SUSPEND_PAGE made small here, the
setting under test) through real workers: a fan-out suspends a page a call and
resumes with every output in order; a fan-out whose child fails, caught, then a
second paged fan-out of the same run; nothing of either wait is left behind."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunFailedError, define_workflow, wait_scripts
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wait_scripts, "SUSPEND_PAGE", 3)


def test_a_paged_fan_out_suspends_and_resumes_with_every_output(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    gate = threading.Event()

    @define_workflow("pg-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        gate.wait(60)
        return int(ctx.input) * 10

    @define_workflow("pg-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflows("all", child, list(range(10)))

    for _ in range(3):
        workers.start()
    handle = parent.run()
    wait_until(lambda: client.get_run(handle.id).status.value == "suspended", 60)  # type: ignore[union-attr]
    assert raw.hget(client.keys.run(handle.id), "awaitsToken") is not None
    gate.set()
    assert handle.result(timeout=60) == [i * 10 for i in range(10)]
    assert not raw.exists(client.keys.run_awaits(handle.id))


def test_a_failed_paged_fan_out_then_a_second_one_of_the_same_run(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    @define_workflow("pg2-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        if ctx.input == "bad":
            raise ValueError("child broke")
        return int(ctx.input)

    @define_workflow("pg2-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        try:
            ctx.step.run_workflows("first", child, [1, 2, 3, 4, "bad", 6, 7, 8])
            first = "no failure"
        except RunFailedError as exc:
            first = str(exc)
        return first, ctx.step.run_workflows("second", child, list(range(9)))

    for _ in range(3):
        workers.start()
    first, second = parent.run().result(timeout=60)
    assert "child broke" in first
    assert second == list(range(9))
    runs = client.list_runs(workflow="pg2-parent")
    assert len(runs) == 1
    assert not raw.exists(client.keys.run_awaits(runs[0].id))
    assert raw.hget(client.keys.run(runs[0].id), "awaitFailed") is None
