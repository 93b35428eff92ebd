"""``on-failure-due``: the failing finish records a hook as due, atomically with
the failure, for the workflows its caller names (``finalize_run.lua``); a
takeover past the deadline is atomic and bounded (``take_hooks.lua``);
retention removes the entry of a run it deletes (``sweep_runs.lua``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.hookdue import HOOK_GRACE_MS, MAX_TAKEOVERS, done, take_due
from redflow_mp.ids import new_token
from redflow_mp.maintenance import stores
from tests.helpers import cpu_ms_of

pytestmark = pytest.mark.timeout(30)

_ERR = b'{"type":"E","message":"m","retryable":false}'


def _claim(client: Client, rid: str, queue: str = "q") -> str:
    tok = new_token()
    _, got = client.scripts.claim((queue,), 5_000, tok)
    assert got is not None and got.id == rid
    return tok


def _failed(client: Client, enq: Callable[..., str], workflow: str, hooked: bool = True) -> str:
    return _failed_tok(client, enq, workflow, hooked)[0]


def _failed_tok(
    client: Client, enq: Callable[..., str], workflow: str, hooked: bool = True
) -> tuple[str, str]:
    rid = enq(workflow=workflow)
    tok = _claim(client, rid)
    names = (workflow,) if hooked else ()
    assert client.scripts.finalize(rid, tok, "failed", _ERR, 0, names) == "failed"
    return rid, tok


def _past_deadline(raw: redis.Redis, client: Client, *ids: str) -> None:
    """Age the entries: their deadline passed (a hook whose process died)."""
    raw.zadd(client.keys.on_failure_due, dict.fromkeys(ids, 1))


def test_the_failing_finish_records_the_hook_due_only_for_the_named_workflows(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    before = client.server_time_ms()
    hooked, hooked_tok = _failed_tok(client, enq, "hooked")
    plain = _failed(client, enq, "plain", hooked=False)
    other = enq(workflow="other")
    tok = _claim(client, other)
    # named workflows that are not the run's: nothing due
    assert client.scripts.finalize(other, tok, "failed", _ERR, 0, ("hooked",)) == "failed"
    score = raw.zscore(k.on_failure_due, hooked)
    assert score is not None and before + HOOK_GRACE_MS <= score
    assert score <= client.server_time_ms() + HOOK_GRACE_MS
    assert raw.zscore(k.on_failure_due, plain) is None
    assert raw.zscore(k.on_failure_due, other) is None
    # a resend of the applied finish (a lost reply) changes nothing, before or
    # after the hook returned (its entry removed: not due again)
    again = client.scripts.finalize(hooked, hooked_tok, "failed", _ERR, 0, ("hooked",))
    assert again == "failed"
    assert raw.zrange(k.on_failure_due, 0, -1, withscores=True) == [(hooked.encode(), score)]
    done(client, hooked)
    assert client.scripts.finalize(hooked, hooked_tok, "failed", _ERR, 0, ("hooked",)) == "failed"
    assert raw.zcard(k.on_failure_due) == 0


def test_only_a_failure_for_good_is_recorded(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    retried = enq(workflow="hooked", max_attempts=3)
    tok = _claim(client, retried)
    assert client.scripts.finalize(retried, tok, "retry", _ERR, 0, ("hooked",)) == "queued"
    tok = _claim(client, retried)
    assert client.scripts.finalize(retried, tok, "succeeded", b"1", 0, ("hooked",)) == "succeeded"
    # a crash over the cap fails the run: recorded (the supervisor names its hooks)
    crashed = enq(workflow="hooked")
    tok = _claim(client, crashed)
    status = client.scripts.finalize(crashed, tok, "crash", "worker killed", 1, ("hooked",))
    assert status == "failed"
    assert raw.zrange(k.on_failure_due, 0, -1) == [crashed.encode()]


def test_a_takeover_is_atomic_between_two_takers_and_rescored(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [_failed(client, enq, "hooked") for _ in range(3)]
    store = stores(client)[0]
    assert take_due(store, ["hooked"]) == (0, [])  # not due before the deadline
    _past_deadline(raw, client, *ids)
    before = client.server_time_ms()
    rank, first = take_due(store, ["hooked"])
    rank2, second = take_due(store, ["hooked"])  # the other supervisor, just after
    assert (rank, rank2) == (0, 0)
    assert sorted(first) == sorted((rid, "hooked") for rid in ids)
    assert second == []
    for rid in ids:
        score = raw.zscore(k.on_failure_due, rid)
        assert score is not None and score >= before + HOOK_GRACE_MS


def test_a_takeover_is_bounded_and_skips_workflows_it_does_not_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    theirs = [_failed(client, enq, "theirs") for _ in range(3)]
    mine = [_failed(client, enq, "mine") for _ in range(5)]
    _past_deadline(raw, client, *theirs)
    raw.zadd(k.on_failure_due, dict.fromkeys(mine, 2))  # due after theirs
    store = stores(client)[0]
    # reads 3 due entries (all theirs): none taken, the cursor moves past them
    rank, taken = take_due(store, ["mine"], batch=2, scan=3)
    assert (rank, taken) == (3, [])
    rank, taken = take_due(store, ["mine"], rank, batch=2, scan=3)
    assert rank == 3 and len(taken) == 2  # at most `batch` a call
    rank, taken = take_due(store, ["mine"], rank, batch=2, scan=3)
    assert rank == 3 and len(taken) == 2
    rank, taken = take_due(store, ["mine"], rank, batch=2, scan=3)
    assert rank == 0 and len(taken) == 1  # read to the end: the next pass starts over
    assert {rid for rid, _ in taken} <= set(mine)
    assert all(raw.zscore(k.on_failure_due, rid) == 1 for rid in theirs)  # left for theirs


def test_entries_of_runs_gone_or_no_longer_failed_are_dropped(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    gone, resumed, kept = (_failed(client, enq, "hooked") for _ in range(3))
    raw.delete(k.run(gone))
    client.resume_run(resumed)
    _past_deadline(raw, client, gone, resumed, kept)
    rank, taken = take_due(stores(client)[0], ["hooked"])
    assert (rank, taken) == (0, [(kept, "hooked")])
    assert raw.zrange(k.on_failure_due, 0, -1) == [kept.encode()]


def test_retention_removes_the_entry_of_a_run_it_deletes(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = _failed(client, enq, "hooked")
    raw.zadd(k.runs_status("failed"), {rid: client.server_time_ms() - 120_000})
    assert client.scripts.sweep(60_000, 100) == 1
    assert not raw.exists(k.run(rid))
    assert raw.zscore(k.on_failure_due, rid) is None


def test_a_hook_that_never_returns_is_given_up_after_the_most_takeovers(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = _failed(client, enq, "hooked")
    store = stores(client)[0]
    for _ in range(MAX_TAKEOVERS):
        _past_deadline(raw, client, rid)  # its taker's hook was killed past the limit
        assert take_due(store, ["hooked"]) == (0, [(rid, "hooked")])
    _past_deadline(raw, client, rid)
    assert take_due(store, ["hooked"]) == (0, [])
    assert raw.zscore(k.on_failure_due, rid) is None
    # resumed and failed again: a new count
    client.resume_run(rid)
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "failed", _ERR, 0, ("hooked",)) == "failed"
    _past_deadline(raw, client, rid)
    assert take_due(store, ["hooked"]) == (0, [(rid, "hooked")])


def test_a_tick_with_nothing_due_costs_redis_little_whatever_the_hooked_workflows(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A supervisor loading 10,000 hooked workflows: a reaper tick that finds
    nothing due sends no name (it cost ~2 ms of Redis CPU per shard per tick,
    twice a second, when every tick sent all the names)."""
    store = stores(client)[0]
    many = tuple(f"wf{i}" for i in range(10_000))
    _failed(client, enq, "wf7")  # due, but not yet past its deadline
    take_due(store, many)
    take_due(store, ("wf7",))
    calls = 100
    with_many = cpu_ms_of(raw, lambda: [take_due(store, many) for _ in range(calls)])
    with_one = cpu_ms_of(raw, lambda: [take_due(store, ("wf7",)) for _ in range(calls)])
    assert with_many <= 3 * with_one + 5.0, (with_many, with_one)


def test_a_run_whose_takeover_count_is_not_an_integer_does_not_break_the_takeover(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A ``hookTakes`` field written by hand (not an integer) made the script
    raise on every reaper tick, before the later shards were reaped."""
    k = client.keys
    odd, plain = (_failed(client, enq, "hooked") for _ in range(2))
    raw.hset(k.run(odd), "hookTakes", "x")
    _past_deadline(raw, client, odd, plain)
    rank, taken = take_due(stores(client)[0], ["hooked"])
    assert (rank, sorted(taken)) == (0, sorted([(odd, "hooked"), (plain, "hooked")]))


def test_the_first_failures_hook_returning_late_leaves_the_next_failures_entry(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Resumed while its first failure's hook still ran, then failed again: the
    first hook's return removed the second failure's entry, and a crash of the
    second hook's process then lost that hook for good."""
    k = client.keys
    rid, first = _failed_tok(client, enq, "hooked")
    client.resume_run(rid)
    second = _claim(client, rid)
    assert client.scripts.finalize(rid, second, "failed", _ERR, 0, ("hooked",)) == "failed"
    done(client, rid, first)  # the first failure's hook returns
    assert raw.zscore(k.on_failure_due, rid) is not None
    done(client, rid, second)
    assert raw.zscore(k.on_failure_due, rid) is None
