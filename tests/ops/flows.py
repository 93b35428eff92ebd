"""Workflows the ops tests run (in-process Worker or the real supervisor)."""

from __future__ import annotations

import time
from typing import Any, TypeVar

from redflow_mp import Context, Cron, NonRetriableError, Registry, Retries, define_workflow

T = TypeVar("T")


def _after(pause: float, value: T) -> T:
    """``value``, once ``pause`` seconds have passed (a step that takes a moment)."""
    time.sleep(pause)
    return value


@define_workflow("ops-steps", queue="ops", max_concurrency=4)
def ops_steps(ctx: Context[Any]) -> dict[str, Any]:
    """Three steps, each taking a moment."""
    pause = float((ctx.input or {}).get("pause", 0.01))
    a = ctx.step.run("fetch", lambda: _after(pause, 21))
    b = ctx.step.run("double", lambda: _after(pause, a * 2))
    ctx.step.run("store", lambda: _after(pause, {"stored": b}))
    return {"answer": b}


def _explode(why: str) -> None:
    raise ValueError(f"cannot parse {why!r}")


@define_workflow("ops-fail", queue="ops", max_concurrency=4)
def ops_fail(ctx: Context[Any]) -> None:
    ctx.step.run("ok", lambda: "fine")
    ctx.step.run("parse", _explode, str((ctx.input or {}).get("why", "input")))


@define_workflow("ops-nonretriable", queue="ops", retries=Retries(max_attempts=3))
def ops_nonretriable(ctx: Context[Any]) -> None:
    raise NonRetriableError("refused for good")


@define_workflow("ops-slow", queue="ops", max_concurrency=4)
def ops_slow(ctx: Context[Any]) -> str:
    """``steps`` steps of ``pause`` seconds each; with ``"held": true`` each step
    lasts until the run is canceled instead (at most ``pause`` seconds): a run
    that is still running whenever the test looks, however slow the machine."""
    opts = ctx.input or {}
    pause = float(opts.get("pause", 0.2))
    for i in range(int(opts.get("steps", 3))):
        if opts.get("held"):
            ctx.step.run(f"tick-{i}", ctx.cancelled.wait, pause)
        else:
            ctx.step.run(f"tick-{i}", time.sleep, pause)
    return "slept"


@define_workflow(
    "ops-cron",
    queue="ops-idle",
    cron=[Cron("0 3 * * *", timezone="Europe/Berlin", input={"nightly": True})],
)
def ops_cron(ctx: Context[Any]) -> None:
    return None


@define_workflow("ops-parked", queue="ops-idle", max_concurrency=2, rate_limit="5/m")
def ops_parked(ctx: Context[Any]) -> None:
    """Queued on a queue nobody serves in the tests: stays queued until canceled."""
    return None


ALL = (ops_steps, ops_fail, ops_nonretriable, ops_slow, ops_cron, ops_parked)


def make_registry() -> Registry:
    """A fresh registry holding the workflows above (for in-process workers and sync)."""
    reg = Registry()
    for wf in ALL:
        reg.add(wf)
    return reg
