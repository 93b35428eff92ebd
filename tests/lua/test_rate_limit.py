"""The rate gate in the claim (take() in _lib.lua): a sliding window over a
workflow's starts, from its synced ``rateLimit``; a run over the limit is
scheduled at its reserved start (no spinning), comes back through the promoter
and starts on its reservation; the claim goes on to the next candidate and
rings when it had to stop early."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.helpers import status_of, wait_until

pytestmark = pytest.mark.timeout(30)


def _claim(client: Client, *queues: str) -> str | None:
    _, got = client.scripts.claim(tuple(queues or ("q",)), 60_000, new_token())
    return got.id if got is not None else None


def test_over_the_limit_a_run_is_scheduled_at_its_reserved_start(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "3/h"})
    ids = [enq() for _ in range(6)]
    other = enq("free")  # another workflow on the same queue: no limit
    t0 = client.server_time_ms()
    assert [_claim(client) for _ in range(3)] == ids[:3]
    # the 4th, 5th and 6th are over the limit: reserved, scheduled; the claim goes
    # on to the next candidate (the run of the other workflow)
    assert _claim(client) == other
    assert _claim(client) is None
    t1 = client.server_time_ms()
    logged: Any = raw.zrange(k.rate("wf"), 0, -1, withscores=True)
    starts = [float(score) for _, score in logged]
    assert len(starts) == 6
    for i, rid in enumerate(ids[3:]):
        assert status_of(raw, client, rid) == "scheduled"
        slot = int(raw.hget(k.run(rid), "rateSlot") or 0)
        # one hour after the start it replaces in the window
        assert slot == int(starts[i]) + 3_600_000
        assert t0 + 3_600_000 <= slot <= t1 + 3_600_000
        assert raw.zscore(k.q_scheduled("q"), rid) == slot
        assert int(raw.hget(k.run(rid), "availableAt") or 0) == slot
        assert raw.zscore(k.runs_status("scheduled"), rid) is not None
        assert raw.zscore(k.runs_status("queued"), rid) is None
    assert raw.zscore(k.due_queues, "q") == int(raw.hget(k.run(ids[3]), "rateSlot") or 0)
    assert raw.zcard(k.q_ready("q")) == 0
    assert 0 < raw.pttl(k.rate("wf")) <= 3 * 3_600_000 + 1_000


def _back_now(raw: redis.Redis, client: Client, rid: str) -> None:
    """As if `rid`'s reserved start had come: the promoter brings it back now."""
    k = client.keys
    raw.zadd(k.q_scheduled("q"), {rid: 1})
    raw.zadd(k.due_queues, {"q": 1})
    promoted, _, _ = client.scripts.promote(100)
    assert promoted == 1 and status_of(raw, client, rid) == "queued"


def _plan(raw: redis.Redis, client: Client, wf: str = "wf") -> dict[str, int]:
    """The plan (rate:<wf>): run id -> its logged start (past or reserved)."""
    logged: Any = raw.zrange(client.keys.rate(wf), 0, -1, withscores=True)
    return {m.decode().split(":")[0]: int(score) for m, score in logged}


def _started(raw: redis.Redis, client: Client, wf: str = "wf") -> dict[str, int]:
    """The actual starts (rate-started:<wf>): run id -> when it started."""
    logged: Any = raw.zrange(client.keys.rate_started(wf), 0, -1, withscores=True)
    return {m.decode().split(":")[0]: int(score) for m, score in logged}


def test_a_late_reserved_run_starts_when_the_actual_starts_leave_room(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    first, second, third = enq(), enq(), enq()
    assert _claim(client) == first
    assert _claim(client) is None  # second and third reserved (in an hour, in two)
    reserved = int(raw.hget(k.run(second), "rateSlot") or 0)
    assert _plan(raw, client)[second] == reserved
    assert list(_started(raw, client)) == [first]
    # as if the hour had passed: the first start left the window
    raw.delete(k.rate_started("wf"))
    raw.zremrangebyscore(k.rate("wf"), "-inf", _plan(raw, client)[first])
    _back_now(raw, client, second)
    assert _claim(client) == second
    started = int(raw.hget(k.run(second), "startedAt") or 0)
    # logged at its actual start, in both logs: not at its reservation
    assert _plan(raw, client)[second] == started
    assert _started(raw, client) == {second: started}
    assert raw.hget(k.run(second), "rateSlot") is None
    assert status_of(raw, client, third) == "scheduled"


def test_a_late_reserved_run_over_the_actual_starts_is_reserved_again(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # The defect: a reserved run that came back started on its reservation without
    # a check, so starts made late on earlier reservations and starts on later
    # ones bunched in one window. Here the window of actual starts is full (the
    # run comes back while the start it replaces is still within the hour).
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "2/h"})
    a, b, c, d = enq(), enq(), enq(), enq()
    assert [_claim(client), _claim(client)] == [a, b]
    assert _claim(client) is None  # c and d reserved
    assert status_of(raw, client, d) == "scheduled"
    started = _started(raw, client)
    assert sorted(started) == sorted([a, b])
    _back_now(raw, client, c)
    assert _claim(client) is None  # two starts within the hour: not a third
    assert status_of(raw, client, c) == "scheduled"
    slot = int(raw.hget(k.run(c), "rateSlot") or 0)
    # again at the earliest start the actual starts allow (an hour after the
    # first of them), not behind the runs reserved after it
    assert slot == min(started.values()) + 3_600_000
    assert raw.zscore(k.q_scheduled("q"), c) == slot
    assert _plan(raw, client)[c] == slot  # its old entry replaced, not kept
    assert c not in _started(raw, client)
    assert raw.hget(k.run(c), "startedAt") is None


@pytest.mark.parametrize(("new_rate", "starts"), [("3/h", True), ("", True), ("1/h", False)])
def test_a_late_reserved_run_is_checked_under_the_current_limit(
    raw: redis.Redis, client: Client, enq: Callable[..., str], new_rate: str, starts: bool
) -> None:
    # A sync changed the limit (replan_rate puts the reserved runs back; this is
    # a run that came back before it did): raised or removed, it starts; lowered
    # under the starts already made, it is reserved again.
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "2/h"})
    a, b, c = enq(), enq(), enq()
    assert [_claim(client), _claim(client), _claim(client)] == [a, b, None]
    raw.hset(k.workflow("wf"), "rateLimit", new_rate)
    _back_now(raw, client, c)
    if starts:
        assert _claim(client) == c
    else:
        assert _claim(client) is None
        slot = int(raw.hget(k.run(c), "rateSlot") or 0)
        # one start an hour: an hour after the later of the two
        assert slot == max(_started(raw, client).values()) + 3_600_000


def test_late_runs_back_together_on_a_full_window_wait_in_turn(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # Runs reserved again never take a start that runs due or reserved ahead of
    # them count on: of two runs back on one free start, the second waits a
    # period more (both on the same start, they would come back together and
    # one of them fail again, and again, as a herd). (Brought back early here:
    # the second, with no start left in the actual window, goes to the plan's
    # end, after d.)
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    a, b, c, d = enq(), enq(), enq(), enq()
    assert [_claim(client), _claim(client)] == [a, None]  # b, c, d reserved
    started_a = _started(raw, client)[a]
    for rid in (b, c):
        _back_now(raw, client, rid)
    assert _claim(client) is None and _claim(client) is None
    slots = [int(raw.hget(k.run(rid), "rateSlot") or 0) for rid in (b, c)]
    assert slots[0] == started_a + 3_600_000 and slots[1] >= slots[0] + 3_600_000, slots
    assert status_of(raw, client, d) == "scheduled"


def test_no_limit_without_a_synced_rate_or_with_an_unreadable_one(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [enq(max_concurrency=10) for _ in range(5)]
    assert [_claim(client) for _ in range(5)] == ids
    raw.hset(k.workflow("wf"), mapping={"maxConcurrency": 10, "rateLimit": "lots"})
    more = [enq() for _ in range(3)]
    assert [_claim(client) for _ in range(3)] == more
    assert not raw.exists(k.rate("wf"))


def test_a_claim_that_skipped_its_fill_rings_so_a_worker_goes_on(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    for _ in range(40):
        enq()
    assert _claim(client) is not None
    raw.delete(k.q_bell("q"))
    assert _claim(client) is None  # 32 reserved in one call, 7 left
    assert raw.zcard(k.q_ready("q")) == 7 and raw.zcard(k.q_scheduled("q")) == 32
    assert raw.llen(k.q_bell("q")) == 1  # rung: the next claim goes on at once
    raw.delete(k.q_bell("q"))
    assert _claim(client, "q", "other") is None
    assert raw.zcard(k.q_ready("q")) == 0 and raw.llen(k.q_bell("q")) == 0


def _claim_tok(client: Client) -> tuple[str | None, str]:
    token = new_token()
    _, got = client.scripts.claim(("q",), 60_000, token)
    return (got.id if got is not None else None), token


def _promote_until_queued(raw: redis.Redis, client: Client, rid: str) -> None:
    def back() -> bool:
        client.scripts.promote(100)
        return status_of(raw, client, rid) == "queued"

    wait_until(back, 10, message=f"{rid} back from its reservation")


def test_a_reserved_run_parked_behind_max_concurrency_takes_a_new_start_when_released(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # The default max_concurrency (1) with a rate limit: runs reserved while the
    # slot was free come back while the run before them still runs, and park.
    # Released later, one after another as each finishes, they used to start on
    # their old reservations, back to back: any number of starts in one period.
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 1, "rateLimit": "1/s"})
    a, b, c, d = enq(), enq(), enq(), enq()
    got, tok_a = _claim_tok(client)
    assert got == a
    assert _claim_tok(client)[0] is None  # b, c, d parked behind a
    assert client.scripts.finalize(a, tok_a, "succeeded", b'"ok"') == "succeeded"
    assert _claim_tok(client)[0] is None  # b, released, is reserved a second after a
    for rid in (c, d):  # the reaper gives the free slot to c, then d: reserved too
        client.scripts.reap(100)
        assert _claim_tok(client)[0] is None
        assert status_of(raw, client, rid) == "scheduled"
    _promote_until_queued(raw, client, b)
    got, tok_b = _claim_tok(client)
    assert got == b  # b starts on its reservation and keeps running
    for rid in (c, d):  # their reservations come while b runs: parked
        _promote_until_queued(raw, client, rid)
        assert _claim_tok(client)[0] is None
        assert raw.zscore(k.wf_waiting("wf"), rid) is not None
    assert client.scripts.finalize(b, tok_b, "succeeded", b'"ok"') == "succeeded"
    got, tok_c = _claim_tok(client)
    assert got == c
    started_c = int(raw.hget(k.run(c), "attemptStartedAt") or 0)
    assert client.scripts.finalize(c, tok_c, "succeeded", b'"ok"') == "succeeded"
    # d, released by c's finish, must not start within a second of c's start
    got, _ = _claim_tok(client)
    assert got is None, "d started right after c: 2 starts within one period of 1/s"
    assert status_of(raw, client, d) == "scheduled"
    assert int(raw.hget(k.run(d), "rateSlot") or 0) >= started_c + 1_000
    # the log holds each start or reservation once (no stale entries of c or d)
    logged: Any = raw.zrange(k.rate("wf"), 0, -1)
    members = [m.decode() for m in logged]
    assert sorted(m.split(":")[0] for m in members if m.split(":")[0] in (c, d)) == sorted([c, d])


def test_replan_moves_only_runs_scheduled_on_their_reservation(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    first, second, third, fourth = enq(), enq(), enq(), enq()
    assert _claim(client) == first
    assert _claim(client) is None  # second, third, fourth reserved: 1, 2, 3 hours on
    assert client.scripts.cancel(fourth, "") == "canceled"  # its reservation stays logged
    # third was moved by something else meanwhile (as if promoted): left alone
    raw.hset(k.run(third), "status", "queued")
    moved, more = client.scripts.replan_rate("wf", batch=2)
    assert (moved, more) == (1, True)
    assert client.scripts.replan_rate("wf", batch=2) == (0, False)
    assert status_of(raw, client, second) == "queued"
    assert raw.zscore(k.q_scheduled("q"), second) is None
    assert raw.zscore(k.q_ready("q"), second) is not None
    assert raw.hget(k.run(second), "rateSlot") is None
    assert raw.zscore(k.runs_status("queued"), second) is not None
    assert raw.zscore(k.runs_status("scheduled"), second) is None
    # the past start stays in the window, the reservations go
    logged: Any = raw.zrange(k.rate("wf"), 0, -1)
    assert [m.decode().split(":")[0] for m in logged] == [first]
    raw.hset(k.workflow("wf"), "rateLimit", "")
    assert _claim(client) == second


def test_starts_logged_at_a_clock_that_was_ahead_do_not_stop_the_workflow(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The Redis clock ran a day ahead while a "3/h" workflow started 3 runs (and
    reserved starts for 2 more), then went back (NTP, a failover to a server
    whose clock is behind): its logs held starts a day ahead of the clock, which
    filled the window until the real time caught up, and every new run was
    reserved a day ahead. Now a claim that finds a start logged after now drops
    the entries logged after now, and the run starts."""
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "3/h"})
    ahead = client.server_time_ms() + 86_400_000
    for i in range(3):
        raw.zadd(k.rate("wf"), {f"X{i}:{ahead}:{ahead}": ahead})
        raw.zadd(k.rate_started("wf"), {f"X{i}:{ahead}": ahead})
    for i in range(2):
        slot = ahead + 3_600_000
        raw.zadd(k.rate("wf"), {f"R{i}:{ahead}:{slot}": slot})
    rid = enq()
    got = _claim(client)
    reserved = raw.hget(k.run(rid), "rateSlot")
    assert got == rid, (
        f"not started: reserved {(int(reserved or 0) - client.server_time_ms()) / 1000:.0f} s ahead"
    )
    now = client.server_time_ms()
    assert list(_started(raw, client).values()) == [pytest.approx(now, abs=5_000)]
    assert list(_plan(raw, client)) == [rid]


def test_a_clock_a_few_ms_behind_does_not_let_a_start_past_the_limit(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A "1/h" workflow started a run; the Redis clock then read 500 ms less (a
    failover to a replica whose clock is 500 ms behind, an NTP step): its start is
    logged 500 ms after now. Dropping every entry logged after now (5dc0f09) let
    the next run start at once, a second start in the hour of a "1/h" limit. A
    jump back of under a second leaves the logs alone (the next start waits up
    to that much longer), a larger one drops the entries as before."""
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    rid = enq()
    ahead = client.server_time_ms() + 500
    raw.zadd(k.rate("wf"), {f"X0:{ahead}:{ahead}": ahead})
    raw.zadd(k.rate_started("wf"), {f"X0:{ahead}": ahead})
    got = _claim(client)
    assert got != rid, "a second start within the hour of a 1/h limit"
    assert int(raw.hget(k.run(rid), "rateSlot") or 0) == ahead + 3_600_000
