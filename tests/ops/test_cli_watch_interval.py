"""``redflow runs watch --interval S`` took any positive S: ``--interval 1e-9`` (a
typo for 1e-1, a unit mistaken) made each look of the run (its record, its step
mark, a subscribe and a read of its end) follow the last with no pause, a hot
loop of thousands of commands a second against the server for as long as the
watch ran. An interval under ``MIN_WATCH_INTERVAL`` (0.05 s) is refused."""

from __future__ import annotations

from collections.abc import Callable

import redis

from redflow_mp import Client
from tests.ops.conftest import Result


def _calls(raw: redis.Redis, command: str) -> int:
    stats = raw.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_a_watch_interval_below_the_floor_is_refused_not_looped(
    redflow: Callable[..., Result], synced: Client, raw: redis.Redis
) -> None:
    handle = synced.run_by_name("ops-parked", {"n": 1})  # nobody serves it: stays queued
    before = _calls(raw, "hgetall") + _calls(raw, "hmget")  # (a look reads the run by HMGET)
    res = redflow("runs", "watch", handle.id, "--interval", "1e-9", "--timeout", "1")
    looks = _calls(raw, "hgetall") + _calls(raw, "hmget") - before
    # 1 s at the floor is about 20 looks; the hot loop made hundreds
    assert looks <= 25, f"{looks} looks at the run in 1 s ({res})"
    assert res.code == 2, res
    assert "--interval" in res.err and "0.05" in res.err, res


def test_the_floor_itself_is_taken(
    redflow: Callable[..., Result], synced: Client, raw: redis.Redis
) -> None:
    handle = synced.run_by_name("ops-parked", {"n": 1})
    res = redflow("runs", "watch", handle.id, "--interval", "0.05", "--timeout", "0.5")
    assert res.code == 3, res  # still queued when the timeout ran out
    assert "is still queued after 0.5 s" in res.err, res
