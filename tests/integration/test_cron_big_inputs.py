"""Crons with big inputs (default settings): listing the workflows does not hold
every input at once, and the registry sync does not carry them all in one read
and one transaction. Found by an adversarial review: 200 workflows with a 2 MiB
cron input each made ``redflow workflows`` hold 866 MB, and a sync could put
1,000 inputs of 8 MiB in one MULTI."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import redis

from redflow_mp import Client, Cron, Registry, admin, define_workflow, sync

pytestmark = pytest.mark.timeout(120)

WORKFLOWS = 20
MIB = 1024 * 1024
BLOB = "x" * MIB


def _noop(ctx: object) -> None:
    return None


def _define(registry: Registry) -> None:
    for i in range(WORKFLOWS):
        define_workflow(
            f"big-{i:02d}", queue="bq", cron=[Cron("0 0 1 1 *", input=BLOB)], registry=registry
        )(_noop)


def test_listing_workflows_does_not_hold_every_cron_input(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    _define(registry)
    client.sync_registry(registry, app="big")
    assert raw.hlen(client.keys.cron_def) == WORKFLOWS
    tracemalloc.start()
    try:
        stats = admin.workflow_stats(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [s.meta.name for s in stats] == [f"big-{i:02d}" for i in range(WORKFLOWS)]
    for s in stats:  # the schedules are all there
        assert [(c.expression, c.timezone) for c in s.meta.cron] == [("0 0 1 1 *", "UTC")]
        assert [c.expression for c in s.cron] == ["0 0 1 1 *"]
        assert s.cron[0].next_fire_at
    # 20 inputs of 1 MiB are 20 MiB in cronJson and 20 MiB in cron:def
    assert peak < 12 * MIB, f"listing 20 workflows held {peak / MIB:.1f} MiB at its peak"


def test_listing_keeps_small_cron_inputs(client: Client, registry: Registry) -> None:
    define_workflow("tiny", cron=[Cron("0 3 * * *", input={"n": 1}, id="t")], registry=registry)(
        _noop
    )
    client.sync_registry(registry, app="big")
    (s,) = admin.workflow_stats(client)
    assert s.meta.cron == [Cron("0 3 * * *", input={"n": 1}, id="t")]
    assert s.meta == client.get_workflow_meta("tiny")


def test_sync_chunks_are_bounded_by_the_bytes_of_their_inputs(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _define(registry)
    carried: list[int] = []
    real = sync._sync_workflows

    def spy(runs: Any, wfs: list[Any], app: str, now: int) -> None:
        carried.append(sum(len(c.input) for wf in wfs for c in wf.cron))
        real(runs, wfs, app, now)

    monkeypatch.setattr(sync, "_sync_workflows", spy)
    client.sync_registry(registry, app="big")
    assert raw.hlen(client.keys.cron_def) == WORKFLOWS
    assert sum(carried) == WORKFLOWS * MIB
    limit = 16 * MIB
    assert max(carried) <= limit, f"one read and transaction carried {max(carried) // MIB} MiB"


def test_an_oversized_workflow_is_a_chunk_of_its_own(registry: Registry) -> None:
    big = "y" * (5 * MIB)
    for i in range(4):
        define_workflow(f"huge-{i}", cron=[Cron(f"{i} 0 * * *", input=big)], registry=registry)(
            _noop
        )
    define_workflow("small", cron=[Cron("0 1 * * *", input=1)], registry=registry)(_noop)
    chunks = list(sync._weighed_chunks(registry.list()))
    assert [[wf.name for wf in c] for c in chunks] == [
        ["huge-0", "huge-1", "huge-2"],
        ["huge-3", "small"],
    ]
