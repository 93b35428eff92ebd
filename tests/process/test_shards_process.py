"""``--shards 3`` under the real supervisor on one redis-server: a 1-process and a
2-process supervisor drain runs spread over the three shards (and parents whose
children run in another shard), each run executed exactly once, none lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry
from tests.helpers import texts
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(150)]

JOBS = {"shard-job-b": 0, "shard-job-c": 1, "shard-job-a": 2}


@pytest.mark.parametrize("procs", [1, 2])
def test_a_supervisor_drains_runs_spread_over_three_shards(
    supervisor: Callable[..., Supervisor],
    make_client: Callable[..., Client],
    raw: redis.Redis,
    procs: int,
) -> None:
    sup = supervisor(procs=procs, modules=["tests.process.flows_shards"], args=["--shards", "3"])
    sup.wait_workers(procs)
    client = make_client(registry=Registry(), shards=3)
    wait_until(lambda: client.get_workflow_meta("shard-parent"), message="metadata synced")
    for name, index in JOBS.items():
        assert client.shard_of_workflow(name).index == index
    handles = []
    for name in JOBS:
        handles += client.run_many_by_name(name, list(range(200)))
    parents = [client.run_by_name("shard-parent", i) for i in range(30)]
    assert len({h.id for h in handles + parents}) == 630
    assert Counter(client.shard_of_run(h.id).index for h in handles) == {0: 200, 1: 200, 2: 200}
    assert [h.result(timeout=90) for h in parents] == [i + 1 for i in range(30)]
    outs = [h.result(timeout=90) for h in handles]
    assert outs == list(range(200)) * 3
    ledger = Counter(texts(raw.lrange(f"{client.keys.tag}:ledger", 0, -1)))
    # each job once, each parent at least once (it replays after its child), each
    # child of a parent once: nothing lost, nothing run twice
    assert all(ledger[h.id] == 1 for h in handles)
    assert all(ledger[p.id] >= 1 for p in parents)
    children = [k for k in ledger if k not in {h.id for h in handles + parents}]
    assert len(children) == 30 and all(ledger[k] == 1 for k in children)
    assert {client.shard_of_run(k).index for k in children} == {2}
    done = sum(raw.zcard(s.keys.runs_status("succeeded")) for s in client.shards)
    assert done == 660
    for s in client.shards:
        for status in ("queued", "running", "suspended"):
            assert raw.zcard(s.keys.runs_status(status)) == 0
    assert sup.proc is not None and sup.proc.poll() is None
