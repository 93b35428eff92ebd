"""Durable-wait workflows of the fault suite (issue 12), loaded next to
``workload.py`` (``--module tests.faults.workload_waits``, same queue).

Every wait goes through :func:`wait_step`, which logs ``wait-done`` to the ledger
when the wait returns (or raises its recorded failure): the step record Redis
holds for it (status, seq, finishedAt) and, for an event, the event id the step
got. The checker's I11 needs every return of a wait step to see one completion;
I10 compares the event ids consumed with those the test sent (``event-sent``).

Kills (the ``kill`` field of an input; each fires once per run, marked by a file
in the ledger directory, and is logged as a ``kill`` fault just before the
signal):
    suspend   the process SIGKILLs itself ``delay_us`` after the handler's first
              execution reaches its wait (recording the wait, suspend_run,
              claiming the next run...)
    resume    the same, from the start of a later execution (the resume:
              replay, the cached wait, the last step, the finish)
    finish    (fx-wchild) ``delay_us`` after its step, while it finishes and
              wakes the parent waiting for it
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from redflow_mp import (
    Context,
    LeaseLostError,
    StepTimeoutError,
    define_workflow,
    get_default_client,
)
from redflow_mp.errors import TRANSIENT_ERRORS
from tests.faults import ledger
from tests.faults.workload import QUEUE, RUN_TIMEOUT_S, WAIT_TIMEOUT_S, instrumented, step


def _marker(name: str) -> bool:
    """Create a once-only marker file in the ledger dir; True if this call created it."""
    directory = os.environ.get(ledger.ENV)
    if not directory:
        return False
    try:
        fd = os.open(os.path.join(directory, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _kill_after(run_id: str, where: str, delay_us: int) -> None:
    def fire() -> None:
        time.sleep(delay_us / 1e6)
        ledger.append("fault", kind="kill", pids=[os.getpid()], run=run_id, where=where)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=fire, name="faults-kill", daemon=True).start()


def _plan(ctx: Context[Any]) -> tuple[str | None, int]:
    data = ctx.input if isinstance(ctx.input, dict) else {}
    return data.get("kill"), int(data.get("delay_us", 0))


def _arm(ctx: Context[Any], allowed: tuple[str, ...] = ("suspend", "resume")) -> None:
    """Arm this run's kill, once, if one of ``allowed`` is planned for this execution."""
    kill, delay = _plan(ctx)
    if kill not in allowed:
        return
    first = _marker(f"seen-{ctx.run.id}")
    due = kill == "finish" or (kill == "suspend") == first
    if due and _marker(f"kill-{ctx.run.id}"):
        _kill_after(ctx.run.id, kill, delay)


def _record(ctx: Context[Any], name: str) -> dict[str, Any] | None:
    """The step record of ``name``, read for the ledger. This read is the
    instrumentation's, not the library's: it rides out a Redis outage the case
    injects as the library's own calls do (backoff up to 30 s), or the run would
    fail with the ConnectionError and the case report a failed run that the
    library never caused (W3, ``test_redis_killed_with_sleeping_and_event_waiting_runs``,
    failed about once in four runs on a loaded machine)."""
    client = get_default_client()
    assert client is not None
    deadline = time.monotonic() + 30.0
    delay = 0.05
    while True:
        try:
            raw = client.redis.hget(client.keys.run_steps(ctx.run.id), name)
            break
        except TRANSIENT_ERRORS:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)
    if raw is None:
        return None
    rec: Any = json.loads(raw)
    return rec if isinstance(rec, dict) else None


def wait_step(ctx: Context[Any], name: str, kind: str, call: Callable[[], Any]) -> Any:
    """Run one wait step and log what it returned (see the module doc)."""
    try:
        value = call()
    except LeaseLostError:
        raise
    except Exception as exc:
        rec = _record(ctx, name) or {}
        fp = f"{rec.get('status')}:{rec.get('seq')}:{rec.get('finishedAt')}"
        ledger.append(
            "wait-done", run=ctx.run.id, step=name, kind=kind, ok=False, fp=fp,
            attempt=ctx.run.attempt, error=type(exc).__name__,
        )  # fmt: skip
        raise
    rec = _record(ctx, name) or {}
    fp = f"{rec.get('status')}:{rec.get('seq')}:{rec.get('finishedAt')}"
    eid = value.get("eid") if kind == "event" and isinstance(value, dict) else None
    ledger.append("wait-done", run=ctx.run.id, step=name, kind=kind, ok=True, fp=fp, eid=eid)
    return value


def _input(ctx: Context[Any]) -> dict[str, Any]:
    return ctx.input if isinstance(ctx.input, dict) else {}


# max_concurrency of every wait workflow: a suspended run keeps its slot, so every
# run of one workflow the soak suspends at once must fit (W2 at soak size: 5,000
# fx-listener runs, its listeners and the parents' children, for 10,000 runs).
SLOTS = max(10_000, int(os.environ.get("FAULTS_SOAK_SUSPENDED") or 0))


@define_workflow("fx-sleeper", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def sleeper(ctx: Context[Any]) -> str:
    """Sleeps ``s`` seconds, or until the epoch time ``until``; then one step."""
    data = _input(ctx)
    _arm(ctx)
    if "until" in data:
        wait_step(ctx, "nap", "sleep", lambda: ctx.step.sleep_until("nap", float(data["until"])))
    else:
        wait_step(ctx, "nap", "sleep", lambda: ctx.step.sleep("nap", float(data.get("s", 0.2))))
    if time.time() < float(data.get("until", 0)):
        ledger.append("wait-early", run=ctx.run.id, step="nap", until=data["until"])
    step(ctx, "after")
    return "slept"


@define_workflow("fx-listener", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def listener(ctx: Context[Any]) -> list[Any]:
    """Waits for ``k`` events named ``go`` (steps ev0, ev1, ...); then one step."""
    data = _input(ctx)
    _arm(ctx)
    got = []
    for j in range(int(data.get("k", 1))):
        name = f"ev{j}"
        got.append(wait_step(ctx, name, "event", partial(ctx.step.wait_for_event, name, "go")))
    step(ctx, "after")
    return [g.get("eid") if isinstance(g, dict) else g for g in got]


@define_workflow("fx-racer", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def racer(ctx: Context[Any]) -> str:
    """Waits for ``go`` with a deadline at the epoch time ``at`` (set by the first
    execution, kept by replays) that the test makes fall when the event is sent;
    a timed-out wait leaves the event to a second wait."""
    data = _input(ctx)
    timeout = max(0.001, float(data["at"]) - time.time())
    try:
        wait_step(
            ctx, "ev", "event", lambda: ctx.step.wait_for_event("ev", "go", timeout=timeout)
        )  # fmt: skip
        outcome = "event"
    except StepTimeoutError:
        wait_step(ctx, "late", "event", lambda: ctx.step.wait_for_event("late", "go"))
        outcome = "timeout"
    step(ctx, "after")
    return outcome


@define_workflow("fx-wchild", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def wchild(ctx: Context[Any]) -> dict[str, Any]:
    out = step(ctx, "c1")
    _arm(ctx, ("finish",))
    return {"exec": out["exec"]}


@define_workflow("fx-wparent", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def wparent(ctx: Context[Any]) -> Any:
    """Waits for ``n`` children: fx-wchild (``kill`` passed on to them), or
    fx-listener (``child`` = "listener": children that wait for an event)."""
    data = _input(ctx)
    n = int(data.get("n", 1))
    kill = {k: data[k] for k in ("kill", "delay_us") if k in data}
    _arm(ctx)
    if data.get("child") == "listener":
        child: Any = listener
        inputs: list[Any] = [{"k": 1} for _ in range(n)]
    else:
        child = wchild
        inputs = [{**kill, "i": i} if kill.get("kill") == "finish" else {"i": i} for i in range(n)]
    if n == 1:
        got = wait_step(
            ctx, "kids", "children",
            lambda: ctx.step.run_workflow("kids", child, inputs[0], timeout=WAIT_TIMEOUT_S),
        )  # fmt: skip
    else:
        got = wait_step(
            ctx, "kids", "children",
            lambda: ctx.step.run_workflows("kids", child, inputs, timeout=WAIT_TIMEOUT_S),
        )  # fmt: skip
    step(ctx, "after")
    return got


WAIT_WORKFLOWS = {wf.name: wf for wf in (sleeper, listener, racer, wchild, wparent)}
