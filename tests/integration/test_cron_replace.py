"""A registry sync that replaces a cron entry (an edited schedule or input: a new
derived id; an explicit id whose schedule changed; the upgrade of ids holding
':') while the leader fires the old one: each fire time fires once.

The sync read the entries and the server's time, then (one round trip later)
removed the old entry and wrote the new one with its first fire time computed
from that time. A leader that fired the old entry in between (its fire time
came) left the new entry due at the same fire time: the workflow ran twice for
it. The other way round, an old entry due but not fired yet when the sync read
it was removed, and the new one started after it: that fire time was lost.

The interleaving is made by the test, not by timing: the leader's tick runs at
the point where the sync has read and not written yet (its first computation of
a fire time), once the old entry's fire time has come on the server's clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, cronswap, define_workflow, sync
from redflow_mp.cron import cron_id_for, next_fire_ms
from redflow_mp.maintenance import LeaderLock, cron_tick
from tests.helpers import claim_one, text

pytestmark = pytest.mark.timeout(60)

EVERY_SECOND = "* * * * * *"


def _handler(ctx: Context[Any]) -> None:
    return None


def _registry(*crons: Cron) -> Registry:
    reg = Registry()
    define_workflow("ticker", cron=list(crons), registry=reg, max_concurrency=100)(_handler)
    return reg


def _fire_times(raw: redis.Redis, client: Client) -> Counter[int]:
    """How many runs of ``ticker`` each fire time created (from their idempotency keys)."""
    counts: Counter[int] = Counter()
    run_ids: Any = raw.zrange(client.keys.workflow_runs("ticker"), 0, -1)
    for run_id in run_ids:
        key: Any = raw.hget(client.keys.run(text(run_id)), "idempotencyKey")
        assert key is not None
        counts[int(text(key).rsplit(":", 1)[1])] += 1
    return counts


def _wait_for(client: Client, at_ms: int) -> None:
    """Until the server's clock reached ``at_ms`` (at most about a second here)."""
    while client.server_time_ms() < at_ms:
        pass


def _second_ahead(client: Client) -> int:
    """The next whole second of the server's clock, at least 300 ms away (the sync
    reads before it comes)."""
    now = client.server_time_ms()
    if now % 1000 > 700:
        _wait_for(client, now - now % 1000 + 1000)
        now = client.server_time_ms()
    return next_fire_ms(EVERY_SECOND, "UTC", now)


def _between_read_and_write(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]
) -> list[bool]:
    """Run ``action`` once, where the sync computes its first fire time (it has
    read the entries, and written nothing yet)."""
    done: list[bool] = []
    for module in (sync, cronswap):
        real = module.next_fire_ms

        def hooked(*args: Any, _real: Any = real) -> int:
            if not done:
                done.append(True)
                action()
            return int(_real(*args))

        monkeypatch.setattr(module, "next_fire_ms", hooked)
    return done


def _replace_while_the_leader_fires(
    raw: redis.Redis,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    old_id: str,
    new: Cron,
    leader_client: Client | None = None,
) -> tuple[int, int, LeaderLock]:
    """Sync ``new`` in place of the entry ``old_id`` (synced), which the leader
    fires between the sync's reads and its writes; returns that fire time and the
    next one the old entry had after it (one second later unless the tick came
    late: the leader passes the fire times it missed). ``leader_client``: the
    leader's (another host's) client, else ``client``."""
    lock = LeaderLock(leader_client or client, 60_000)
    assert lock.tick()
    at = _second_ahead(client)
    raw.zadd(client.keys.cron_next, {old_id: at})  # the leader is up to date: due next

    left: list[int | None] = []

    def leader_fires() -> None:
        _wait_for(client, at)
        assert len(cron_tick(lock.client, lock.token).fired) == 1  # the old entry, at `at`
        claim_one(client, "default")  # started: the entry's next fire is not held back
        left.append(_score(raw, client, old_id))

    done = _between_read_and_write(monkeypatch, leader_fires)
    client.sync_registry(_registry(new), app="a")
    monkeypatch.undo()
    assert done == [True]
    assert left[0] is not None and left[0] > at
    return at, left[0], lock


def _fire_due(client: Client, lock: LeaderLock, raw: redis.Redis, cron_id: str) -> int:
    """Wait for the entry's next fire time and tick once; returns that fire time."""
    score = raw.zscore(client.keys.cron_next, cron_id)
    assert score is not None
    _wait_for(client, int(score))
    cron_tick(client, lock.token)
    return int(score)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(
            Cron(EVERY_SECOND, input={"v": 1}), Cron(EVERY_SECOND, input={"v": 2}), id="new-id"
        ),
        pytest.param(
            Cron(EVERY_SECOND, id="beat"), Cron("*/1 * * * * *", id="beat"), id="explicit-id"
        ),
    ],
)
def test_a_replaced_cron_entry_fires_each_fire_time_once(
    raw: redis.Redis,
    client: Client,
    make_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    old: Cron,
    new: Cron,
) -> None:
    client.sync_registry(_registry(old), app="a")
    old_id, new_id = cron_id_for("ticker", old), cron_id_for("ticker", new)
    leader = make_client()  # the leader is another host
    at, then, lock = _replace_while_the_leader_fires(raw, client, monkeypatch, old_id, new, leader)
    _assert_replaced(raw, client, lock, old_id, new_id, at, then)


def test_the_upgrade_of_an_id_holding_a_colon_fires_each_fire_time_once(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first sync after cron_id_for's change replaces ``ticker:daily:eu`` (the
    form of before) by ``6:ticker:daily:eu:``."""
    cron = Cron(EVERY_SECOND, id="daily:eu")
    client.sync_registry(_registry(cron), app="a")
    legacy, new_id = "ticker:daily:eu", cron_id_for("ticker", cron)
    # as the version of before left it
    stored: Any = raw.hget(client.keys.cron_def, new_id)
    assert stored is not None
    raw.hset(client.keys.cron_def, legacy, text(stored).replace(new_id, legacy))
    raw.hdel(client.keys.cron_def, new_id)
    raw.zrem(client.keys.cron_next, new_id)
    raw.hset(client.keys.workflow("ticker"), "cronIdsJson", f'["{legacy}"]')
    at, then, lock = _replace_while_the_leader_fires(raw, client, monkeypatch, legacy, cron)
    _assert_replaced(raw, client, lock, legacy, new_id, at, then)


def _assert_replaced(
    raw: redis.Redis,
    client: Client,
    lock: LeaderLock,
    old_id: str,
    new_id: str,
    at: int,
    then: int,
) -> None:
    assert raw.hexists(client.keys.cron_def, new_id)
    if old_id != new_id:
        assert not raw.hexists(client.keys.cron_def, old_id)
        assert raw.zscore(client.keys.cron_next, old_id) is None
    following = _fire_due(client, lock, raw, new_id)
    counts = _fire_times(raw, client)
    assert counts[at] == 1, f"fire time {at} ran {counts[at]} times: {dict(counts)}"
    # and the new entry goes on with the old one's next fire time: none skipped
    assert following == then, (following, then, at)
    assert counts[following] == 1, dict(counts)


def test_a_fire_time_the_replaced_entry_was_due_at_and_had_not_fired_fires_once(
    raw: redis.Redis, client: Client
) -> None:
    """The old entry was due (the leader's tick had not come yet) when the sync
    replaced it: the new entry started with its first fire time after the sync's
    time, and that fire time was fired by neither."""
    old, new = Cron(EVERY_SECOND, input={"v": 1}), Cron(EVERY_SECOND, input={"v": 2})
    client.sync_registry(_registry(old), app="a")
    old_id, new_id = cron_id_for("ticker", old), cron_id_for("ticker", new)
    lock = LeaderLock(client, 60_000)
    assert lock.tick()
    now = client.server_time_ms()
    due = now - now % 1000 - 2000
    raw.zadd(client.keys.cron_next, {old_id: due})
    client.sync_registry(_registry(new), app="a")
    assert raw.zscore(client.keys.cron_next, new_id) == due
    assert raw.zscore(client.keys.cron_next, old_id) is None
    assert len(cron_tick(client, lock.token).fired) == 1
    assert _fire_times(raw, client) == {due: 1}


def test_a_cron_removed_and_added_back_while_the_leader_fires_fires_each_fire_time_once(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host's sync removes the cron between this sync's read (which found
    the entry, due next) and its write, after the leader fired it: the entry is
    written back with the fire time read, and its fire finds the run of that
    fire time by its idempotency key (the same cron id)."""
    cron = Cron(EVERY_SECOND, input={"v": 1})
    client.sync_registry(_registry(cron), app="a")
    cid = cron_id_for("ticker", cron)
    lock = LeaderLock(client, 60_000)
    assert lock.tick()
    at = _second_ahead(client)
    raw.zadd(client.keys.cron_next, {cid: at})
    real, done = cronswap.apply, list[bool]()

    def fire_and_remove(*args: Any) -> Any:
        if not done:
            done.append(True)
            _wait_for(client, at)
            assert len(cron_tick(client, lock.token).fired) == 1
            claim_one(client, "default")
            client.sync_registry(_registry(), app="a")  # the cron is gone from the code
            assert raw.zscore(client.keys.cron_next, cid) is None
        return real(*args)

    monkeypatch.setattr(cronswap, "apply", fire_and_remove)
    client.sync_registry(_registry(cron), app="a")  # and back
    monkeypatch.undo()
    assert done == [True]
    back_at = _score(raw, client, cid)
    tick = cron_tick(client, lock.token)
    assert tick.fired == [] and tick.duplicates == (1 if back_at == at else 0), (back_at, at)
    following = _fire_due(client, lock, raw, cid)
    counts = _fire_times(raw, client)
    assert counts[at] == 1 and counts[following] == 1, dict(counts)
    assert set(counts.values()) == {1}, dict(counts)


def _score(raw: redis.Redis, client: Client, cid: str) -> int | None:
    score = raw.zscore(client.keys.cron_next, cid)
    return None if score is None else int(score)


def test_two_syncs_replacing_one_cron_at_once_leave_one_entry(
    raw: redis.Redis, client: Client, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host's sync replaces the entry between this sync's read and its
    write (two versions of the code, each syncing its own cron): this one's swap
    is refused, it reads again and replaces the other host's entry, and no entry
    of either is left behind to fire beside it."""
    v1, v2, v3 = (Cron(EVERY_SECOND, input={"v": v}) for v in (1, 2, 3))
    client.sync_registry(_registry(v1), app="a")
    other = make_client()

    def other_host_syncs() -> None:
        other.sync_registry(_registry(v3), app="a")
        assert raw.hkeys(client.keys.cron_def) == [cron_id_for("ticker", v3).encode()]

    done = _between_read_and_write(monkeypatch, other_host_syncs)
    client.sync_registry(_registry(v2), app="a")
    monkeypatch.undo()
    assert done == [True]
    mine = cron_id_for("ticker", v2)
    assert raw.hkeys(client.keys.cron_def) == [mine.encode()]
    assert raw.zrange(client.keys.cron_next, 0, -1) == [mine.encode()]
    assert raw.hget(client.keys.workflow("ticker"), "cronIdsJson") == f'["{mine}"]'.encode()
