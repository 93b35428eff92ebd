"""Faults 4, 5 and 7: Redis itself fails.

4. redis-server is SIGKILLed mid-workload and restarted (AOF, appendfsync always,
   same data dir and port): supervisors and clients reconnect with backoff, never
   crash, and nothing acknowledged is lost.
5. Redis stalls: CLIENT PAUSE WRITE, then DEBUG SLEEP, each shorter than the
   lease; then a DEBUG SLEEP longer than the lease, which nobody could renew
   through: no run is taken back from its live worker, no step runs again.
7. Redis runs out of memory (noeviction): enqueue fails with a clear error,
   running runs are not corrupted, and once memory is raised everything completes.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.outages import ready_pair, redis_outage
from tests.faults.processes import busy_children
from tests.helpers import command

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

AOF = ("--appendonly", "yes", "--appendfsync", "always")


def _alive(fx: Faults) -> None:
    """Supervisors and their children ride Redis faults out: nothing exits or crashes."""
    fx.assert_no_crash()


def test_redis_killed_and_restarted_with_aof(fx: Faults) -> None:
    server = fx.redis(*AOF)
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 1000, rate=100).start()
    recoveries = []
    # One outage longer than the (default, 5 s) lease, one much shorter than it,
    # one in between.
    for down_for in (6.0, 0.5, 2.0):
        wait_for(lambda: busy_children(sups[0]) or busy_children(sups[1]), 20, "busy children")
        raw, recovery = redis_outage(fx, server, prog, raw, down_for)
        recoveries.append(recovery)
        _alive(fx)
    prod.wait(180)
    _alive(fx)
    fx.finish_ok(
        raw,
        "4. redis-server SIGKILL + restart (AOF): down 6 s, 0.5 s, 2 s",
        recovery_s=max(recoveries),
        note="restart -> first run finished",
        settle_timeout=90,
    )
    raw.close()


def test_redis_outage_shorter_than_the_lease(fx: Faults) -> None:
    """An outage (1.5 s) well inside the lease (5 s): no lease expires, so whatever
    the workers decide during the outage is applied when Redis is back. A step
    write that could not reach Redis must not turn into a failed run."""
    server = fx.redis(*AOF)
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2)  # the default 5 s lease
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 500, rate=100).start()
    recoveries = []
    for _ in range(2):
        wait_for(
            lambda: len(busy_children(sups[0]) + busy_children(sups[1])) >= 3,
            20,
            "three busy children",
        )
        raw, recovery = redis_outage(fx, server, prog, raw, 1.5)
        recoveries.append(recovery)
    prod.wait(120)
    _alive(fx)
    fx.finish_ok(
        raw,
        "4b. redis-server down 1.5 s, inside the 5 s lease x2",
        recovery_s=max(recoveries),
        note="restart -> first run finished",
    )
    raw.close()


def test_redis_stalls_client_pause_and_debug_sleep(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 800, rate=100).start()
    recoveries = []
    wait_for(lambda: busy_children(sups[0]), 20, "busy children")
    fx.fault("pause", seconds=2.5)
    command(raw, "CLIENT", "PAUSE", 2500, "WRITE")
    t_end = time.monotonic() + 2.5
    wait_for(lambda: time.monotonic() >= t_end, 5, "the end of the pause")
    wait_for(lambda: prog.first_progress_after(t_end) is not None, 60, "progress after the pause")
    recoveries.append(prog.first_progress_after(t_end) or 0.0)
    wait_for(lambda: busy_children(sups[1]), 20, "busy children")
    sleeper = redis.Redis.from_url(server.url)
    fx.fault("debug-sleep", seconds=2.5)
    command(sleeper, "DEBUG", "SLEEP", 2.5)  # the whole server stops for 2.5 s
    sleeper.close()
    t_end = time.monotonic()
    wait_for(lambda: prog.first_progress_after(t_end) is not None, 60, "progress after the sleep")
    recoveries.append(prog.first_progress_after(t_end) or 0.0)
    prod.wait(120)
    _alive(fx)
    fx.finish_ok(
        raw,
        "5. CLIENT PAUSE WRITE 2.5 s + DEBUG SLEEP 2.5 s",
        recovery_s=max(recoveries),
        note="stall end -> first run finished",
    )
    raw.close()


def test_a_redis_stall_longer_than_the_lease_takes_no_run_from_its_live_worker(
    fx: Faults,
) -> None:
    """The whole server stops for 7 s (the default lease is 5 s): when it answers
    again every lease has expired on its clock, but only because nobody could
    renew. The reapers hold off a lease after the gap, the workers renew their
    expired (not reaped) leases and go on: no handler is fenced, no step runs twice."""
    server = fx.redis()
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 600, rate=100).start()
    wait_for(lambda: busy_children(sups[0]) and busy_children(sups[1]), 20, "busy children")
    sleeper = redis.Redis.from_url(server.url, socket_timeout=30)
    fx.fault("debug-sleep", seconds=7)
    command(sleeper, "DEBUG", "SLEEP", 7)  # past the 5 s lease
    sleeper.close()
    t_end = time.monotonic()
    wait_for(lambda: prog.first_progress_after(t_end) is not None, 60, "progress after the sleep")
    prod.wait(120)
    _alive(fx)
    report = fx.finish_ok(
        raw,
        "5b. DEBUG SLEEP 7 s (past the lease)",
        recovery_s=prog.first_progress_after(t_end) or 0.0,
        note="stall end -> first run finished",
    )
    assert report.fenced_executions == 0, report.summary()
    assert report.inflight_reexecutions == 0, report.summary()
    raw.close()


def test_redis_out_of_memory(fx: Faults) -> None:
    server = fx.redis("--maxmemory-policy", "noeviction")
    raw = server.client()
    ready_pair(fx, server.url, procs=2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 600, rate=100).start()
    wait_for(lambda: len(prod.ids) >= 100, 30, "100 runs enqueued")
    used = int(raw.info("memory")["used_memory"])
    fx.fault("oom")
    raw.config_set("maxmemory", used)  # every write that needs memory is refused now
    t_oom = time.monotonic()
    wait_for(lambda: any("out of memory" in e for e in prod.errors), 20, "an OOM error at enqueue")
    wait_for(lambda: time.monotonic() - t_oom >= 3.0, 10, "3 s of OOM")
    raw.config_set("maxmemory", 0)
    t_ok = fx.fault("oom-end")
    wait_for(lambda: prog.first_progress_after(t_ok) is not None, 60, "progress after OOM")
    recovery = prog.first_progress_after(t_ok)
    prod.wait(120)
    _alive(fx)
    oom = [e for e in prod.errors if "out of memory" in e]
    assert oom and "refused and nothing was changed" in oom[0], prod.errors[:3]
    fx.finish_ok(
        raw,
        "7. Redis OOM 3 s (noeviction)",
        recovery_s=recovery,
        note="memory raised -> first run finished",
    )
    raw.close()
