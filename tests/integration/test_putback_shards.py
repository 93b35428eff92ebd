"""A dead child's put-backs with ``shards > 1`` (``supervisor/aftermath.py``):
each goes at once to its run's shard, never held for Redis as a whole."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redflow_mp import Client, Registry
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.recovery import HeldRun
from supervisor.aftermath import Aftermath, PutBack
from supervisor.children import Helpers
from supervisor.exposition import MetricsStore
from tests.sharding import sharded_client, workflow_in

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def sharded(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    with sharded_client(redis_url, prefix, registry, 2) as c:
        yield c


def _no_helper() -> object:
    raise AssertionError("no on_failure helper is started here")


def test_a_put_back_is_not_held_when_another_shard_is_out_of_reach(
    sharded: Client, registry: Registry
) -> None:
    # The duties report Redis out of reach (as when one shard's master is down):
    # with one shard that holds the queue; with two, the run's own shard answers
    # and its put-back must go now, its crash charged (before: held until the
    # down shard came back, the run's lease lapsing to the reaper, uncharged).
    shard = sharded.shards[1]
    wf = workflow_in(sharded, 1)
    run_id, _ = shard.scripts.enqueue(
        shard.run_id(new_run_id()), wf, "q", b"1", 1, 0, "", 0, "", "", 10, None
    )
    _, claimed = shard.scripts.claim(("q",), 60_000, new_token())
    assert claimed is not None and claimed.id == run_id
    aftermath = Aftermath(
        sharded,
        Helpers(5.0),
        _no_helper,  # type: ignore[arg-type]
        MetricsStore(),
        known_down=lambda: True,
    )
    try:
        job = PutBack(
            "run",
            0,
            "was killed by SIGKILL",
            run=HeldRun(run_id, claimed.token),
            crash=True,
            max_crashes=3,
            registry=registry,
        )
        aftermath.pending.append(job)
        aftermath.work()
        assert list(aftermath.pending) == []
        fields = shard.redis.hmget(shard.keys.run(run_id), ["status", "crashCount"])
        assert fields == [b"queued", b"1"]
    finally:
        aftermath.finish(send=False)
