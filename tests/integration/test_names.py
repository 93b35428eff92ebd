"""Hostile names (spaces, colons, braces, unicode) work end to end; 10 KB names
are rejected with a clear error; names never leave the prefix's hash slot."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, run_keys

pytestmark = pytest.mark.timeout(60)

HOSTILE = [
    "with space",
    "co:lon:s",
    "br{ace}s",
    "}{",
    "ünïcødé 名前 🚀",
    "q:x:ready",
    "*?[glob]",
    "tab\tand\nnewline",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_work_end_to_end(
    raw: redis.Redis,
    client: Client,
    prefix: str,
    registry: Registry,
    workers: WorkerPool,
    name: str,
) -> None:
    @define_workflow(name, queue=name, registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        out = ctx.step.run(name, lambda: {"name": name})
        return [out, ctx.run.workflow, ctx.run.queue]

    client.sync_registry(registry, app=name)
    workers.start()
    handle = flow.run({"k": name}, idempotency_key=name)
    assert handle.result(timeout=10) == [{"name": name}, name, name]
    assert flow.run(idempotency_key=name).id == handle.id
    assert raw.get(client.keys.idempotency(name, name)) == handle.id.encode()
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == [name]
    assert [r.id for r in client.list_runs(workflow=name)] == [handle.id]
    meta = client.get_workflow_meta(name)
    assert meta is not None and meta.name == name and meta.app == name
    # every key naming the hostile name stays under the prefix's hash tag, so
    # braces in a name can never move a key to another Cluster slot
    tag = "{" + prefix + "}:"
    named = [k for k in run_keys(raw, "*") if name in k and prefix in k]
    assert len(named) >= 3  # workflow, workflow-runs, idempo (queue lists are empty now)
    assert all(k.startswith(tag) for k in named), named


@pytest.mark.parametrize("what", ["workflow", "queue", "step", "idempotency_key", "app"])
def test_ten_kilobyte_names_are_rejected_clearly(
    client: Client, registry: Registry, what: str
) -> None:
    huge = "n" * 10_240
    if what == "workflow":
        with pytest.raises(ValueError, match="limit is 512"):
            client.run_by_name(huge)
    elif what == "queue":
        with pytest.raises(ValueError, match="limit is 512"):
            define_workflow("x", queue=huge, registry=registry)
    elif what == "step":
        from redflow_mp.options import check_name

        with pytest.raises(ValueError, match="step name is 10240 characters"):
            check_name(huge, "step name")
    elif what == "idempotency_key":
        define_workflow("x", registry=registry)(lambda ctx: None)
        with pytest.raises(ValueError, match="limit is 4096"):
            client.run_by_name("x", idempotency_key=huge)
    else:
        with pytest.raises(ValueError, match="limit"):
            client.sync_registry(registry, app=huge)
