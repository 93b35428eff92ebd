"""Resume (issue 15 #5): ``client.resume_run`` / ``AsyncClient.resume_run`` put a
failed or canceled run back in its queue as the same run, with the next attempt,
keeping its succeeded steps (not run again); anything else is refused with
``RunNotResumableError`` and nothing changes. (The script itself:
``tests/lua/test_resume.py``; the CLI and the dashboard: ``tests/ops``.)"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Registry,
    Retries,
    RunFailedError,
    RunNotResumableError,
    RunStatus,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_failed_run_resumes_as_the_same_run_keeping_its_succeeded_steps(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = {"fetch": 0, "load": 0}
    broken = threading.Event()
    broken.set()

    def fetch() -> dict[str, int]:
        calls["fetch"] += 1
        return {"rows": 3}

    def load(rows: int) -> int:
        calls["load"] += 1
        if broken.is_set():
            raise ConnectionError("warehouse down")
        return rows * 10

    @define_workflow("etl", retries=Retries(max_attempts=2, initial_delay=0.01), registry=registry)
    def etl(ctx: Context[Any]) -> int:
        got = ctx.step.run("fetch", fetch)
        return ctx.step.run("load", load, got["rows"])

    workers.start()
    handle = etl.run({}, idempotency_key="nightly")
    with pytest.raises(RunFailedError, match="warehouse down"):
        handle.result(timeout=20)
    assert calls == {"fetch": 1, "load": 2}
    before = handle.state()
    assert before is not None and (before.attempt, before.max_attempts) == (2, 2)

    broken.clear()
    resumed = client.resume_run(handle.id)
    assert resumed.id == handle.id
    assert resumed.result(timeout=20) == 30
    assert calls == {"fetch": 1, "load": 3}  # fetch replayed from its record
    after = resumed.state()
    assert after is not None
    assert after.status is RunStatus.SUCCEEDED
    # the next attempt, and the run's two attempts again
    assert (after.attempt, after.max_attempts) == (3, 4)
    assert after.error is None and after.cancel_requested_at is None
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["fetch"].attempt == 1 and steps["load"].attempt == 3
    # one run: the same id under its idempotency key, counted once in its indexes
    assert etl.run({}, idempotency_key="nightly").id == handle.id
    assert raw.zcard(client.keys.workflow_runs("etl")) == 1
    assert raw.zscore(client.keys.runs_status("failed"), handle.id) is None
    assert raw.zscore(client.keys.runs_status("succeeded"), handle.id) is not None


def test_a_canceled_run_resumes_and_a_resumed_run_gets_its_retries_again(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    attempts: list[int] = []

    @define_workflow(
        "later", retries=Retries(max_attempts=2, initial_delay=0.01), registry=registry
    )
    def later(ctx: Context[Any]) -> int:
        attempts.append(ctx.run.attempt)
        if len(attempts) == 1:
            raise ValueError("first try fails")  # retried within the resumed attempts
        return ctx.run.attempt

    handle = later.run({}, run_at=10**10)  # far ahead: scheduled
    assert handle.cancel("not now")
    state = handle.state()
    assert state is not None and state.status is RunStatus.CANCELED
    client.resume_run(handle.id)
    state = handle.state()
    assert state is not None
    assert state.status is RunStatus.QUEUED and state.cancel_requested_at is None
    assert (state.attempt, state.max_attempts) == (2, 3)
    workers.start()
    assert handle.result(timeout=20) == 3
    assert attempts == [2, 3]


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_resume_of_an_unfinished_or_succeeded_run_is_refused_and_changes_nothing(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, status: str
) -> None:
    release = threading.Event()

    @define_workflow("hold", registry=registry)
    def hold(ctx: Context[Any]) -> str:
        release.wait(10)
        return "done"

    handle = hold.run({})
    if status != "queued":
        workers.start()
        wait_until(lambda: (s := handle.state()) is not None and s.status == "running")
    if status == "succeeded":
        release.set()
        assert handle.result(timeout=10) == "done"
    before = raw.hgetall(client.keys.run(handle.id))
    with pytest.raises(RunNotResumableError, match=f"is {status}; only a failed or canceled"):
        client.resume_run(handle.id)
    assert raw.hgetall(client.keys.run(handle.id)) == before
    release.set()


def test_resume_of_an_unknown_run_or_a_bad_id_is_a_clear_error(client: Client) -> None:
    with pytest.raises(RunNotResumableError, match="does not exist") as info:
        client.resume_run("no-such-run")
    assert info.value.status is None and info.value.run_id == "no-such-run"
    assert isinstance(info.value, ValueError)
    with pytest.raises((TypeError, ValueError)):
        client.resume_run(42)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        client.resume_run("")


def test_the_async_client_resumes_too(
    redis_url: str, prefix: str, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    flaky = threading.Event()
    flaky.set()

    @define_workflow("aflow", registry=registry)
    def aflow(ctx: Context[Any]) -> str:
        ctx.step.run("a", lambda: "a")
        if flaky.is_set():
            raise RuntimeError("boom")
        return "ok"

    workers.start()
    handle = aflow.run({})
    with pytest.raises(RunFailedError):
        handle.result(timeout=20)
    flaky.clear()

    async def main() -> tuple[str, str | None]:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            h = await ac.resume_run(handle.id)
            out = await h.result(timeout=20)
            with pytest.raises(RunNotResumableError, match="is succeeded"):
                await ac.resume_run(handle.id)
            with pytest.raises(RunNotResumableError, match="does not exist"):
                await ac.resume_run("nope")
            return out, h.id
        finally:
            await ac.aclose()

    assert asyncio.run(main()) == ("ok", handle.id)
