"""``supervisor/duties/shards.py``: within a duty's tick, a server a shard's call
timed out on is not called again (its other shards raise ``ServerStalled`` at
once), other servers still are, and a refused connection marks nothing."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_mp import create_client
from supervisor.duties import Schedule
from supervisor.duties.keycheck import KeyCheckDuty
from supervisor.duties.leader import LeaderDuty
from supervisor.duties.relist import RelistDuty
from supervisor.duties.shards import ServerStalled, ServerStalls, server_of
from tests.redis_server import RedisServer


@dataclass
class _Shard:
    redis: redis.Redis


def _quick(srv: RedisServer, db: int = 0) -> _Shard:
    """A connection that gives up after 0.2 s (the client's own waits 5 s, twice)."""
    return _Shard(
        redis.Redis(port=srv.port, db=db, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    )


def test_the_shards_of_one_client_share_their_server_and_another_server_does_not(
    server: RedisServer,
) -> None:
    client = create_client(server.url, prefix="stalls", default=False, shards=4)
    other = RedisServer().start()
    try:
        assert len({server_of(shard) for shard in client.shards}) == 1
        assert server_of(_quick(server, db=0)) == server_of(_quick(server, db=3))  # one process
        assert server_of(_quick(server)) != server_of(_quick(other))
    finally:
        client.close()
        other.cleanup()


def test_a_timeout_skips_that_servers_other_shards_for_the_tick_only(server: RedisServer) -> None:
    other = RedisServer().start()
    stalls = ServerStalls()
    a, b, c = _quick(server), _quick(server, db=1), _quick(other)
    calls: list[str] = []
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(redis.TimeoutError), stalls.call(a):
            calls.append("a")
            a.redis.ping()
        with pytest.raises(ServerStalled), stalls.call(b):
            calls.append("b")  # not reached: b's server timed out this tick
        with stalls.call(c):
            calls.append("c")
            assert c.redis.ping()
        assert calls == ["a", "c"]
        first = stalls.error
        assert isinstance(first, redis.TimeoutError)
        assert isinstance(ServerStalled("x"), redis.TimeoutError)  # kept like a timeout
        stalls.clear()  # the next tick calls it again
        assert stalls.error is None
        with pytest.raises(redis.TimeoutError), stalls.call(b):
            calls.append("b")
            b.redis.ping()
        assert calls == ["a", "c", "b"]
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        other.cleanup()


def test_a_refused_connection_marks_nothing(server: RedisServer) -> None:
    stalls = ServerStalls()
    a, b = _quick(server), _quick(server, db=1)
    server.stop()  # refuses at once
    tried: list[str] = []
    for name, shard in (("a", a), ("b", b)):
        with pytest.raises(redis.ConnectionError), stalls.call(shard):
            tried.append(name)
            shard.redis.ping()
    assert tried == ["a", "b"] and stalls.error is None


def test_a_stall_of_an_earlier_tick_is_not_the_schedules_once_the_duty_returns_early(
    server: RedisServer,
) -> None:
    """A leader-only duty's tick that returns early (the lead lost or handed back)
    calls no Redis: the stall its last tick met is over. Kept, the schedule called
    the duty failed at every pass for good (Redis down, the outage line every
    minute, each pass cut short after it)."""
    client = create_client(server.url, prefix="stalls", default=False, shards=2)
    leader = LeaderDuty(client, 30_000)
    relist = RelistDuty(client, leader=leader)
    schedule = Schedule([relist])
    assert server.proc is not None
    try:
        leader.tick(0.0)
        assert leader.is_leader
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            schedule.run(0.0)  # shard 0 times out (the client's own timeouts), shard 1 skipped
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert schedule.down
        leader.resign()  # Redis back: handed back, the duty stops at once
        schedule.run(10.0)
        assert not schedule.down, "the last tick's stall kept the schedule down"
    finally:
        client.close()


def test_a_duty_that_swallowed_a_stall_is_due_again_in_a_second(server: RedisServer) -> None:
    """The key check keeps a stall's error to itself and returns its own cadence (a
    minute). Kept at that cadence, the schedule stayed down for that minute after
    Redis answered again, holding every dead child's put-back (and for good in a
    drain that waits for them: tests/process/test_putback_stall.py in CI)."""
    client = create_client(server.url, prefix="stalls2", default=False)
    keycheck = KeyCheckDuty(client, ["w"])
    schedule = Schedule([keycheck])
    assert server.proc is not None
    try:
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            schedule.run(0.0)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert schedule.down
        assert schedule.next_due() <= 1.0, schedule.next_due()
        schedule.run(2.0)
        assert not schedule.down, "the key check's stall kept the schedule down"
    finally:
        client.close()
