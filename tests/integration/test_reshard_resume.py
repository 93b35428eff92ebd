"""``redflow migrate --shards`` killed at a chosen point and run again: nothing
lost or duplicated (the resumability promised in ``redflow_mp/reshard.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from redflow_mp import Client, Registry, define_workflow
from redflow_mp.errors import ShardsMismatchError
from redflow_mp.ids import new_run_id
from redflow_mp.shardmeta import check_shards
from redflow_mp.shardset import Shard
from tests.integration.test_shards_ops import _finished, _reshard
from tests.sharding import workflow_in


def _enqueue_keyed(shard: Shard, workflow: str, key: str) -> tuple[str, bool]:
    run_id, created = shard.scripts.enqueue(
        shard.run_id(new_run_id()), workflow, "q", b"1", 1, 0, key, 60_000, "", "", None, None
    )
    return str(run_id), bool(created)


def test_migrate_killed_after_moving_an_idempotency_key_keeps_its_dedupe(
    make_client: Callable[..., Client], registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 -> 3: a workflow leaves shard 0 with its idempotency key while its
    finished run stays there, so the key gets a ``run:<id>`` stub next to it. The
    key was moved (copied, source deleted) before its stub was written: killed in
    between, the rerun found no key at the source and wrote no stub, and the same
    key then enqueued a second run (``assert not True``: created again)."""
    import redflow_mp.reshard as rs

    one = make_client()
    three = make_client(shards=3)
    name = workflow_in(three, 2, "idem")
    define_workflow(name, queue="q", registry=registry)(lambda ctx: None)
    one.sync_registry(registry, app="t")
    check_shards(one)
    first = _finished(one.shards[0], name, key="the-key")
    real = rs._stub
    calls = {"n": 0}

    def dying(*args: Any) -> None:
        calls["n"] += 1
        raise KeyboardInterrupt  # killed once the key is at its target, before its stub

    monkeypatch.setattr(rs, "_stub", dying)
    with pytest.raises(KeyboardInterrupt):
        _reshard(one, three)
    assert calls["n"] == 1
    with pytest.raises(ShardsMismatchError, match="interrupted"):
        check_shards(three)
    monkeypatch.setattr(rs, "_stub", real)
    _reshard(one, three)
    check_shards(three)
    again, created = _enqueue_keyed(three.shards[2], name, "the-key")
    assert not created
    assert again == first
