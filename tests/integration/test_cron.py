"""Cron: only the lock holder schedules; a fire time creates at most one run even
with two schedulers racing or a leader change; the next fire time is computed
from now (no catch-up burst); runs carry cronId; skipped at max_concurrency."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, crontick, define_workflow
from redflow_mp.admin import cron_entries
from redflow_mp.codec import text
from redflow_mp.cron import cron_id_for, next_fire_ms
from redflow_mp.crontick import CRON_TICK_BUDGET_S
from redflow_mp.keys import cron_key
from redflow_mp.maintenance import CronTick, LeaderLock, cron_tick
from supervisor.duties.cron import CronDuty
from supervisor.duties.leader import LeaderDuty
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)

# Fire times are made due by rewriting cron:next; the real schedule is yearly so
# that no fire time becomes due by itself while a test runs (however slow).
YEARLY = Cron("0 0 1 1 *", input={"tick": True})


def _setup(client: Client, registry: Registry, **kw: Any) -> str:
    @define_workflow("ticker", cron=[YEARLY], registry=registry, **kw)
    def ticker(ctx: Context[Any]) -> Any:
        return {"cron": ctx.run.cron_id, "input": ctx.input}

    client.sync_registry(registry, app="cron-test")
    return cron_id_for("ticker", YEARLY)


def _make_due(raw: redis.Redis, client: Client, cid: str, fire_ms: int) -> None:
    raw.zadd(client.keys.cron_next, {cid: fire_ms})


def test_leader_lock_is_exclusive(client: Client, make_client: Any) -> None:
    a = LeaderLock(client, 5_000)
    b = LeaderLock(make_client(), 5_000)
    assert a.tick() is True
    assert b.tick() is False
    assert a.tick() is True  # renew
    a.release()
    assert b.tick() is True
    assert a.tick() is False


def test_leader_lock_renewal_and_release_are_fenced_by_the_token(
    raw: redis.Redis, client: Client
) -> None:
    key = client.keys.lock_cron
    lock = LeaderLock(client, 60_000)
    raw.set(key, "other", px=1_000)  # another supervisor leads
    assert lock.tick() is False
    assert raw.get(key) == b"other" and raw.pttl(key) <= 1_000
    raw.delete(key)
    assert lock.tick() is True
    assert raw.get(key) == lock.token.encode()  # the token fire_cron compares
    raw.pexpire(key, 1_000)
    assert lock.tick() is True  # renewal: back to the full TTL
    assert raw.pttl(key) > 50_000
    # Our lock expired and another supervisor took over: renewing fails and
    # leaves its lock as it is.
    raw.set(key, "other", px=1_000)
    assert lock.tick() is False
    assert raw.get(key) == b"other" and raw.pttl(key) <= 1_000
    # Releasing hands back our own lock only.
    raw.delete(key)
    assert lock.tick() is True
    raw.set(key, "other", px=1_000)
    lock.release()
    assert lock.held is False and raw.get(key) == b"other"
    raw.delete(key)
    assert lock.tick() is True
    lock.release()
    assert lock.held is False and not raw.exists(key)


def test_due_cron_fires_one_run_with_cron_id(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    cid = _setup(client, registry)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    now = client.server_time_ms()
    fire = now - 3 * 366 * 24 * 3600 * 1000  # a fire time missed three years ago
    _make_due(raw, client, cid, fire)
    tick = cron_tick(client, lock.token)
    assert isinstance(tick, CronTick)
    assert len(tick.fired) == 1 and tick.skipped == [] and tick.duplicates == 0
    run = client.get_run(tick.fired[0])
    assert run is not None
    assert run.cron_id == cid
    assert run.idempotency_key == cron_key(cid, fire)
    assert run.input == {"tick": True}
    # next fire time from now, not from the missed fire time: no catch-up burst
    nxt = raw.zscore(client.keys.cron_next, cid)
    assert nxt is not None and nxt > now
    assert nxt == next_fire_ms("0 0 1 1 *", "UTC", tick.now_ms)
    assert tick.next_due_ms == nxt
    assert cron_tick(client, lock.token).fired == []
    workers.start()
    assert client.handle(run.id).result(timeout=10) == {"cron": cid, "input": {"tick": True}}


def test_only_the_lock_holder_fires(raw: redis.Redis, client: Client, registry: Registry) -> None:
    cid = _setup(client, registry)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    _make_due(raw, client, cid, client.server_time_ms() - 1_000)
    tick = cron_tick(client, "not-the-leader")
    assert tick.fired == []
    assert not raw.exists(client.keys.runs_created)
    assert len(cron_tick(client, lock.token).fired) == 1


def test_racing_schedulers_create_one_run_per_fire_time(
    raw: redis.Redis, client: Client, registry: Registry, make_client: Any
) -> None:
    cid = _setup(client, registry)
    lock = LeaderLock(client, 30_000)
    assert lock.tick()
    schedulers = [client, make_client(), make_client(), make_client()]
    base = client.server_time_ms() - 60_000
    fired: Counter[int] = Counter()
    lock_counts = threading.Lock()
    for round_no in range(15):
        fire = base + round_no
        _make_due(raw, client, cid, fire)
        # no worker starts the previous round's run: forget it, or this fire
        # time passes (test_a_cron_fires_no_new_run_while_its_previous_run_waits)
        raw.delete(client.keys.cron_last)
        barrier = threading.Barrier(len(schedulers))

        def race(c: Client, fire: int = fire, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            t = cron_tick(c, lock.token)
            with lock_counts:
                fired[fire] += len(t.fired)

        threads = [threading.Thread(target=race, args=(c,)) for c in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert fired == {base + r: 1 for r in range(15)}
    assert raw.zcard(client.keys.runs_created) == 15
    runs = client.list_runs(limit=100)
    assert len({r.idempotency_key for r in runs}) == 15


def test_leader_change_does_not_double_fire(
    raw: redis.Redis, client: Client, registry: Registry, make_client: Any
) -> None:
    cid = _setup(client, registry)
    old = LeaderLock(client, 10_000)
    assert old.tick()
    fire = client.server_time_ms() - 2_000
    _make_due(raw, client, cid, fire)
    first = cron_tick(client, old.token)
    assert len(first.fired) == 1
    # the old leader's lock expires; a new leader starts from a stale schedule
    # that still shows the same fire time
    raw.delete(client.keys.lock_cron)
    new = LeaderLock(make_client(), 10_000)
    assert new.tick()
    _make_due(raw, client, cid, fire)
    assert cron_tick(client, old.token).fired == []  # the old leader is fenced out
    second = cron_tick(new.client, new.token)
    assert second.fired == [] and second.duplicates == 1
    assert raw.zcard(client.keys.runs_created) == 1


def test_cron_skipped_when_workflow_at_max_concurrency(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    cid = _setup(client, registry, max_concurrency=1)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    raw.sadd(client.keys.wf_running("ticker"), "BUSY-RUN")
    _make_due(raw, client, cid, client.server_time_ms() - 1_000)
    tick = cron_tick(client, lock.token)
    assert tick.fired == [] and tick.skipped == [cid]
    assert not raw.exists(client.keys.runs_created)
    assert raw.zscore(client.keys.cron_next, cid) > client.server_time_ms() - 1_000  # type: ignore[operator]


def test_unreadable_cron_definition_is_dropped(raw: redis.Redis, client: Client) -> None:
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    now = client.server_time_ms()
    raw.hset(client.keys.cron_def, "broken", b"{not json")
    raw.zadd(client.keys.cron_next, {"broken": now - 1, "no-def": now - 1})
    tick = cron_tick(client, lock.token)
    assert tick.fired == []
    assert raw.zcard(client.keys.cron_next) == 0


def test_the_cron_duty_comes_back_at_once_while_more_entries_are_due(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A tick fires at most 100 due entries; with more due it waited for the next
    fire time (up to a second), so the leader fired 100 crons a second at most:
    2,000 crons every 10 s fired 3,000 runs in 30 s instead of 6,000, behind for
    good. Now the duty is due again at once while its batch was full."""
    for i in range(150):
        define_workflow(f"tick{i}", cron=[YEARLY], registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="cron-test")
    now_ms = client.server_time_ms()
    raw.zadd(
        client.keys.cron_next,
        {text(cid): now_ms - 1_000 for cid in raw.hkeys(client.keys.cron_def)},
    )
    leader = LeaderDuty(client, 10_000)
    leader.tick(0.0)
    duty = CronDuty(client, leader)
    # A tick stops at 100 entries, or sooner at its time budget (0.1 s: a loaded
    # machine, Valkey), with more due: the duty is due again at once each time.
    assert duty.tick(100.0) == 100.0 and 0 < duty.fired <= 100
    again = [duty.tick(100.0) for _ in range(200) if duty.fired < 150]
    assert duty.fired == 150
    assert all(t == 100.0 for t in again[:-1])
    last = again[-1] if again[-1] > 100.0 else duty.tick(100.0)  # the budget may end the
    assert 100.0 < last <= 101.0 and duty.fired == 150  # last fire with "more" still set
    assert raw.zcount(client.keys.cron_next, "-inf", now_ms) == 0


def test_a_cron_entry_whose_queue_is_broken_stops_no_other_entry(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Two cron entries due in one tick; the first one's queue has a ready set of
    the wrong type (another program, a typo): its fire raised WrongTypeError out
    of the tick, so the entries after it did not fire in that tick. It is now
    named and skipped (its fire time passes, as at max_concurrency); the others
    fire."""

    @define_workflow("broken-q", cron=[YEARLY], queue="bq", registry=registry)
    def broken(ctx: Context[Any]) -> Any:
        return 1

    @define_workflow("fine-q", cron=[YEARLY], queue="fq", registry=registry)
    def fine(ctx: Context[Any]) -> Any:
        return 1

    client.sync_registry(registry, app="cron-test")
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    now = client.server_time_ms()
    _make_due(raw, client, cron_id_for("broken-q", YEARLY), now - 2_000)
    _make_due(raw, client, cron_id_for("fine-q", YEARLY), now - 1_000)
    raw.set(client.keys.q_ready("bq"), "not a redflow key")
    # No time budget: the broken entry's call (the first script call, its error
    # logged) took past the 0.1 s one on a loaded machine (Redis 6.2, the oldest
    # redis-py), which leaves the rest to the next tick (more=True): no failure.
    tick = cron_tick(client, lock.token, budget_s=math.inf)
    assert len(tick.fired) == 1
    assert tick.skipped == [cron_id_for("broken-q", YEARLY)]
    run = client.get_run(tick.fired[0])
    assert run is not None and run.workflow == "fine-q"


def test_a_cron_fires_no_new_run_while_its_previous_run_waits(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """Every worker busy with other work (or none running): a cron's runs waited
    in the queue, and the workflow counted no running run, so every fire time
    enqueued one more. A `* * * * * *` cron piled up a run a second without bound
    (the backlog then ran one after another). A fire time now passes, as at
    max_concurrency, while the run of the entry's previous fire has not
    started; it fires again once that run started."""
    cid = _setup(client, registry)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    base = client.server_time_ms() - 60_000
    fired = []
    for second in range(5):  # five fire times, no worker free to start the first run
        _make_due(raw, client, cid, base + second * 1_000)
        fired += cron_tick(client, lock.token).fired
    queued = raw.zcard(client.keys.runs_status("queued"))
    assert len(fired) == 1 and queued == 1, f"{len(fired)} runs fired, {queued} queued"
    workers.start()
    assert client.handle(fired[0]).result(timeout=10) is not None
    _make_due(raw, client, cid, base + 10_000)
    again = cron_tick(client, lock.token)
    assert len(again.fired) == 1 and again.skipped == []
    assert client.handle(again.fired[0]).result(timeout=10) is not None
    # a neighbour's key of another type at cron:last loses the check only
    raw.set(client.keys.cron_last, "not a hash")
    _make_due(raw, client, cid, base + 20_000)
    assert len(cron_tick(client, lock.token).fired) == 1


@pytest.mark.parametrize("score", ["-inf", "+inf"])
def test_an_infinite_next_fire_time_stops_no_other_entry(
    raw: redis.Redis, client: Client, registry: Registry, score: str
) -> None:
    """``ZADD cron:next -inf <id>`` (an operator's "fire it now", a neighbour) made
    every tick raise OverflowError (an infinite score read as an int): no cron
    of the prefix fired any more. ``+inf`` ("never") did the same once it was
    the only entry not due. Now an entry due at ``-inf`` is dropped with an
    ERROR line, like an unreadable one (the registry duty writes it again), and
    one at ``+inf`` waits; the others fire."""
    cid = _setup(client, registry)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    raw.zadd(client.keys.cron_next, {cid: client.server_time_ms() - 1_000})
    raw.zadd(client.keys.cron_next, {"odd": float(score)})
    raw.hset(client.keys.cron_def, "odd", raw.hget(client.keys.cron_def, cid) or b"")
    tick = cron_tick(client, lock.token)
    assert len(tick.fired) == 1
    if score == "-inf":
        assert raw.zscore(client.keys.cron_next, "odd") is None
    else:
        assert raw.zscore(client.keys.cron_next, "odd") == float("inf")
        raw.zrem(client.keys.cron_next, cid)
        assert cron_tick(client, lock.token).next_due_ms is None


def test_the_cron_view_shows_an_infinite_next_fire_time_as_none(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """``admin.cron_entries`` (``redflow crons``, the dashboard) read the next fire
    time as an int: a ``+inf`` written by hand ("never") raised OverflowError and
    the whole view failed. It now shows no next fire time for that entry."""
    cid = _setup(client, registry)
    raw.zadd(client.keys.cron_next, {cid: float("inf")})
    (entry,) = cron_entries(client)
    assert entry.id == cid and entry.next_fire_at is None


# A neighbour's script that holds the server for ``ARGV[1]`` turns of an empty
# loop (not a TIME loop: Valkey gives a script one TIME for its whole run).
_SPIN = """
for _ = 1, tonumber(ARGV[1]) do end
return 1
"""


class _TickClock:
    """``crontick``'s ``time`` module for a test: the real clock, each of the tick's
    ``monotonic()`` reads noted in ``events`` in order with the fire calls
    (``("read", t)`` and ``("fire", None)``)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float | None]] = []

    def monotonic(self) -> float:
        now = time.monotonic()
        self.events.append(("read", now))
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_tick_of_many_due_crons_gives_the_loop_back_within_its_budget(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick fired up to 100 due entries one ``fire_cron`` call each, whatever
    they took: with 2,000 every-second crons on a loaded machine a tick held the
    supervisor's loop 1-3 s (scrapes took 2 s, and the reaper's stall guard took
    the busy loop for a stopped process and held reaping 5 s). Now a tick stops
    after ``CRON_TICK_BUDGET_S`` (with ``more``: the duty ticks again at once,
    after the loop's other duties): here a neighbour's 50 ms scripts stand before
    each call, and the 120 entries still all fire, one short tick after another.

    What the tick held the loop for is read on the tick's own clock, not timed
    around it (a wall-clock bound failed on a loaded machine): once a read of its
    clock is past the budget, the tick makes no further call; so it holds the loop
    for its budget and the one call under way at most."""
    names = [f"tick{i}" for i in range(120)]
    for name in names:
        define_workflow(name, cron=[YEARLY], registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="cron-test")
    lock = LeaderLock(client, 60_000)
    assert lock.tick()
    assert cron_tick(client, lock.token).fired == []  # the scripts loaded, before the neighbour
    due = client.server_time_ms() - 1_000
    raw.zadd(client.keys.cron_next, {cron_id_for(n, YEARLY): due for n in names})
    stop = threading.Event()
    began = time.perf_counter()
    raw.eval(_SPIN, 0, 1_000_000)
    turns = max(1, int(1_000_000 * 0.05 / (time.perf_counter() - began)))  # about 50 ms

    # On a cluster, the neighbour works on the node that serves the test's keys.
    cluster: object = raw
    node = (
        cluster.get_node_from_key(client.keys.cron_next)  # type: ignore[no-untyped-call]
        if isinstance(cluster, redis.RedisCluster)
        else None
    )
    url = redis_url if node is None else f"redis://{node.host}:{node.port}/0"

    def neighbour() -> None:
        r = redis.Redis.from_url(url)
        try:
            while not stop.is_set():
                r.eval(_SPIN, 0, turns)
        finally:
            r.close()

    spinner = threading.Thread(target=neighbour, daemon=True)
    spinner.start()
    clock = _TickClock()
    fire = crontick._fire

    def noted_fire(*args: Any, **kwargs: Any) -> Any:
        clock.events.append(("fire", None))
        return fire(*args, **kwargs)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(crontick, "time", clock)
            patch.setattr(crontick, "_fire", noted_fire)
            first = cron_tick(client, lock.token)
    finally:
        stop.set()
        spinner.join(10)
    assert first.more and 1 <= len(first.fired) < 100, (len(first.fired), first.more)
    events = clock.events
    assert events[0][0] == "read" and events[0][1] is not None
    deadline = events[0][1] + CRON_TICK_BUDGET_S  # the tick's first read sets its deadline
    calls = [i for i, (kind, _) in enumerate(events) if kind == "fire"]
    assert len(calls) == len(first.fired), events
    for i in calls[1:]:  # each call after the first passed a check of the clock
        kind, at = events[i - 1]
        assert kind == "read" and at is not None and at < deadline, events
    kind, at = events[-1]  # the tick ended on a read past the budget, with no call after it
    assert kind == "read" and at is not None and at >= deadline, events
    fired, ticks = len(first.fired), 1
    more = True
    while more:
        tick = cron_tick(client, lock.token)
        fired, ticks, more = fired + len(tick.fired), ticks + 1, tick.more
        assert ticks < 200
    assert fired == 120


def test_a_fire_time_of_a_fraction_of_a_ms_fires_and_moves_on(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A cron:next score that is not a whole ms (an operator's "fire it now" by
    ``ZADD ... $(python -c 'print(time.time() * 1000)')``, a neighbour's float
    clock) fires once and the entry moves on to its next fire time. Before, the
    leader read the score as whole ms, fire_cron compared it with the exact
    score, found it "already handled" (-2) and never advanced it: that cron
    never fired again, silently; and a full batch of such entries (100) kept
    every entry due after them from firing and the cron duty ticking at once,
    for good (``more``)."""
    cid = _setup(client, registry)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    now = client.server_time_ms()
    raw.zadd(client.keys.cron_next, {cid: now - 1_000 + 0.25})
    tick = cron_tick(client, lock.token)
    assert len(tick.fired) == 1, tick
    run = client.get_run(tick.fired[0])
    assert run is not None and run.cron_id == cid
    nxt = raw.zscore(client.keys.cron_next, cid)
    assert nxt is not None and nxt > now and nxt == int(nxt)
    assert cron_tick(client, lock.token).fired == []

    # a full batch of them stops no entry due after them, and ends
    plain = Cron("0 0 1 1 *", input={"plain": True})
    define_workflow("plain", cron=[plain], registry=registry)(lambda ctx: None)
    odd = [Cron("0 0 1 1 *", id=f"odd{i}") for i in range(3)]
    define_workflow("odd", cron=odd, registry=registry, max_concurrency=10)(lambda ctx: None)
    client.sync_registry(registry, app="cron-test")
    due = {cron_id_for("odd", c): now - 10_000 + i - 0.5 for i, c in enumerate(odd)}
    raw.zadd(client.keys.cron_next, {**due, cron_id_for("plain", plain): now - 1_000})
    # the limit is under test, not the time budget (a loaded machine's fire can
    # take its 0.1 s and end a tick after one entry)
    first = cron_tick(client, lock.token, limit=2, budget_s=math.inf)
    second = cron_tick(client, lock.token, limit=2, budget_s=math.inf)
    assert len(first.fired) + len(second.fired) == 4, (first, second)
    third = cron_tick(client, lock.token, limit=2, budget_s=math.inf)
    assert third.fired == [] and not third.more, third


def _leads(leader: LeaderDuty) -> bool:
    """(A call: mypy would take a property asserted once for a constant.)"""
    return leader.is_leader


def test_a_lock_overwritten_with_another_type_under_the_leader_ends_its_lead_and_is_named(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A neighbour overwrites ``lock:cron`` with another type of value while this
    supervisor leads. Before, the renewal's WRONGTYPE escaped the lock's tick: the
    supervisor went on taking itself for the leader for good, the key check that
    names such a lock skipped it (a key this leader "holds"), the leader duty
    warned "leader duty failed: WRONGTYPE ..." (no key named) and every due cron
    logged an ERROR "cron ... skipped" at every tick, counted as a skip. Now the
    lead ends (as when another token took the lock), the key is named, no cron
    is fired or skipped; once the key is gone the supervisor leads and fires."""
    cid = _setup(client, registry)
    leader = LeaderDuty(client, 10_000)
    duty = CronDuty(client, leader)
    leader.tick(0.0)
    assert _leads(leader)
    key = client.keys.lock_cron
    raw.delete(key)
    raw.hset(key, "held", "by a neighbour")
    _make_due(raw, client, cid, client.server_time_ms() - 1_000)
    with caplog.at_level(logging.INFO):
        for now in (1.0, 2.0, 3.0):
            leader.tick(now)
            duty.tick(now)
    assert not _leads(leader)
    assert duty.fired == 0 and duty.skipped == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and key in errors[0] and "a hash" in errors[0], errors
    raw.delete(key)
    leader.tick(4.0)
    assert _leads(leader)
    duty.tick(4.0)
    assert duty.fired == 1
    leader.resign()


def test_crons_of_two_workflows_never_share_an_id(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A cron's id was ``<workflow>:<id>``, and both may hold ':': workflow
    ``reports`` with cron id ``daily:eu`` and workflow ``reports:daily`` with cron
    id ``eu`` were one cron entry, the last synced one's: the other workflow's
    cron never fired (and removing one workflow removed the other's cron)."""

    def handler(ctx: Context[Any]) -> None:
        return None

    define_workflow("reports:daily", cron=[Cron("0 0 1 1 *", id="eu")], registry=registry)(handler)
    define_workflow("reports", cron=[Cron("0 0 1 1 *", id="daily:eu")], registry=registry)(handler)
    client.sync_registry(registry, app="cron-test")
    assert sorted(e.workflow for e in cron_entries(client)) == ["reports", "reports:daily"]
    # an id with no ':' keeps the form it had (entries synced before stay theirs)
    assert cron_id_for("reports", Cron("0 0 1 1 *", id="eu")) == "reports:eu"
    # The first sync after the upgrade: `reports` drops the id the previous version
    # gave its cron, which `reports:daily` writes in the same sync: it stays.
    raw.hset(client.keys.workflow("reports"), "cronIdsJson", '["reports:daily:eu"]')
    client.sync_registry(registry, app="cron-test")
    assert sorted(e.workflow for e in cron_entries(client)) == ["reports", "reports:daily"]


def test_a_withdrawn_workflow_leaves_another_workflows_cron_of_its_old_id(
    raw: redis.Redis, client: Client
) -> None:
    """Withdrawing a workflow removed every cron id its metadata listed: one synced
    by a version before cron_id_for's change (`reports` + `daily:eu`, listed as
    `reports:daily:eu`) took the entry of `reports:daily` + `eu` with it."""

    def handler(ctx: Context[Any]) -> None:
        return None

    daily = Registry()
    define_workflow("reports:daily", cron=[Cron("0 0 1 1 *", id="eu")], registry=daily)(handler)
    client.sync_registry(daily, app="b")
    old = Registry()
    define_workflow("reports", registry=old)(handler)
    client.sync_registry(old, app="a")
    # as the previous version left it, synced long ago
    raw.hset(client.keys.workflow("reports"), "cronIdsJson", '["reports:daily:eu"]')
    raw.hset(client.keys.wf_apps("reports"), "a", 1)
    client.sync_registry(Registry(), app="a")  # app a no longer defines `reports`
    assert client.get_workflow_meta("reports") is None
    assert [e.workflow for e in cron_entries(client)] == ["reports:daily"]


def test_an_upgraded_sync_leaves_another_apps_cron_of_its_old_id(
    raw: redis.Redis, client: Client
) -> None:
    """The first sync after cron_id_for's change dropped every old id its metadata
    listed that the same sync (chunk) did not write: `reports` + `daily:eu`, listed
    as `reports:daily:eu` by the version before, took the entry of another app's
    `reports:daily` + `eu` with it, and that cron did not fire until its own
    supervisor found the gap and synced again."""

    def handler(ctx: Context[Any]) -> None:
        return None

    daily = Registry()
    define_workflow("reports:daily", cron=[Cron("0 0 1 1 *", id="eu")], registry=daily)(handler)
    client.sync_registry(daily, app="b")
    fire = raw.zscore(client.keys.cron_next, "reports:daily:eu")
    reports = Registry()
    define_workflow("reports", cron=[Cron("0 0 1 1 *", id="daily:eu")], registry=reports)(handler)
    # `reports` as the previous version of app a left it: its cron under the old id
    raw.hset(
        client.keys.workflow("reports"),
        mapping={"name": "reports", "queue": "default", "app": "a"},
    )
    raw.hset(client.keys.workflow("reports"), "cronIdsJson", '["reports:daily:eu"]')
    client.sync_registry(reports, app="a")
    assert sorted(e.workflow for e in cron_entries(client)) == ["reports", "reports:daily"]
    assert raw.zscore(client.keys.cron_next, "reports:daily:eu") == fire
    # and an old id whose stored definition is its own still goes
    raw.hset(client.keys.workflow("reports"), "cronIdsJson", '["reports:old"]')
    raw.hset(
        client.keys.cron_def, "reports:old", raw.hget(client.keys.cron_def, "7:reports:daily:eu:")
    )
    raw.zadd(client.keys.cron_next, {"reports:old": 1})
    client.sync_registry(reports, app="a")
    assert not raw.hexists(client.keys.cron_def, "reports:old")
    assert raw.zscore(client.keys.cron_next, "reports:old") is None
