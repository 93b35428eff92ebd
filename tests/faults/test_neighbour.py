"""A hostile (or merely careless) neighbour on the same Redis server: another
program with its own keys runs long Lua scripts, flushes the script cache, kills
connections. Supervisors run with their DEFAULT settings (lease 5 s, reaper
500 ms, restart backoff 1 s): a neighbour costs time, never a run, a crash of a
child or a step executed twice.
"""

from __future__ import annotations

import threading

import pytest
import redis

from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import busy_children

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

# A script of the neighbour's that spins for ARGV[1] ms of server time, touching no key.
_SPIN = """
local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1
"""


def test_a_neighbours_long_script_costs_no_run_and_crashes_no_child(fx: Faults) -> None:
    """While a script runs past ``busy-reply-threshold`` (lua-time-limit), Redis
    answers every other command with ``BUSY``: nothing is applied, so it is
    trouble that passes, like an out-of-memory refusal. It used to surface as a
    plain ResponseError: the children's claims raised it (both children crashed),
    a step write raised it inside a handler (its run failed for good), and
    ``enqueue`` raised an unclassified error. The threshold is lowered to 100 ms
    so that 1.5 s scripts (inside the 5 s lease) produce 1.4 s of BUSY replies."""
    server = fx.redis()
    raw = server.client()
    raw.config_set("lua-time-limit", 100)
    sup = fx.supervisor(server.url, procs=2)
    sup.wait_workers(2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 600, rate=100).start()
    neighbour = redis.Redis.from_url(server.url, socket_timeout=30)
    for _ in range(3):
        wait_for(lambda: len(busy_children(sup)) == 2, 30, "two busy children")
        fx.fault("busy-script", seconds=1.5)
        neighbour.eval(_SPIN, 0, 1500)
        t_end = fx.fault("busy-script-done")

        def resumed(t: float = t_end) -> bool:
            return prog.first_progress_after(t) is not None

        wait_for(resumed, 60, "progress")
    neighbour.close()
    prod.wait(120)
    fx.assert_no_crash()
    fx.finish_ok(raw, "neighbour: 3 Lua scripts of 1.5 s (BUSY replies), defaults", recovery_s=None)
    assert "BUSY" not in "\n".join(prod.errors) or all(
        e.startswith("RedisBusyError") for e in prod.errors
    ), prod.errors[:3]
    raw.close()


def test_a_neighbour_flushing_the_script_cache_in_a_loop_costs_no_run(fx: Faults) -> None:
    """SCRIPT FLUSH every 5 ms while runs flow (defaults): every reload is
    raced by the next flush; enqueues, claims, steps and finishes all go through."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2)
    sup.wait_workers(2)
    stop = threading.Event()

    def flush_loop() -> None:
        neighbour = redis.Redis.from_url(server.url)
        try:
            while not stop.wait(0.005):
                neighbour.script_flush()
        finally:
            neighbour.close()

    flusher = threading.Thread(target=flush_loop, name="neighbour-flush", daemon=True)
    flusher.start()
    try:
        prod = fx.producer(server.url, 300, rate=100).start()
        prod.wait(120)
        assert not prod.errors, prod.errors[:3]
        fx.settle(raw, 60)
    finally:
        stop.set()
        flusher.join(5)
    fx.assert_no_crash()
    report = fx.finish(raw, "neighbour: SCRIPT FLUSH every 5 ms, defaults", recovery_s=None)
    report.assert_ok(all_succeeded=True)
    raw.close()
