"""claim_run's steady state (finish the last run, claim the next, one call) in
commands: the terminal finish's lease check is the ZREM of its `leases` entry (no
ZSCORE, no second ZREM; Redis 7 only), and one EXISTS asks for a parked run of the
workflow and a parent waiting on the run at once (docs/benchmarks.md, "Claim and finish, stop
38"). Counted, not timed: INFO commandstats of the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.claimed import Claimed, Finish
from redflow_mp.ids import new_token
from tests.helpers import command_counts, status_of

pytestmark = pytest.mark.timeout(30)

#: The commands of one steady-state call inside the script (EVALSHA/FCALL left out).
STEADY = {
    "time": 1,
    # the finish: its run's fields, the lease entry (the check), the run hash, the
    # status indexes, the slot, parked runs / waiting parents, the notification
    "hmget": 3,
    "zrem": 3,
    "hset": 2,
    "srem": 1,
    "exists": 1,
    "zadd": 3,
    "publish": 1,
    # the claim: the head, the slot and the workflow's limit, the lease, the run
    "zpopmin": 1,
    "sadd": 1,
    "scard": 1,
}


def test_a_steady_state_call_makes_eighteen_commands(
    raw: Any, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    expected = dict(STEADY)
    if int(str(raw.info("server")["redis_version"]).split(".")[0]) < 7:
        expected["zscore"] = 1  # Redis 6.2: the check stays a ZSCORE (lease_check in _lib.lua)
    if isinstance(raw, redis.RedisCluster):
        expected["type"] = 1  # a cluster's scripts start with the slot probe (luafiles.SLOT_PROBE)
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "queue": "q", "maxConcurrency": 1000})
    ids = [enq(max_concurrency=1000) for _ in range(4)]
    token = new_token()
    _, claimed = client.scripts.claim(("q",), 60_000, token)
    assert claimed is not None and claimed.id == ids[0]
    for i in range(1, 4):
        prev, token = claimed, new_token()
        finish = Finish("succeeded", prev.id, prev.token, b"1")
        got: list[tuple[str, Claimed | None]] = []

        def steady(token: str = token, finish: Finish = finish, got: list[Any] = got) -> None:
            got.append(client.scripts.claim(("q",), 60_000, token, finish))

        counts = command_counts(raw, steady)
        finished, claimed = got[0]
        assert finished == "succeeded"
        assert claimed is not None and claimed.id == ids[i]
        assert {c: n for c, n in counts.items() if c != "hello"} == expected
        assert status_of(raw, client, prev.id) == "succeeded"
        assert raw.zscore(k.leases, prev.id) is None
        assert raw.sismember(k.wf_running("wf"), prev.id) == 0
        assert raw.zscore(k.leases, claimed.id) is not None


def test_a_finish_whose_lease_entry_is_gone_changes_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The token still names the run but the reaper took its `leases` entry: the
    ZREM that is the check removes nothing and the finish is refused, as before."""
    k = client.keys
    run_id = enq()
    token = new_token()
    _, claimed = client.scripts.claim(("q",), 60_000, token)
    assert claimed is not None
    raw.zrem(k.leases, run_id)
    finished, again = client.scripts.claim(("q",), 60_000, "", Finish("succeeded", run_id, token))
    assert (finished, again) == ("lease-lost", None)
    assert status_of(raw, client, run_id) == "running"
    assert raw.hget(k.run(run_id), "finishedAt") is None
