"""A cron leader that cannot read a cron definition another host can (its
timezone unknown to this host's tzdata, an expression of a newer croniter) skips
it and leaves it in place: a leader that can read it fires it.

Host B's tzdata knows a zone host A's does not: the zone is a copy of UTC in a
directory put on ``zoneinfo``'s search path (B) or taken off it (A)."""

from __future__ import annotations

import json
import logging
import shutil
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.cron import cron_id_for
from redflow_mp.maintenance import LeaderLock, cron_tick
from supervisor.duties.cron import CronDuty
from supervisor.duties.leader import LeaderDuty

pytestmark = pytest.mark.timeout(60)

ZONE = "Redflow_Test/Newer_Zone"


@pytest.fixture()
def zone_dir(tmp_path: Path) -> Iterator[Path]:
    """A tzdata directory with :data:`ZONE` (not on the search path until ``_host_b``)."""
    source = next(Path(d) / "UTC" for d in zoneinfo.TZPATH if (Path(d) / "UTC").is_file())
    (tmp_path / "Redflow_Test").mkdir()
    shutil.copy(source, tmp_path / ZONE)
    try:
        yield tmp_path
    finally:
        _host_a()


def _host_b(zone_dir: Path) -> None:
    """This process reads zones as host B does (its tzdata has :data:`ZONE`)."""
    zoneinfo.reset_tzpath([str(zone_dir), *zoneinfo.TZPATH])
    zoneinfo.ZoneInfo.clear_cache()


def _host_a() -> None:
    """This process reads zones as host A does (no :data:`ZONE`)."""
    zoneinfo.reset_tzpath()
    zoneinfo.ZoneInfo.clear_cache()


def test_a_leader_that_cannot_read_a_cron_entry_leaves_it_for_one_that_can(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    zone_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _host_b(zone_dir)
    trigger = Cron("0 0 1 1 *", timezone=ZONE)  # yearly: due only when the test says so

    @define_workflow("newer", cron=[trigger], registry=registry)
    def newer(ctx: Context[Any]) -> str:
        return "fired"

    client.sync_registry(registry, app="host-b")
    cid = cron_id_for("newer", trigger)
    fire_ms = client.server_time_ms() - 1_000
    raw.zadd(client.keys.cron_next, {cid: fire_ms})

    # Host A leads: it cannot read the entry's timezone.
    _host_a()
    leader = LeaderDuty(client, 10_000)
    leader.tick(0.0)
    assert leader.is_leader
    duty = CronDuty(client, leader)
    with caplog.at_level(logging.ERROR):
        for now in (100.0, 101.0, 102.0):  # three ticks in one minute
            duty.tick(now)
    assert raw.zscore(client.keys.cron_next, cid) == fire_ms, "the entry was removed"
    assert raw.hexists(client.keys.cron_def, cid)
    assert duty.fired == 0
    named = [r for r in caplog.records if r.levelno >= logging.ERROR and cid in r.getMessage()]
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        duty.tick(160.0)  # a minute after it was named: named again
    assert [r for r in caplog.records if cid in r.getMessage()]
    leader.resign()

    # Host B leads now: it fires the entry at its fire time.
    _host_b(zone_dir)
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    tick = cron_tick(client, lock.token)
    assert len(tick.fired) == 1
    run = client.get_run(tick.fired[0])
    assert run is not None and run.workflow == "newer" and run.cron_id == cid
    assert raw.zscore(client.keys.cron_next, cid) > fire_ms  # type: ignore[operator]


def test_a_full_batch_of_unreadable_entries_does_not_hide_the_entries_due_after_it(
    raw: redis.Redis, client: Client, registry: Registry, zone_dir: Path
) -> None:
    """Entries this host cannot read stay due, in front of the others: a tick
    that read only them (a full batch) looks past them."""
    _host_b(zone_dir)
    newer = [Cron("0 0 1 1 *", timezone=ZONE, id=f"n{i}") for i in range(3)]
    lock, due = _unreadable_due_before_plain(raw, client, registry, newer)
    tick = cron_tick(client, lock.token, limit=2)
    assert len(tick.fired) == 1, tick
    assert [cid for cid, _ in tick.unreadable] == [cron_id_for("newer", newer[2])]
    again = cron_tick(client, lock.token, limit=2)  # ``more``: the last batch was full
    assert again.fired == [] and len(again.unreadable) == 1 and not again.more
    assert raw.zmscore(client.keys.cron_next, list(due)) == list(due.values())


@pytest.mark.parametrize("expression", ["@hourly", "", "*/5"])
def test_a_neighbours_cron_entry_of_fewer_than_five_fields_stops_no_other_cron(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    expression: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A definition in cron:def whose expression has fewer than two fields (croniter
    reads ``@hourly``; a neighbour or a hand edit wrote it, no Cron() does) is an
    entry this host cannot read: named, left in place, and the entries due after
    it fire. Before, reading it raised IndexError out of every cron tick (the
    duty's warning "cron duty failed: list index out of range", no key named), and
    no cron of the prefix fired while it was due."""
    plain = Cron("0 0 1 1 *")
    define_workflow("plain", cron=[plain], registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="host-a")
    now = client.server_time_ms()
    hostile = "plain:hostile"
    raw.hset(
        client.keys.cron_def,
        hostile,
        json.dumps(
            {
                "id": hostile,
                "workflow": "plain",
                "queue": "default",
                "expression": expression,
                "timezone": "UTC",
                "inputJson": "null",
            }
        ),
    )
    raw.zadd(
        client.keys.cron_next, {hostile: now - 10_000, cron_id_for("plain", plain): now - 1_000}
    )
    leader = LeaderDuty(client, 10_000)
    leader.tick(0.0)
    assert leader.is_leader
    duty = CronDuty(client, leader)
    with caplog.at_level(logging.ERROR):
        duty.tick(100.0)
    assert duty.fired == 1, [r.getMessage() for r in caplog.records]
    assert raw.zscore(client.keys.cron_next, hostile) == now - 10_000
    assert any(hostile in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    leader.resign()


def test_unreadable_entries_with_large_inputs_do_not_hide_the_entries_due_after_them(
    raw: redis.Redis, client: Client, registry: Registry, zone_dir: Path
) -> None:
    """12 entries this host cannot read, each with a 2.5 MiB input, due before a
    plain one. A ``due_crons`` reply holds 4 MiB of definitions, so one entry a
    reply, and the tick looked past 10 replies (it looked past 10 full batches of
    100 entries before the size bound): the plain entry was never fired, on any
    tick. It looks past as many entries as before (10 x ``limit``)."""
    _host_b(zone_dir)
    blob = "x" * (5 << 19)  # 2.5 MiB: two of them do not fit one reply
    newer = [Cron("0 0 1 1 *", timezone=ZONE, id=f"n{i}", input=blob) for i in range(12)]
    lock, due = _unreadable_due_before_plain(raw, client, registry, newer)
    fired: list[str] = []
    for _ in range(20):  # the duty ticks again at once while ``more``
        tick = cron_tick(client, lock.token)
        fired += tick.fired
        if not tick.more:
            break
    assert len(fired) == 1, fired
    run = client.get_run(fired[0])
    assert run is not None and run.workflow == "plain"
    assert raw.zmscore(client.keys.cron_next, list(due)) == list(due.values())


def _unreadable_due_before_plain(
    raw: redis.Redis, client: Client, registry: Registry, newer: list[Cron]
) -> tuple[LeaderLock, dict[str, int]]:
    """``newer`` (workflow "newer", synced by host B, whose zone this host lacks)
    due before one plain entry (workflow "plain", host A's): the leader lock
    taken, and the due times of ``newer`` by cron id."""
    define_workflow("newer", cron=newer, registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="host-b")
    _host_a()
    host_a = Registry()
    plain = Cron("0 0 1 1 *")
    define_workflow("plain", cron=[plain], registry=host_a)(lambda ctx: None)
    client.sync_registry(host_a, app="host-a")
    now = client.server_time_ms()
    due = {cron_id_for("newer", c): now - 10_000 + i for i, c in enumerate(newer)}
    raw.zadd(client.keys.cron_next, {**due, cron_id_for("plain", plain): now - 1_000})
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    return lock, due
