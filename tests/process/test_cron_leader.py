"""The cron leader lock against an unlucky operator and a hostile neighbour on
the same Redis, with the default settings (``cron_lock_ttl_ms`` 10 s)."""

from __future__ import annotations

import itertools
import shutil
import signal
import zoneinfo
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from redflow_mp.cron import Cron, cron_id_for
from tests.helpers import text
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

#: The zone of tests/process/flows_cron_zone.py (not imported here: it is
#: unknown to this host's tzdata).
ZONE = "Redflow_Test/Newer_Zone"


@pytest.mark.parametrize("kind", ["no-expiry", "hash"])
def test_a_lock_no_leader_can_hold_is_named_and_cron_resumes_once_it_is_gone(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, kind: str
) -> None:
    """A ``lock:cron`` written by someone else (a string without expiry, or a key
    of another type: no leader ever sets one) kept every supervisor from leading
    and no cron fired, for good, with nothing in any log. Now a supervisor that
    cannot lead names the key in an ERROR line; once it is removed, the lock is
    taken and crons fire."""
    key = client.keys.lock_cron
    if kind == "hash":
        raw.hset(key, "owner", "someone else")
    else:
        raw.set(key, "a token no leader has")
    sup = supervisor(procs=1, modules=["tests.process.flows_cron"])
    sup.wait_workers(1)
    wait_until(
        lambda: key in sup.log() and "ERROR" in sup.log(),
        15,
        message=f"an ERROR naming {key} in the log:\n{sup.log()}",
    )
    assert client.list_runs(workflow="tick", limit=1) == []
    raw.delete(key)
    wait_until(lambda: client.list_runs(workflow="tick", limit=1), 20, message="a cron fire")
    assert "became cron leader" in sup.log()


def test_a_supervisor_starts_beside_a_cron_schedule_of_the_wrong_type(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``cron:next`` of another type (a neighbour's key): the start's registry
    sync raised WRONGTYPE and the supervisor exited with a traceback (every
    supervisor of the prefix whose code has a cron). Now it starts, names the
    key, and its workers run (once the key is removed, the registry duty's check
    writes the cron entries again within a minute: test_registry_loss.py)."""
    key = client.keys.cron_next
    raw.set(key, "a neighbour's value")
    sup = supervisor(procs=1, modules=["tests.process.flows_cron", "tests.process.flows"])
    sup.wait_workers(1)
    assert client.get_workflow_meta("tick") is not None
    assert f"cron key {key} holds a string" in sup.log()
    assert isinstance(client.run_by_name("pid", None).result(timeout=20), int)


def _fires(raw: redis.Redis, client: Client) -> list[int]:
    """The fire times (ms) of the runs of ``tick``, from their idempotency keys."""
    ids = raw.zrange(client.keys.workflow_runs("tick"), 0, -1)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(client.keys.run(text(run_id)), "idempotencyKey")
        keys = pipe.execute()
    return sorted(int(text(k).rsplit(":", 1)[1]) for k in keys if k)


def test_a_leader_paused_past_its_lock_fires_nothing_once_resumed(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The cron leader SIGSTOPped past its lock (default ``cron_lock_ttl_ms``, 10
    s), another supervisor takes over, then SIGCONT: the old leader learns it
    lost the lead and is fenced out; no fire time of an every-second cron fires
    twice, and no more is missed than the take-over's (the lock's TTL plus one
    renewal period at most)."""
    sups = [supervisor(procs=1, modules=["tests.process.flows_cron"]) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(1)
    leader = wait_until(
        lambda: [s for s in sups if "became cron leader" in s.log()], 20, message="a leader"
    )[0]
    other = next(s for s in sups if s is not leader)
    wait_until(lambda: len(_fires(raw, client)) >= 3, 20, message="fires")
    leader.send(signal.SIGSTOP)
    try:
        wait_until(lambda: "became cron leader" in other.log(), 25, message="the take-over")
        taken = len(_fires(raw, client))
        wait_until(lambda: len(_fires(raw, client)) >= taken + 2, 10, message="new fires")
    finally:
        leader.send(signal.SIGCONT)
    wait_until(lambda: "cron leadership lost" in leader.log(), 10, message="the old leader told")
    resumed = len(_fires(raw, client))
    wait_until(lambda: len(_fires(raw, client)) >= resumed + 3, 10, message="fires after")
    fires = _fires(raw, client)
    assert len(fires) == len(set(fires)), "a fire time fired twice"
    assert all(f % 1000 == 0 for f in fires), "a fire off the schedule"
    # (a fire time may also pass while the previous run waits for a child)
    assert max(b - a for a, b in itertools.pairwise(fires)) <= 10_000 + 3_334 + 1_000


def test_a_leader_that_cannot_read_a_cron_entry_leaves_it_to_one_that_can(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, tmp_path: Path
) -> None:
    """Supervisor A leads, and its tzdata lacks the zone of a cron that
    supervisor B (newer tzdata) registers. A removed the entry at every tick
    (the registration duty wrote it back each minute), so it never fired while
    A led. Now A names it in an ERROR line (once a minute) and leaves it; when
    A stops, B leads and fires it."""
    zones = tmp_path / "zoneinfo"
    (zones / ZONE).parent.mkdir(parents=True)
    utc = next(Path(d) / "UTC" for d in zoneinfo.TZPATH if (Path(d) / "UTC").is_file())
    shutil.copy(utc, zones / ZONE)
    a = supervisor(procs=1, modules=["tests.process.flows"])
    a.wait_workers(1)
    wait_until(lambda: "became cron leader" in a.log(), 20, message="A leads")
    tzpath = ":".join([str(zones), *zoneinfo.TZPATH])
    b = supervisor(procs=1, modules=["tests.process.flows_cron_zone"], env={"PYTHONTZPATH": tzpath})
    b.wait_workers(1)
    zoneinfo.reset_tzpath([str(zones), *zoneinfo.TZPATH])  # to name the entry here
    try:
        cid = cron_id_for("zoned", Cron("* * * * * *", timezone=ZONE))
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()
    wait_until(lambda: cid in a.log(), 20, message=f"A naming {cid}:\n{a.log()}")
    # A ticks at least once a second: the entry stays due through several ticks
    wait_until(
        lambda: (
            (score := raw.zscore(client.keys.cron_next, cid)) is None
            or score < client.server_time_ms() - 3_000
        ),
        20,
        message="the entry due for 3 s",
    )
    assert raw.zscore(client.keys.cron_next, cid) is not None, "A removed the entry"
    assert client.list_runs(workflow="zoned", limit=1) == []
    named = [line for line in a.log().splitlines() if cid in line]
    assert len(named) == 1 and "ERROR" in named[0], named
    a.stop()
    wait_until(lambda: "became cron leader" in b.log(), 25, message="B leads")
    fired = wait_until(
        lambda: client.list_runs(workflow="zoned", status="succeeded", limit=1),
        20,
        message="a fire of the entry by B",
    )
    assert fired[0].cron_id == cid


def test_a_cron_fired_at_a_redis_clock_that_was_ahead_fires_again_once_it_is_set_right(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The Redis clock ran a day ahead while the leader fired an every-second cron
    (a server booted with a wrong clock, then set right by NTP; a failover to a
    replica whose clock is behind): its next fire time was a day away, and no
    supervisor, restarted or not, fired it for a day. Now a new leader moves it
    back to the schedule's next fire time and it fires within seconds."""
    cid = cron_id_for("tick", Cron("* * * * * *"))
    first = supervisor(procs=1, modules=["tests.process.flows_cron"])
    wait_until(lambda: _fires(raw, client), 20, message="a first fire")
    first.stop()
    now = client.server_time_ms()
    raw.zadd(client.keys.cron_next, {cid: now + 86_400_000 - now % 1000})
    fired = len(_fires(raw, client))
    sup = supervisor(procs=1, modules=["tests.process.flows_cron"])
    wait_until(lambda: "became cron leader" in sup.log(), 20, message="a leader")
    wait_until(
        lambda: len(_fires(raw, client)) > fired,
        15,
        message=f"a fire after the clock went back:\n{sup.log()}",
    )
    assert max(_fires(raw, client)) < client.server_time_ms() + 2_000
    assert f"cron {cid}: its next fire time was set from a Redis clock that was ahead" in sup.log()
