"""A cron entry replaced while the leader's tick is under way, a replaced entry
whose stored next fire time lies far ahead, and an overdue fire time (the leader
was down for hours), with the default leader lock (``cron_lock_ttl_ms`` 10 s).

Time is the Redis server's: fire times are made due by writing ``cron:next``
relative to its clock, on schedules whose own times never come due while a test
runs (yearly), and the interleavings are made by the test, not by timing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, crontick, define_workflow
from redflow_mp.cron import cron_id_for, next_fire_ms
from redflow_mp.ids import new_run_id
from redflow_mp.keys import cron_key
from redflow_mp.maintenance import LeaderLock, cron_tick
from tests.helpers import text

pytestmark = pytest.mark.timeout(60)

LOCK_TTL_MS = 10_000  # cron_lock_ttl_ms's default
YEARLY = "0 0 1 1 *"
HOUR_MS = 3_600_000


def _handler(ctx: Context[Any]) -> None:
    return None


def _registry(*crons: Cron, queue: str = "default") -> Registry:
    reg = Registry()
    define_workflow("ticker", cron=list(crons), queue=queue, registry=reg)(_handler)
    return reg


def _runs(raw: redis.Redis, client: Client) -> list[dict[bytes, bytes]]:
    ids: Any = raw.zrange(client.keys.workflow_runs("ticker"), 0, -1)
    return [raw.hgetall(client.keys.run(text(i))) for i in ids]  # type: ignore[misc]


def _leader(client: Client) -> LeaderLock:
    lock = LeaderLock(client, LOCK_TTL_MS)
    assert lock.tick()
    return lock


def _replaced_during_the_tick(
    monkeypatch: pytest.MonkeyPatch, client: Client, new: Registry
) -> list[bool]:
    """Sync ``new`` once, after the tick read its due entries and before it fires."""
    done: list[bool] = []
    real = crontick._fire

    def hooked(*args: Any) -> Any:
        if not done:
            done.append(True)
            client.sync_registry(new, app="a")
        return real(*args)

    monkeypatch.setattr(crontick, "_fire", hooked)
    return done


@pytest.mark.parametrize(
    ("old", "new", "queue"),
    [
        # the schedule changed under the explicit id: swap_crons writes the new
        # entry with the fire time the old one was due at and had not fired
        pytest.param(
            Cron(YEARLY, id="main", input={"v": 1}),
            Cron("0 0 * * *", id="main", input={"v": 2}),
            "default",
            id="schedule",
        ),
        # the input changed under the explicit id: the definition is written over,
        # the next fire time kept
        pytest.param(
            Cron(YEARLY, id="main", input={"v": 1}),
            Cron(YEARLY, id="main", input={"v": 2}),
            "default",
            id="input",
        ),
        # the workflow moved to another queue
        pytest.param(
            Cron(YEARLY, id="main", input={"v": 2}),
            Cron(YEARLY, id="main", input={"v": 2}),
            "other",
            id="queue",
        ),
    ],
)
def test_a_tick_fires_no_definition_replaced_between_its_read_and_its_fire(
    raw: redis.Redis,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    old: Cron,
    new: Cron,
    queue: str,
) -> None:
    """The tick read the due entry with its old definition; a sync replaced it
    before the tick fired it, keeping the fire time due (its new schedule has
    it). The tick enqueued the run with the old input and queue (and moved the
    entry on by the old schedule); now its fire is refused and the next tick
    fires that fire time once, with the new definition."""
    client.sync_registry(_registry(old), app="a")
    cid = cron_id_for("ticker", old)
    assert cron_id_for("ticker", new) == cid
    lock = _leader(client)
    now = client.server_time_ms()
    # a fire time both schedules have (a 1 January midnight), due and not fired
    due = next_fire_ms(YEARLY, "UTC", now - 366 * 24 * HOUR_MS)
    assert due < now
    raw.zadd(client.keys.cron_next, {cid: due})
    done = _replaced_during_the_tick(monkeypatch, client, _registry(new, queue=queue))
    first = cron_tick(client, lock.token)
    monkeypatch.undo()
    assert done == [True]
    stored = json.loads(raw.hget(client.keys.cron_def, cid))  # type: ignore[arg-type]
    assert (stored["inputJson"], stored["queue"]) == ('{"v":2}', queue)
    second = cron_tick(client, lock.token)
    runs = _runs(raw, client)
    inputs = [(text(r[b"inputJson"]), text(r[b"queue"])) for r in runs]
    assert inputs == [('{"v":2}', queue)], f"runs of the fire time {due}: {inputs}"
    assert len(first.fired) + len(second.fired) == 1
    assert runs[0][b"idempotencyKey"] == cron_key(cid, due).encode()
    # moved on by the new schedule
    score = raw.zscore(client.keys.cron_next, cid)
    assert score == next_fire_ms(new.expression, "UTC", second.now_ms)


def test_a_replaced_entry_whose_next_fire_time_lies_far_ahead_leaves_the_new_one_on_its_schedule(
    raw: redis.Redis, client: Client
) -> None:
    """The replaced entry's stored next fire time lay 30 days ahead (a neighbour's
    or an operator's write, in croniter's range), and none of its runs had fired
    any of the times before it: the new entry took the old one's next fire time
    (its times up to it were counted as the old entry's, past 64 of them it gave
    up), and stayed silent for 30 days. It starts on its own schedule now."""
    hourly = "0 * * * *"
    old, new = Cron(hourly, input={"v": 1}), Cron(hourly, input={"v": 2})
    client.sync_registry(_registry(old), app="a")
    old_id, new_id = cron_id_for("ticker", old), cron_id_for("ticker", new)
    assert old_id != new_id
    before = client.server_time_ms()
    far = next_fire_ms(hourly, "UTC", before + 30 * 24 * HOUR_MS)
    raw.zadd(client.keys.cron_next, {old_id: far})
    client.sync_registry(_registry(new), app="a")
    after = client.server_time_ms()
    assert raw.zscore(client.keys.cron_next, old_id) is None
    score = raw.zscore(client.keys.cron_next, new_id)
    mine = {next_fire_ms(hourly, "UTC", before), next_fire_ms(hourly, "UTC", after)}
    assert score in mine, f"the new entry's first fire time {score}, its schedule's {mine}"


def test_a_replaced_entry_that_fired_ahead_keeps_its_fired_times_from_the_new_one(
    raw: redis.Redis, client: Client
) -> None:
    """The other side: the replaced entry's runs fired times ahead of the clock
    (a Redis clock that ran ahead and was set back): the new entry starts after
    the latest of them, not before (the workflow would run twice for them)."""
    hourly = "0 * * * *"
    old, new = Cron(hourly, input={"v": 1}), Cron(hourly, input={"v": 2})
    client.sync_registry(_registry(old), app="a")
    old_id, new_id = cron_id_for("ticker", old), cron_id_for("ticker", new)
    lock = _leader(client)
    now = client.server_time_ms()
    fired_ahead = next_fire_ms(hourly, "UTC", now + 5 * HOUR_MS)
    # the leader fired `fired_ahead` at the clock ahead (fire_cron as the tick calls
    # it), which moved the entry on to the hour after it
    raw.zadd(client.keys.cron_next, {old_id: fired_ahead})
    code, run_id = client.scripts.fire_cron(
        lock.token,
        old_id,
        fired_ahead,
        fired_ahead + HOUR_MS,
        new_run_id(),
        "ticker",
        "default",
        '{"v":1}',
        1,
        cron_key(old_id, fired_ahead),
        60_000,
        1,
        None,
    )
    assert code == 1, (code, run_id)
    client.sync_registry(_registry(new), app="a")
    assert raw.zscore(client.keys.cron_next, new_id) == fired_ahead + HOUR_MS


def test_an_overdue_fire_time_fires_once_and_the_schedule_goes_on_from_now(
    raw: redis.Redis, client: Client
) -> None:
    """SPEC 4 (Cron): a due entry enqueues a run, then its next fire time is
    computed from now (no catch-up burst). A leader down for five hours over an
    every-minute cron: the overdue fire time fires once, at once (its run keyed
    by that fire time), the 299 minutes after it neither fire nor are recorded as
    skipped (``cron:skipped`` is for fire times passed at max_concurrency or
    behind a waiting run), and the schedule goes on from the server's time."""
    minutely = "* * * * *"
    cron = Cron(minutely)
    client.sync_registry(_registry(cron), app="a")
    cid = cron_id_for("ticker", cron)
    lock = _leader(client)
    now = client.server_time_ms()
    overdue = next_fire_ms(minutely, "UTC", now - 5 * HOUR_MS)
    raw.zadd(client.keys.cron_next, {cid: overdue})
    tick = cron_tick(client, lock.token)
    assert len(tick.fired) == 1 and tick.skipped == [] and tick.duplicates == 0
    runs = _runs(raw, client)
    assert [r[b"idempotencyKey"] for r in runs] == [cron_key(cid, overdue).encode()]
    assert raw.zscore(client.keys.cron_next, cid) == next_fire_ms(minutely, "UTC", tick.now_ms)
    assert raw.hget(client.keys.cron_skipped, cid) is None
    again = cron_tick(client, lock.token)
    assert again.fired == [] and again.skipped == []
    assert len(_runs(raw, client)) == 1


def _hostile_skip(raw: redis.Redis, client: Client, cid: str) -> None:
    # a digit Python's str.isdigit() takes and int() refuses
    raw.hset(client.keys.cron_skipped, cid, "²".encode())


def _hostile_last(raw: redis.Redis, client: Client, cid: str) -> None:
    run_id = new_run_id()
    raw.hset(client.keys.cron_last, cid, run_id)
    raw.hset(client.keys.run(run_id), "idempotencyKey", cron_key(cid, 0)[:-1] + "²")


def _wrong_types(raw: redis.Redis, client: Client, cid: str) -> None:
    raw.delete(client.keys.cron_last, client.keys.cron_skipped)
    raw.set(client.keys.cron_skipped, "x")
    raw.rpush(client.keys.cron_last, "x")


@pytest.mark.parametrize(
    "neighbour",
    [
        pytest.param(_hostile_skip, id="skip-not-ascii-digits"),
        pytest.param(_hostile_last, id="last-run-key-not-ascii-digits"),
        pytest.param(_wrong_types, id="wrong-types"),
    ],
)
def test_a_neighbours_write_into_the_latest_fire_records_never_fails_the_sync(
    raw: redis.Redis, client: Client, neighbour: Any
) -> None:
    """A neighbour's write into ``cron:skipped`` / ``cron:last`` (a value of
    non-ASCII digits, a key of another type) read by the sync replacing the
    entry: it is no fire time known (the server's time bounds what the old entry
    handled), and the sync goes on. A value of "²" (``str.isdigit()``) was a
    ``ValueError`` from every sync replacing that entry: a supervisor's start
    failed, and the registry duty's every sync."""
    hourly = "0 * * * *"
    old, new = Cron(hourly, input={"v": 1}), Cron(hourly, input={"v": 2})
    client.sync_registry(_registry(old), app="a")
    old_id, new_id = cron_id_for("ticker", old), cron_id_for("ticker", new)
    neighbour(raw, client, old_id)
    before = client.server_time_ms()
    client.sync_registry(_registry(new), app="a")
    after = client.server_time_ms()
    assert raw.zscore(client.keys.cron_next, old_id) is None
    score = raw.zscore(client.keys.cron_next, new_id)
    assert score in {next_fire_ms(hourly, "UTC", before), next_fire_ms(hourly, "UTC", after)}
