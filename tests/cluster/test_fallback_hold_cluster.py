"""``foreign.held_after_loss`` and ``Worker._synced`` on a Redis Cluster with
``shards > 1``: their reads (a pipeline with the keyless ``TIME``) reach the run's
shard, the marker of the run's shard holds it, and a worker's own metadata gone
from the run's shard holds it."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.foreign import LOST_MARKER_MS, held_after_loss
from redflow_mp.worker import Worker
from tests.integration.test_fallback_hold import _claimed

pytestmark = pytest.mark.timeout(120)


def test_held_after_loss_on_a_cluster(redis_cluster: Any) -> None:
    reg = Registry()
    kw: dict[str, Any] = {"prefix": "fb-hold", "default": False, "shards": 3}
    client = create_client(redis_cluster.url, registry=reg, **kw)
    homes: dict[int, str] = {}
    for i in range(200):
        homes.setdefault(client.shard_of_workflow(f"mine-{i}").index, f"mine-{i}")
    assert len(homes) == 3
    for name in homes.values():

        @define_workflow(name, queue="q", registry=reg)
        def handler(ctx: Context[Any]) -> None:
            return None

    client.sync_registry(reg, app="hold-test")
    bare = create_client(redis_cluster.url, registry=Registry(), **kw)
    try:
        worker = Worker(client, queues=["default"], registry=reg)
        own = worker._synced()
        assert own == homes
        runs = {}
        for i in range(200):
            idx = client.shard_of_workflow(f"ghost-{i}").index
            if idx not in runs:
                runs[idx] = bare.run_by_name(f"ghost-{i}", None).id
        assert set(runs) == {0, 1, 2}
        assert not any(held_after_loss(client, _claimed(client, r), own, {}) for r in runs.values())
        raw = client.shards[1].redis
        raw.set(client.shards[1].keys.registry_lost, "x", px=LOST_MARKER_MS)
        raw2 = client.shards[2].redis
        raw2.delete(client.shards[2].keys.workflow(homes[2]))
        held = {i: held_after_loss(client, _claimed(client, r), own, {}) for i, r in runs.items()}
        assert held == {0: False, 1: True, 2: True}
    finally:
        bare.close()
        client.close()
