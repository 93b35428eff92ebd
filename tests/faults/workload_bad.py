"""Workflows for the bad-input cases, loaded with ``--module tests.faults.workload_bad``."""

from __future__ import annotations

from typing import Any

import msgspec

from redflow_mp import Context, Retries, define_workflow

QUEUE = "fxbad"
HOSTILE_QUEUE = "q {b}:c ü 🙂"
HOSTILE_WORKFLOW = "fx hostile {x}:y ünï 🙂"
HOSTILE_STEPS = ("step with spaces", "{braces}", "co:lo:ns", "ünïcödé 🙂", "x" * 512)
RETRIES = Retries(max_attempts=3, initial_delay=0.01, jitter=0)


class Point(msgspec.Struct):
    x: int
    y: int


@define_workflow("fx-schema", queue=QUEUE, schema=Point, retries=RETRIES)
def schema(ctx: Context[Point]) -> int:
    return ctx.input.x + ctx.input.y


@define_workflow("fx-big-step", queue=QUEUE, retries=RETRIES)
def big_step(ctx: Context[Any]) -> None:
    ctx.step.run("big", lambda: "x" * int(ctx.input))


@define_workflow("fx-big-output", queue=QUEUE, retries=RETRIES)
def big_output(ctx: Context[Any]) -> str:
    return "x" * int(ctx.input)


@define_workflow("fx-unencodable-step", queue=QUEUE, retries=RETRIES)
def unencodable_step(ctx: Context[Any]) -> None:
    ctx.step.run("obj", object)


@define_workflow("fx-unencodable-output", queue=QUEUE, retries=RETRIES)
def unencodable_output(ctx: Context[Any]) -> object:
    return object()


@define_workflow("fx-dup-step", queue=QUEUE, retries=RETRIES)
def dup_step(ctx: Context[Any]) -> None:
    ctx.step.run("same", lambda: 1)
    ctx.step.run("same", lambda: 2)


@define_workflow("fx-leaf", queue=QUEUE, max_concurrency=10_000)
def leaf(ctx: Context[Any]) -> Any:
    return ctx.input


@define_workflow("fx-fanout", queue=QUEUE)
def fanout(ctx: Context[Any]) -> int:
    ids = [ctx.step.emit_workflow(f"child-{i}", "fx-leaf", i) for i in range(int(ctx.input))]
    return len(set(ids))


@define_workflow(HOSTILE_WORKFLOW, queue=HOSTILE_QUEUE, max_concurrency=5, retries=RETRIES)
def hostile(ctx: Context[Any]) -> list[Any]:
    return [ctx.step.run(name, lambda n=name: [n, len(ctx.input)]) for name in HOSTILE_STEPS]


@define_workflow("fx-long-step-name", queue=QUEUE)
def long_step_name(ctx: Context[Any]) -> None:
    ctx.step.run("s" * 10_240, lambda: 1)
