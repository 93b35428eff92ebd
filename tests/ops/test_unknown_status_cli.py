"""``redflow runs retry`` / ``runs resume`` / ``runs show`` of a run whose stored
``status`` this version does not know: shown as stored, never retried (it was
shown as ``failed`` and retried as a new run)."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from redflow_mp import Client
from tests.ops.conftest import Result, Runs


def test_runs_retry_refuses_a_status_it_does_not_know(
    redflow: Callable[..., Result], runs: Runs, raw: redis.Redis, client: Client
) -> None:
    raw.hset(client.keys.run(runs.failed), "status", "paused")  # a newer version's
    shown = json.loads(redflow("runs", "show", runs.failed, "--json").out)
    assert shown["run"]["status"] == "paused", shown  # before: failed
    res = redflow("runs", "retry", runs.failed)
    # before: 0, "retried run ... as run ..."
    assert res.code == 1 and "is paused; only failed or canceled runs" in res.err, res
    res = redflow("runs", "resume", runs.failed)
    assert res.code == 1 and "paused" in res.err, res
    assert raw.hget(client.keys.run(runs.failed), "status") == b"paused"
