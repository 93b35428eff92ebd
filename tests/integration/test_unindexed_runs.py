"""Runs that finished while their status index held another type of value (a
neighbour's key, a typo) are listed by status again once the key is fixed.

Such a finish cannot add the run to ``runs:status:<status>``; it records the run
in ``runs:unindexed`` (retention sweeps it from there). The listing by status
(``Client.list_runs(status=...)``, ``redflow runs list --status``) reads the
index only, so those runs were missing from it for good, even after the key was
deleted. The key check duty (every supervisor, once a minute) now puts them
back into their index once it is a sorted set again (or gone)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunFailedError, define_workflow
from redflow_mp.maintenance import reindex_unindexed
from supervisor.duties.keycheck import KeyCheckDuty
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)

_JUNK = "not a redflow key"


def test_runs_finished_while_their_status_index_was_broken_are_listed_once_it_is_fixed(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("ok", registry=registry)
    def ok(ctx: Context[Any]) -> int:
        return 1

    @define_workflow("bad", registry=registry)
    def bad(ctx: Context[Any]) -> int:
        raise ValueError("no")

    k = client.keys
    raw.set(k.runs_status("succeeded"), _JUNK)
    raw.set(k.runs_status("failed"), _JUNK)
    workers.start()
    good = ok.run(None, client=client)
    assert good.result(timeout=10) == 1
    failing = bad.run(None, client=client)
    with pytest.raises(RunFailedError):
        failing.result(timeout=10)
    assert raw.zscore(k.runs_unindexed, good.id) is not None
    assert raw.zscore(k.runs_unindexed, failing.id) is not None

    # One key is fixed (deleted), the other still holds the neighbour's value.
    raw.delete(k.runs_status("succeeded"))
    duty = KeyCheckDuty(client, ["ok", "bad"])
    duty.tick(0.0)
    listed = [r.id for r in client.list_runs(status="succeeded")]
    assert listed == [good.id], f"runs listed as succeeded: {listed}"
    assert raw.zscore(k.runs_unindexed, good.id) is None
    assert raw.zscore(k.runs_unindexed, failing.id) is not None  # its index is still broken
    assert k.runs_status("failed") in duty.found

    raw.delete(k.runs_status("failed"))
    duty.tick(60.0)
    assert [r.id for r in client.list_runs(status="failed")] == [failing.id]
    assert not raw.exists(k.runs_unindexed)
    assert [r.id for r in client.list_runs(workflow="ok", status="succeeded")] == [good.id]


def test_reindexing_passes_over_the_runs_whose_index_is_still_broken(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A batch of runs whose index is still broken, in front of one whose index
    is fixed: the latter is put back all the same."""

    @define_workflow("mixed", registry=registry)
    def mixed(ctx: Context[Any]) -> int:
        if ctx.input:
            raise ValueError("no")
        return 1

    k = client.keys
    raw.set(k.runs_status("succeeded"), _JUNK)
    raw.set(k.runs_status("failed"), _JUNK)
    workers.start()
    failed = []
    for _ in range(3):
        h = mixed.run(True, client=client)
        with pytest.raises(RunFailedError):
            h.result(timeout=10)
        failed.append(h.id)
    good = mixed.run(False, client=client)
    assert good.result(timeout=10) == 1
    raw.delete(k.runs_status("succeeded"))
    assert reindex_unindexed(client, batch=2) == 1
    assert [r.id for r in client.list_runs(status="succeeded")] == [good.id]
    assert raw.zcard(k.runs_unindexed) == 3
