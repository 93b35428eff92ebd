"""``step.run_workflows`` with one bad input (a NaN, a value its schema refuses)
names the item, as ``Workflow.run_many`` does (``inputs[1]: ...``), and writes
no child run. It raised the encoder's message alone ("input is NaN or
infinite ..."), leaving the author to guess which of the inputs it was."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


class Item(msgspec.Struct):
    n: int


@pytest.mark.parametrize("bad", ["nan", "schema"])
def test_run_workflows_names_the_bad_item_and_writes_nothing(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis, bad: str
) -> None:
    @define_workflow("bi-child", queue="nobody", schema=Item, registry=registry)
    def child(ctx: Context[Item]) -> int:
        return ctx.input.n

    inputs: list[Any] = [{"n": 1}, {"n": float("nan")}, {"n": 3}]
    if bad == "schema":
        inputs[1] = {"n": "not a number"}

    @define_workflow("bi-parent", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflows("kids", child, inputs)
        except Exception as exc:  # the error a handler gets
            return f"{type(exc).__name__}: {exc}"
        return "started"

    # run_many's own message, for comparison: the same index
    with pytest.raises(Exception, match=r"inputs\[1\]"):
        child.run_many(inputs, client=client)
    workers.start()
    out = parent.run().result(timeout=30)
    assert "inputs[1]" in out, out
    assert client.list_runs(workflow="bi-child") == []  # nothing written
