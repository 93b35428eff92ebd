"""Workflows of the fault suite, loaded by supervisors with
``--module tests.faults.workload`` (cwd = repository root) and imported by the
test process to enqueue them.

Every step function and every handler execution appends to the ledger
(``ledger.py``) before and after its work, so the invariant checker can tell
what really ran, independently of Redis.

Knobs (environment, read at import, never ``REDFLOW_*``):
    FAULTS_STEP_MS         work per step in ms (default 5)
    FAULTS_GAP_MS          handler work between steps in ms (default 2)
    FAULTS_RUN_TIMEOUT_S   timeout of every workflow but fx-gil in s (default 60)
    FAULTS_CLOCK_OFFSET_S  shift this process's wall clock (the clock-skew helper)
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from redflow_mp import Context, LeaseLostError, Retries, RunCanceledError, define_workflow
from tests.faults import ledger

QUEUE = "fx"
LIMITED_MAX = 2
STEP_MS = float(os.environ.get("FAULTS_STEP_MS", "5"))
GAP_MS = float(os.environ.get("FAULTS_GAP_MS", "2"))
RUN_TIMEOUT_S = float(os.environ.get("FAULTS_RUN_TIMEOUT_S", "60"))

# --------------------------------------------------------------- clock skew
# Our own clock helper: this process's wall clock (time.time / time.time_ns, the
# only wall-clock reads of redflow_mp) runs FAULTS_CLOCK_OFFSET_S ahead (or
# behind). Patched at import, in the supervisor's parent before it forks, so its
# children inherit it. The ledger uses CLOCK_MONOTONIC and is not affected.
_OFFSET_S = float(os.environ.get("FAULTS_CLOCK_OFFSET_S", "0") or 0)
if _OFFSET_S:
    _real_time = time.time
    _real_time_ns = time.time_ns

    def _skewed_time() -> float:
        return _real_time() + _OFFSET_S

    def _skewed_time_ns() -> int:
        return _real_time_ns() + int(_OFFSET_S * 1e9)

    time.time = _skewed_time
    time.time_ns = _skewed_time_ns


# ------------------------------------------------------------ instrumentation

_mine: set[str] = set()  # execution ids of step functions run by this process


def _log_lease_confirmations() -> None:
    """Log each lease confirmation's return (``lease-confirmed``): the moment a
    step's execution is decided (its fenced ``running`` record, then this). A
    process stopped after it and before its step function logs ``step-start``
    resumes inside that step, as one stopped inside the function does; the
    checker (I3) reads a late ``step-start`` of such an execution as cut off in
    flight, not as a re-execution of a recorded step. Patched at import, in the
    supervisor's parent before it forks."""
    from redflow_mp.execution import Execution

    confirm = Execution.confirm_lease

    def confirm_lease(self: Execution) -> None:
        confirm(self)
        ledger.append("lease-confirmed", run=self.run_id)

    Execution.confirm_lease = confirm_lease  # type: ignore[method-assign]


_log_lease_confirmations()


def _work(run_id: str, step: str, attempt: int, work_ms: float, fail: bool) -> dict[str, Any]:
    """A step function: announce, work, announce; return this execution's id."""
    exec_id = uuid.uuid4().hex
    _mine.add(exec_id)
    ledger.append("step-start", run=run_id, step=step, attempt=attempt, exec=exec_id)
    time.sleep(work_ms / 1000.0)
    if fail:
        ledger.append("step-end", run=run_id, step=step, attempt=attempt, exec=exec_id, ok=False)
        raise RuntimeError(f"injected failure of step {step} on attempt {attempt}")
    ledger.append("step-end", run=run_id, step=step, attempt=attempt, exec=exec_id, ok=True)
    return {"exec": exec_id, "step": step}


def step(ctx: Context[Any], name: str, *, fail: bool = False, work_ms: float | None = None) -> Any:
    """``ctx.step.run`` of an instrumented step; logs the acknowledged record."""
    out = ctx.step.run(
        name,
        _work,
        ctx.run.id,
        name,
        ctx.run.attempt,
        STEP_MS if work_ms is None else work_ms,
        fail,
    )
    if isinstance(out, dict) and out.get("exec") in _mine:
        _mine.discard(out["exec"])
        ledger.append("step-recorded", run=ctx.run.id, step=name, exec=out["exec"])
    return out


def gap() -> None:
    """Handler work between steps (replayed on every attempt, as in real code)."""
    if GAP_MS > 0:
        time.sleep(GAP_MS / 1000.0)


def _token(ctx: Context[Any]) -> str:
    ex = getattr(ctx.step, "_ex", None)
    return str(getattr(ex, "token", ""))


def instrumented(body: Callable[[Context[Any]], Any]) -> Callable[[Context[Any]], Any]:
    """Wrap a handler so each execution is bracketed in the ledger."""

    def handler(ctx: Context[Any]) -> Any:
        info = ctx.run
        ledger.append(
            "handler-start",
            run=info.id,
            wf=info.workflow,
            attempt=info.attempt,
            token=_token(ctx),
            ppid=os.getppid(),
        )
        outcome = "error"
        try:
            result = body(ctx)
            outcome = "ok"
            return result
        except LeaseLostError:
            outcome = "lost"
            raise
        except RunCanceledError:
            outcome = "lost" if getattr(ctx, "_lease_lost", False) else "canceled"
            raise
        finally:
            ledger.append("handler-end", run=info.id, wf=info.workflow, outcome=outcome)

    handler.__name__ = getattr(body, "__name__", "handler")
    return handler


# ------------------------------------------------------------------ workflows


WAIT_TIMEOUT_S = max(120.0, 10 * RUN_TIMEOUT_S)


@define_workflow("fx-chain", queue=QUEUE, max_concurrency=1000, timeout=RUN_TIMEOUT_S)
@instrumented
def chain(ctx: Context[Any]) -> dict[str, Any]:
    """Three recorded steps with handler work between them."""
    a = step(ctx, "s1")
    gap()
    b = step(ctx, "s2")
    gap()
    c = step(ctx, "s3")
    return {"n": ctx.input, "execs": [a["exec"], b["exec"], c["exec"]]}


@define_workflow("fx-limited", queue=QUEUE, max_concurrency=LIMITED_MAX, timeout=RUN_TIMEOUT_S)
@instrumented
def limited(ctx: Context[Any]) -> str:
    """Capped at LIMITED_MAX concurrent runs across every supervisor."""
    step(ctx, "l1", work_ms=STEP_MS * 2)
    gap()
    step(ctx, "l2", work_ms=STEP_MS * 2)
    return "ok"


@define_workflow("fx-child", queue=QUEUE, max_concurrency=1000, timeout=RUN_TIMEOUT_S)
@instrumented
def child(ctx: Context[Any]) -> dict[str, Any]:
    out = step(ctx, "c1")
    return {"child_of": ctx.run.parent_run_id, "exec": out["exec"]}


@define_workflow("fx-parent", queue=QUEUE, max_concurrency=1000, timeout=RUN_TIMEOUT_S)
@instrumented
def parent(ctx: Context[Any]) -> dict[str, Any]:
    """A step, a child it waits for, a child it only starts, a step."""
    step(ctx, "p1")
    gap()
    # A durable wait: its timeout counts the child's time in the queue too (the
    # parent is suspended, not holding a process), so it is not the run timeout.
    got = ctx.step.run_workflow("child", child, {"from": ctx.run.id}, timeout=WAIT_TIMEOUT_S)
    emitted = ctx.step.emit_workflow("emit", "fx-child", {"from": ctx.run.id})
    step(ctx, "p2")
    return {"child": got, "emitted": emitted}


@define_workflow(
    "fx-flaky",
    queue=QUEUE,
    max_concurrency=1000,
    timeout=RUN_TIMEOUT_S,
    retries=Retries(max_attempts=4, initial_delay=0.05, multiplier=1.0, jitter=0),
)
@instrumented
def flaky(ctx: Context[Any]) -> str:
    """The second step fails on the first attempt; the first is cached for the retry."""
    step(ctx, "f1")
    gap()
    step(ctx, "f2", fail=ctx.run.attempt == 1)
    return "ok"


@define_workflow(
    "fx-slow",
    queue=QUEUE,
    max_concurrency=1000,
    timeout=RUN_TIMEOUT_S,
    retries=Retries(max_attempts=3, initial_delay=0.05, multiplier=1.0, jitter=0),
)
@instrumented
def slow(ctx: Context[Any]) -> str:
    """Long steps (20x a normal one): easy to catch in the middle of its work."""
    step(ctx, "w1", work_ms=STEP_MS * 20)
    gap()
    step(ctx, "w2", work_ms=STEP_MS * 20)
    return "ok"


@define_workflow("fx-gil", queue=QUEUE, max_concurrency=1, timeout=1.0)
@instrumented
def gil(ctx: Context[Any]) -> int:
    """Holds the GIL in one C call far past its 1 s timeout plus kill_grace: the
    child's heartbeat thread cannot run, SIGTERM's handler never does, only the
    supervisor's SIGKILL ends it. Not in the producer's mix; cases enqueue it."""
    return sum(range(10**11))


WORKFLOWS = {wf.name: wf for wf in (chain, limited, child, parent, flaky, slow)}
LIMITS = {name: wf.max_concurrency for name, wf in WORKFLOWS.items()}


@define_workflow("fx-board-tear", queue=QUEUE, max_concurrency=1000, timeout=RUN_TIMEOUT_S)
def board_tear(ctx: Context[Any]) -> None:
    """Dies by SIGKILL in the middle of an update of its status-board entry.

    Injects exactly the state a SIGKILL (or a long preemption, or SIGSTOP) leaves
    when it lands between the two sequence-lock increments of a board write: the
    child's entry stays odd ("being written") forever.
    """
    import gc
    import signal

    hooks = next(o for o in gc.get_objects() if type(o).__name__ == "_Hooks")
    hooks.board._begin(hooks.index)  # seq becomes odd, as in the middle of push/pop
    ledger.append("handler-start", run=ctx.run.id, wf=ctx.run.workflow, attempt=ctx.run.attempt)
    ledger.append("fault", kind="kill", pids=[os.getpid()], run=ctx.run.id)
    os.kill(os.getpid(), signal.SIGKILL)
