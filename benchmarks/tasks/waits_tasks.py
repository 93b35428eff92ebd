"""Workflows of the durable-waits benchmark (``python -m benchmarks.waits``).

Imported by ``redflow-supervisor --module benchmarks.tasks.waits_tasks``. Every
handler notes its own executions in the benchmark's Redis (keys ``wb:*``, never
redflow's own keys): code outside steps runs on every execution, so a ``finally``
around the handler body sees each execution end, whether it returned, failed or
suspended (the suspension travels as an exception through the body).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.tasks import common
from redflow_mp import Context, define_workflow

QUEUE = "bench"
LIMIT = 100_000

EXEC_KEY = "wb:exec"  # "start end" wall-clock pairs of every handler execution
LATE_KEY = "wb:late"  # seconds past the wake-up time at which a sleeper resumed
RESUMED_KEY = "wb:resumed"  # wall-clock time at which an event waiter resumed
REPLAYED_KEY = "wb:replayed"  # set by the replay workflow when it has resumed
BENCH_KEYS = (EXEC_KEY, LATE_KEY, RESUMED_KEY, REPLAYED_KEY)


def burn(iterations: int) -> int:
    """Pure-Python CPU work (holds the GIL): what fan-out over processes is for."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def _note_execution(start: float) -> None:
    common.conn().rpush(EXEC_KEY, f"{start} {time.time()}")


@define_workflow("wb-child", queue=QUEUE, max_concurrency=LIMIT)
def child(ctx: Context[Any]) -> int:
    start = time.time()
    try:
        return burn(int(ctx.input["iterations"]))
    finally:
        _note_execution(start)


@define_workflow("wb-parent", queue=QUEUE, max_concurrency=LIMIT)
def parent(ctx: Context[Any]) -> int:
    start = time.time()
    try:
        out: int = ctx.step.run_workflow("child", child, {"iterations": ctx.input["iterations"]})
        return out
    finally:
        _note_execution(start)


@define_workflow("wb-fan", queue=QUEUE, max_concurrency=LIMIT)
def fan(ctx: Context[Any]) -> list[int]:
    n = int(ctx.input["children"])
    inputs = [{"iterations": int(ctx.input["iterations"])} for _ in range(n)]
    out: list[int] = ctx.step.run_workflows("burn", child, inputs)
    return out


@define_workflow("wb-sleep", queue=QUEUE, max_concurrency=LIMIT)
def sleeper(ctx: Context[Any]) -> None:
    at = float(ctx.input["at"])
    ctx.step.sleep_until("nap", at)
    common.conn().rpush(LATE_KEY, str(time.time() - at))


@define_workflow("wb-event", queue=QUEUE, max_concurrency=LIMIT)
def waiter(ctx: Context[Any]) -> Any:
    payload = ctx.step.wait_for_event("go", "go")
    common.conn().rpush(RESUMED_KEY, str(time.time()))
    return payload


def _one() -> int:
    return 1


@define_workflow("wb-replay", queue=QUEUE, max_concurrency=LIMIT)
def replay(ctx: Context[Any]) -> int:
    total = 0
    for i in range(int(ctx.input["steps"])):
        total += ctx.step.run(f"s{i}", _one)
    ctx.step.sleep("nap", float(ctx.input["nap"]))
    common.conn().set(REPLAYED_KEY, "1")
    return total
