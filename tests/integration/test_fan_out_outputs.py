"""A ``run_workflows`` fan-out whose children's outputs, each well within
``max_payload_bytes``, add up to more than it (default settings: 8 MiB). The wait
step's record copied them all and was held to the limit of one payload, so the
parent failed with ``PayloadTooLargeError`` after every child had run, and again
at each retry (the children's outputs never shrink). Past the limit the record
now names the children, and a replay reads their outputs from them."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, define_workflow
from redflow_mp.runs import DEFAULT_MAX_PAYLOAD_BYTES
from redflow_mp.waitbase import CHILD_OUTPUTS
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(120)

CHILDREN = 100
EACH = 100_000  # bytes of one child's output: 100 of them pass 8 MiB together


def test_a_fan_out_whose_outputs_add_up_past_the_payload_limit_succeeds(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    assert client.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
    assert CHILDREN * EACH > DEFAULT_MAX_PAYLOAD_BYTES > EACH
    tries: list[int] = []

    @define_workflow("part", registry=registry, max_concurrency=20)
    def part(ctx: Context[int]) -> str:
        return str(ctx.input % 10) * EACH

    @define_workflow(
        "whole",
        registry=registry,
        max_concurrency=2,
        retries=Retries(max_attempts=2, initial_delay=0.05, jitter=0),
    )
    def whole(ctx: Context[Any]) -> list[int]:
        outputs = ctx.step.run_workflows("fan", part, list(range(CHILDREN)))
        ctx.step.sleep("after", 0.1)  # suspends: the replay reads the outputs again
        tries.append(ctx.run.attempt)
        if ctx.run.attempt == 1:  # the retry (a new attempt) reads them again too
            raise RuntimeError("again")
        return [len(o) for o in outputs] + [int(o[0]) for o in outputs]

    workers.start()
    workers.start()
    handle = whole.run(None)
    out = handle.result(timeout=100)
    assert out[:CHILDREN] == [EACH] * CHILDREN
    assert out[CHILDREN:] == [i % 10 for i in range(CHILDREN)]  # in input order
    assert tries == [1, 2]
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["fan"].status.value == "succeeded"
    assert steps["fan"].output == CHILD_OUTPUTS  # the children's outputs are theirs
    # the record names the children: no copy of 10 MB of outputs
    assert raw.hstrlen(client.keys.run_steps(handle.id), "fan") < 100 * CHILDREN
    assert workers.errors == []


def test_a_small_fan_out_still_records_its_outputs(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("part", registry=registry, max_concurrency=20)
    def part(ctx: Context[int]) -> int:
        return ctx.input * 2

    @define_workflow("whole", registry=registry, max_concurrency=2)
    def whole(ctx: Context[Any]) -> list[int]:
        return list(ctx.step.run_workflows("fan", part, [1, 2, 3]))

    workers.start()
    handle = whole.run(None)
    assert handle.result(timeout=60) == [2, 4, 6]
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["fan"].output == [2, 4, 6]
