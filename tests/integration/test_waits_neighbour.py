"""The timer waker when a neighbour sharing the Redis wrote another type of
value at a shard's ``timers``: the promoter duty goes on with everything else
(the supervisor's key check names the key)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from redflow_mp import Client, Registry
from redflow_mp.codec import RunWait
from redflow_mp.ids import new_run_id, new_token
from supervisor.duties.promoter import PromoterDuty
from tests.helpers import wait_until
from tests.sharding import sharded_client, workflow_in

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def sharded(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    with sharded_client(redis_url, prefix, registry, 2) as c:
        yield c


def test_a_timers_key_of_the_wrong_type_in_one_shard_stops_no_other_shard(
    sharded: Client,
) -> None:
    broken, fine = sharded.shards
    broken.redis.set(broken.keys.timers, "not a redflow key")
    wf = workflow_in(sharded, 1)
    sleeper, _ = fine.scripts.enqueue(
        fine.run_id(new_run_id()), wf, "q", b"1", 1, 0, "", 0, "", "", 10, None
    )
    _, claimed = fine.scripts.claim(("q",), 60_000, new_token())
    assert claimed is not None and claimed.id == sleeper
    # The delayed run is enqueued after the claim: enqueued before it, a claim made
    # more than 100 ms later (a loaded machine) took the delayed run, due by then.
    now = sharded.server_time_ms()
    delayed, _ = fine.scripts.enqueue(
        fine.run_id(new_run_id()), wf, "q", b"1", 1, now + 100, "", 0, "", "", 10, None
    )
    wait = RunWait(steps=["z"], kinds=["sleep"], wake_at=now + 100)
    assert fine.scripts.suspend(sleeper, claimed.token, wait) == "suspended"
    wait_until(lambda: sharded.server_time_ms() > now + 100, timeout=5)
    # Before: WrongTypeError from shard 0's wake_timers, and shard 1 was neither
    # promoted nor woken (the schedule retried the duty every second, failing again).
    PromoterDuty(sharded, 200).tick(time.monotonic())
    status = [fine.redis.hget(fine.keys.run(r), "status") for r in (delayed, sleeper)]
    assert status == [b"queued", b"queued"]
    # the broken shard's wake-ups wait for the key to be repaired; nothing else is lost
    assert broken.redis.get(broken.keys.timers) == b"not a redflow key"
    assert broken.scripts.wake_timers(500) == (0, None, [])
