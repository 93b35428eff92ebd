"""Faults 8 and 9: the cron leader is SIGKILLed at a fire time; two supervisors
whose wall clocks disagree by 10 s (``workload.py``'s clock helper) share leases,
retries and cron."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import redis

from redflow_mp import Client, create_client
from tests.faults import ledger
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.outages import ready_pair
from tests.faults.processes import busy_children
from tests.helpers import text
from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

MODULES = ("tests.faults.workload", "tests.faults.workload_cron")
#: The default cron lock TTL: leadership moves within it when a leader dies.
CRON_LOCK_TTL_S = 10.0
# Child kills may hit one run repeatedly: keep it from failing as a poison pill.
KILL_ARGS = ["--max-run-crashes", "1000"]


def _fires(raw: redis.Redis, prefix: str) -> list[int]:
    """Fire times (ms) of every cron run, from their idempotency keys."""
    tag = "{" + prefix + "}"
    ids = raw.zrange(f"{tag}:workflow-runs:fx-tick", 0, -1)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(f"{tag}:run:{text(run_id)}", "idempotencyKey")
        keys = pipe.execute()
    return sorted(int(k.decode().rsplit(":", 1)[1]) for k in keys if k)


def _leader(sups: list[Supervisor]) -> Supervisor:
    def find() -> Supervisor | None:
        live = [s for s in sups if s.proc is not None and s.proc.poll() is None]
        leaders = [
            s
            for s in live
            if s.log().count("became cron leader") > s.log().count("cron leadership lost")
        ]
        return leaders[0] if len(leaders) == 1 else None

    found = wait_for(find, 20, "exactly one cron leader")
    assert isinstance(found, Supervisor)
    return found


def _stop_schedule(raw: redis.Redis, prefix: str) -> None:
    """No more fires: the cron entries go, and so do the ids the stored metadata
    names (else a supervisor's registry check sees entries lost and writes them
    again, as after a FLUSHALL: supervisor/duties/registry.py)."""
    tag = "{" + prefix + "}"
    for key in raw.scan_iter(match=f"{tag}:workflow:*", count=1000):
        if raw.type(key) == b"hash" and raw.hexists(key, "cronIdsJson"):
            raw.hset(key, "cronIdsJson", "[]")
    for cid in raw.hkeys(f"{tag}:cron:def"):
        raw.zrem(f"{tag}:cron:next", cid)
        raw.hdel(f"{tag}:cron:def", cid)


def _check_fires(fires: list[int]) -> None:
    assert len(fires) == len(set(fires)), "a cron fire time produced two runs"
    assert all(t % 1000 == 0 for t in fires), "a cron run fired off its schedule"


def _kill_leader_at_the_next_fire(
    fx: Faults,
    raw: redis.Redis,
    clock: Client,
    sups: list[Supervisor],
    leader: Supervisor,
    wait_s: float,
) -> tuple[int, float]:
    """SIGKILL the whole ``leader`` group within a few ms of the next fire time
    (on ``clock``'s server time), wait up to ``wait_s`` for a fire after it by the
    new leader, and start a supervisor in its place (in ``sups``): (that fire
    time, seconds from the kill to the new leader's fire)."""
    tag = "{" + fx.prefix + "}"
    due = wait_for(
        lambda: raw.zrange(f"{tag}:cron:next", 0, 0, withscores=True), 10, "the next fire time"
    )
    fire_ms = int(due[0][1])

    def fire_time() -> bool:
        return clock.server_time_ms() >= fire_ms - 2

    def fired_after() -> bool:
        return any(t > fire_ms for t in _fires(raw, fx.prefix))

    wait_for(fire_time, 5, "the fire time", 0.0005)
    t_kill = fx.kill_group(leader)
    sups.remove(leader)
    wait_for(fired_after, wait_s, "a fire by the new leader")
    recovery = time.monotonic() - t_kill
    url = fx.servers[0].url
    sups.append(fx.supervisor(url, procs=2, modules=MODULES))
    sups[-1].wait_workers(2)
    return fire_ms, recovery


def test_cron_leader_killed_at_a_fire_time(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2, modules=MODULES)
    prod = fx.producer(server.url, 300, rate=50).start()
    recoveries = []
    clock = create_client(server.url, prefix=fx.prefix, default=False)
    try:
        for _ in range(2):
            leader = _leader(sups)
            wait_for(lambda: len(_fires(raw, fx.prefix)) >= 2, 20, "cron fires")
            _, recovery = _kill_leader_at_the_next_fire(
                fx, raw, clock, sups, leader, CRON_LOCK_TTL_S + 10
            )
            recoveries.append(recovery)
        prod.wait(60)
    finally:
        clock.close()
    _stop_schedule(raw, fx.prefix)
    fires = _fires(raw, fx.prefix)
    report = fx.finish(
        raw,
        "8. cron leader SIGKILLed at a fire time x2",
        recovery_s=max(recoveries),
        note="kill -> next fire by the new leader (lock TTL 10 s)",
    )
    _check_fires(fires)
    assert report.cron_runs == len(fires) >= 5
    report.assert_ok(all_succeeded=True)
    raw.close()


def test_clock_skew_between_two_supervisors(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    ahead = fx.supervisor(
        server.url, procs=2, modules=MODULES, args=KILL_ARGS, env={"FAULTS_CLOCK_OFFSET_S": "5"}
    )
    ahead.wait_workers(2)
    wait_for(lambda: "became cron leader" in ahead.log(), 10, "the skewed supervisor to lead")
    behind = fx.supervisor(
        server.url, procs=2, modules=MODULES, args=KILL_ARGS, env={"FAULTS_CLOCK_OFFSET_S": "-5"}
    )
    behind.wait_workers(2)
    prod = fx.producer(server.url, 800, rate=100).start()
    # Move runs between the two clocks: kill children of the one that runs ahead.
    for _ in range(4):
        proc, run_id = wait_for(lambda: busy_children(ahead), 20, "a busy child")[0]
        fx.fault("kill", [proc.pid], run=run_id)
        proc.send_signal(signal.SIGKILL)

        def killed(p: psutil.Process = proc) -> bool:
            return not p.is_running() or p.status() == "zombie"

        wait_for(killed, 10, "the kill")
    wait_for(lambda: len(_fires(raw, fx.prefix)) >= 3, 20, "fires led by the skewed leader")
    # Hand leadership to the supervisor that runs behind (drain resigns the lock).
    ahead.send(signal.SIGTERM)
    assert ahead.wait(30) == 0
    handed = server.client()
    count = len(_fires(raw, fx.prefix))
    wait_for(lambda: len(_fires(raw, fx.prefix)) >= count + 3, 20, "fires led by the other one")
    handed.close()
    prod.wait(120)
    _stop_schedule(raw, fx.prefix)
    fires = _fires(raw, fx.prefix)
    report = fx.finish(
        raw,
        "9. clock skew +5 s / -5 s, 2 supervisors",
        recovery_s=None,
        note="4 child kills, leader hand-over",
    )
    _check_fires(fires)
    for sup in (ahead, behind):
        log = sup.log()
        assert "lease expired" not in log and "lease lost" not in log, (
            "a lease expired although no supervisor was cut off: skew broke leases\n" + log[-3000:]
        )
    # get_run_steps lists steps in execution order, whichever clock wrote them.
    order = _step_order(fx)
    client = create_client(server.url, prefix=fx.prefix, default=False)
    try:
        wrong = []
        for run_id, steps in order.items():
            # (a step whose "recorded" line was lost to a kill is left out of both)
            got = [s.name for s in client.get_run_steps(run_id) or [] if s.name in steps]
            if got != steps:
                wrong.append((run_id, got, steps))
        assert not wrong, f"{len(wrong)} runs list their steps out of order: {wrong[:3]}"
    finally:
        client.close()
    report.assert_ok(all_succeeded=True)
    raw.close()


def _step_order(fx: Faults) -> dict[str, list[str]]:
    """Runs that moved between supervisors, with their steps in recorded order."""
    events = sorted(ledger.read_all(fx.ledger_dir), key=lambda ev: ev["mono"])
    order: dict[str, list[str]] = {}
    pids: dict[str, set[int]] = {}
    for ev in events:
        if ev["ev"] == "step-recorded":
            order.setdefault(ev["run"], []).append(ev["step"])
            pids.setdefault(ev["run"], set()).add(ev["pid"])
    return {run: steps for run, steps in order.items() if len(pids[run]) > 1}
