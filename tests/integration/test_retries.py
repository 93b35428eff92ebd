"""Retries with exponential backoff (one script per retry), non-retriable
errors, on_failure called once with errors that never change the outcome."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    FailureContext,
    NonRetriableError,
    Registry,
    Retries,
    RunFailedError,
    RunState,
    RunStatus,
    define_workflow,
    transport,
)
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)


def test_retries_with_backoff_until_success(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    attempts: list[tuple[int, int]] = []

    @define_workflow(
        "flaky",
        retries=Retries(max_attempts=3, initial_delay=0.05, multiplier=4, jitter=0),
        registry=registry,
    )
    def flaky(ctx: Context[Any]) -> int:
        attempts.append((ctx.run.attempt, ctx.run.max_attempts))
        if ctx.run.attempt < 3:
            raise ValueError(f"try {ctx.run.attempt}")
        return ctx.run.attempt

    workers.start()
    handle = flaky.run()
    assert handle.result(timeout=20) == 3
    assert attempts == [(1, 3), (2, 3), (3, 3)]
    state = handle.state()
    assert state is not None
    assert state.status is RunStatus.SUCCEEDED and state.attempt == 3
    # the last retry was scheduled 0.05 * 4 = 0.2 s after the second attempt failed
    assert state.available_at is not None and state.started_at is not None
    assert state.error is not None and state.error.message == "try 2"


def test_retry_delay_is_applied_via_scheduled(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    failed_at: list[int] = []

    @define_workflow(
        "delayed-retry",
        retries=Retries(max_attempts=2, initial_delay=0.4, jitter=0),
        registry=registry,
    )
    def flow(ctx: Context[Any]) -> str:
        if ctx.run.attempt == 1:
            failed_at.append(client.server_time_ms())
            raise ValueError("first")
        return "second"

    workers.start()
    handle = flow.run()

    def scheduled() -> RunState | None:
        s = handle.state()
        return s if s is not None and s.status is RunStatus.SCHEDULED else None

    state = wait_until(scheduled, 10, message="the retry to be scheduled")
    assert state is not None
    assert state.attempt == 2
    assert state.available_at is not None
    assert 400 <= state.available_at - failed_at[0] < 5_000
    assert raw.zscore(client.keys.q_scheduled("default"), handle.id) == state.available_at
    assert handle.result(timeout=10) == "second"
    done = handle.state()
    assert done is not None and done.status is RunStatus.SUCCEEDED


def test_non_retriable_error_fails_at_once(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = []

    @define_workflow(
        "final", retries=Retries(max_attempts=5, initial_delay=0.01, jitter=0), registry=registry
    )
    def final(ctx: Context[Any]) -> None:
        calls.append(ctx.run.attempt)
        raise NonRetriableError("do not try again")

    workers.start()
    handle = final.run()
    with pytest.raises(NonRetriableError) as info:
        handle.result(timeout=10)
    assert isinstance(info.value, RunFailedError)
    assert info.value.error is not None and info.value.error.retryable is False
    assert calls == [1]


def test_attempts_exhausted_fails_with_last_error(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow(
        "always", retries=Retries(max_attempts=3, initial_delay=0.05, jitter=0), registry=registry
    )
    def always(ctx: Context[Any]) -> None:
        raise RuntimeError(f"attempt {ctx.run.attempt}")

    workers.start()
    handle = always.run()
    with pytest.raises(RunFailedError, match="RuntimeError: attempt 3"):
        handle.result(timeout=20)
    state = handle.state()
    assert state is not None and state.attempt == 3 and state.status is RunStatus.FAILED


def test_default_is_a_single_attempt(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = []

    @define_workflow("once", registry=registry)
    def once(ctx: Context[Any]) -> None:
        calls.append(1)
        raise RuntimeError("x")

    workers.start()
    with pytest.raises(RunFailedError):
        once.run().result(timeout=10)
    assert calls == [1]


def test_on_failure_runs_once_after_the_last_attempt(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[FailureContext[Any]] = []

    def alert(fctx: FailureContext[Any]) -> None:
        seen.append(fctx)

    @define_workflow(
        "alerting",
        retries=Retries(max_attempts=3, initial_delay=0.05, jitter=0),
        on_failure=alert,
        registry=registry,
    )
    def alerting(ctx: Context[Any]) -> None:
        raise ValueError(f"bad {ctx.run.attempt}")

    workers.start()
    handle = alerting.run({"order": 7})
    with pytest.raises(RunFailedError):
        handle.result(timeout=20)
    wait_until(lambda: seen, 5, message="on_failure")
    # give a wrongly repeated call the chance to happen: run another run through
    assert client.run_by_name("alerting", {"order": 8}) is not None
    wait_until(lambda: len(seen) == 2, 20, message="second on_failure")
    first = [f for f in seen if f.run.id == handle.id]
    assert len(first) == 1
    fctx = first[0]
    assert fctx.input == {"order": 7}
    assert fctx.error.type == "ValueError" and fctx.error.message == "bad 3"
    assert fctx.run.attempt == 3


def test_on_failure_errors_never_change_the_outcome(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def broken_alert(fctx: FailureContext[Any]) -> None:
        calls.append(fctx.run.id)
        raise RuntimeError("alerting is down")

    @define_workflow("fail-alert", on_failure=broken_alert, registry=registry)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("original")

    @define_workflow("ok-after", registry=registry)
    def ok_after(ctx: Context[Any]) -> str:
        return "still working"

    workers.start()
    with caplog.at_level(logging.ERROR):
        handle = flow.run()
        with pytest.raises(RunFailedError, match="ValueError: original"):
            handle.result(timeout=10)
        assert ok_after.run().result(timeout=10) == "still working"
    state = handle.state()
    assert state is not None and state.status is RunStatus.FAILED
    assert state.error is not None and state.error.type == "ValueError"
    assert calls == [handle.id]
    assert any("on_failure" in r.getMessage() for r in caplog.records)
    assert workers.alive() == [True]


def test_an_on_failure_error_is_logged_with_redis_passwords_masked(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that could not reach a Redis names its URL in its error: the log
    line (formatted by the application's own handler, not the supervisor's
    masking formatter) shows the traceback with the password masked, as the
    run's stored error does."""

    def alert(fctx: FailureContext[Any]) -> None:
        raise ConnectionError("alerts down: redis://admin:hook-s3cret@10.0.0.9:6379/0")

    @define_workflow("fail-alert-secret", on_failure=alert, registry=registry)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("original")

    workers.start()
    with caplog.at_level(logging.ERROR):
        handle = flow.run()
        with pytest.raises(RunFailedError):
            handle.result(timeout=10)
        wait_until(
            lambda: any("on_failure" in r.getMessage() for r in caplog.records),
            10,
            message="hook log",
        )
    plain = logging.Formatter("%(levelname)s %(message)s")
    lines = [plain.format(r) for r in caplog.records if "on_failure" in r.getMessage()]
    text = "\n".join(lines)
    assert "hook-s3cret" not in text, text
    assert "ConnectionError" in text and "redis://admin:***@10.0.0.9:6379/0" in text, text
    assert "Traceback" in text, text


def test_on_failure_is_not_called_for_success_or_cancel(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = []

    @define_workflow("fine", on_failure=lambda f: calls.append(f), registry=registry)
    def fine(ctx: Context[Any]) -> int:
        return 1

    workers.start()
    assert fine.run().result(timeout=10) == 1
    queued = fine.run(run_at=client.server_time_ms() / 1000 + 60)
    assert queued.cancel() is True
    assert calls == []


def test_async_on_failure(client: Client, registry: Registry, workers: WorkerPool) -> None:
    done = threading.Event()

    async def alert(fctx: FailureContext[Any]) -> None:
        done.set()

    @define_workflow("async-alert", on_failure=alert, registry=registry)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("x")

    workers.start()
    with pytest.raises(RunFailedError):
        flow.run().result(timeout=10)
    assert done.wait(5)


def test_on_failure_runs_once_when_the_reply_of_the_failing_finish_is_lost(
    client: Client, registry: Registry, workers: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 #4: the failing finalize is applied, its reply never arrives (the
    connection drops), the transport sends it again: on_failure still runs, once."""
    seen: list[str] = []

    @define_workflow("lossy", on_failure=lambda f: seen.append(f.run.id), registry=registry)
    def lossy(ctx: Context[Any]) -> None:
        raise NonRetriableError("boom")

    real = transport._Wire.request
    lost: list[Any] = []

    def request(self: transport._Wire, args: tuple[Any, ...]) -> Any:
        reply = real(self, args)
        name = args[1] if len(args) > 1 else b""
        name = name.decode() if isinstance(name, bytes) else str(name)
        is_finalize = name.endswith("_finalize_run") or name == client.scripts._shas.get(
            "finalize_run"
        )
        if is_finalize and not lost:
            lost.append(reply)
            self.close()
            raise redis.ConnectionError("the reply was lost on the way back (test)")
        return reply

    monkeypatch.setattr(transport._Wire, "request", request)
    workers.start()
    handle = lossy.run()
    with pytest.raises(RunFailedError):
        handle.result(timeout=10)
    wait_until(lambda: seen, 10, message="on_failure")
    assert lost, "the finalize reply was never dropped"
    # let a wrongly repeated call happen: another run through the same worker
    client.run_by_name("lossy")
    wait_until(lambda: len(seen) == 2, 10, message="second on_failure")
    assert seen.count(handle.id) == 1
