"""A worker serving many queues: while it is idle, the claim that follows each
wait that timed out (a safety net for a lost wake-up) costs Redis O(queues)
(1,000 queues: 262 us, against 9 us to ask whether any ready set exists), so it
is made only when a ready set holds a run; a run made ready without a bell is
still claimed at the next timeout."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)

_SCRIPT_CALLS = ("evalsha", "eval", "fcall")


def _noop(ctx: Context[Any]) -> None:
    return None


def _calls(raw: Any, *commands: str) -> int:
    """Calls of ``commands`` since the last reset (every node of a cluster, summed)."""
    if isinstance(raw, redis.RedisCluster):
        per_node = raw.info("commandstats", target_nodes=redis.RedisCluster.ALL_NODES)
        tables = list(per_node.values())
    else:
        tables = [raw.info("commandstats")]
    return sum(int(t.get(f"cmdstat_{c}", {}).get("calls", 0)) for t in tables for c in commands)


def _reset(raw: Any) -> None:
    if isinstance(raw, redis.RedisCluster):
        raw.config_resetstat(target_nodes=redis.RedisCluster.ALL_NODES)
    else:
        raw.config_resetstat()


def test_an_idle_worker_of_1000_queues_claims_only_when_a_run_is_ready(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    wf = define_workflow("late", queue="q-700", registry=registry)(_noop)
    handle = wf.run({}, client=client, run_at=time.time() + 3600)  # scheduled: no bell
    queues = [f"q-{i}" for i in range(1000)]
    workers.start(queues=queues, maintenance=False, block_timeout=0.05)
    _reset(raw)
    wait_until(lambda: _calls(raw, "blpop") >= 1)  # its first claim is done, it waits
    _reset(raw)
    wait_until(lambda: _calls(raw, "blpop") >= 5)
    claims = _calls(raw, *_SCRIPT_CALLS)
    assert claims == 0, f"{claims} claims over 1,000 queues in 5 idle waits"

    # A run made ready without a bell (a lost wake-up): the next timeout finds it.
    k, run_id = client.keys, handle.id
    now = client.server_time_ms()
    with raw.pipeline(transaction=True) as pipe:
        pipe.zrem(k.q_scheduled("q-700"), run_id)
        pipe.zadd(k.q_ready("q-700"), {run_id: 9 * 2**44 + now})
        pipe.hset(k.run(run_id), "status", "queued")
        pipe.zrem(k.runs_status("scheduled"), run_id)
        pipe.zadd(k.runs_status("queued"), {run_id: now})
        pipe.execute()
    assert handle.result(timeout=10) is None
