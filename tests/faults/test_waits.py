"""Durable waits under faults (issue 12): runs suspended in sleeps, event waits
and child waits survive SIGKILLs of their processes, of the whole supervisor and
of redis-server, and two supervisors racing to wake them; every one resumes once
its condition holds, exactly once (I9-I11 besides I1-I8)."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.faults import ledger
from tests.faults.harness import WAIT_MODULES, Faults, restart_redis, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

AOF = ("--appendonly", "yes", "--appendfsync", "always")
_KILLS = ("--max-run-crashes", "1000")


def _suspended(raw: redis.Redis, fx: Faults) -> int:
    return int(raw.zcard(f"{{{fx.prefix}}}:runs:status:suspended"))


def _executions(fx: Faults) -> Counter[str]:
    """Handler executions per run, from the ledger."""
    return Counter(
        ev["run"] for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == "handler-start"
    )


def _kills(fx: Faults) -> Counter[str]:
    """Kills the workload fired on itself, by where."""
    return Counter(
        str(ev.get("where"))
        for ev in ledger.read_all(fx.ledger_dir)
        if ev["ev"] == "fault" and ev.get("where")
    )


def _early(fx: Faults) -> list[dict[str, Any]]:
    return [ev for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == "wait-early"]


def test_supervisor_sigkill_with_1000_suspended_runs(fx: Faults) -> None:
    """1,000 runs suspended at once (300 sleeping, 300 awaiting an event, 200
    awaiting a child that itself awaits an event): SIGKILL the whole supervisor,
    restart it; each run resumes when its condition holds, once."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
    sup.wait_workers(2)
    watcher = fx.watch_waits(server.url)
    items: list[tuple[str, Any, str | None]] = []
    items += [("fx-wparent", {"n": 1, "child": "listener"}, None) for _ in range(200)]
    items += [("fx-listener", {"k": 1}, None) for _ in range(300)]
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60)
    # sleepers last, waking 4-8 s after they were enqueued: after the restart
    t0 = time.time()
    sleepers = [("fx-sleeper", {"until": t0 + 4 + (i % 5)}, None) for i in range(300)]
    sprod = fx.producer(server.url, 0, items=sleepers).start()
    sprod.wait(60)
    wait_for(lambda: _suspended(raw, fx) == 1000, 60, "1,000 suspended runs", 0.1)
    t_suspended = time.time() - t0
    assert raw.zcard(f"{{{fx.prefix}}}:leases") == 0  # no process holds any of them
    with watcher.paused():
        fx.kill_group(sup)
        assert _suspended(raw, fx) == 1000
        sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
        sup.wait_workers(2)
    t_up = time.monotonic()
    tag = f"{{{fx.prefix}}}"
    listeners = [
        rid.decode()
        for rid in raw.zrange(f"{tag}:runs:status:suspended", 0, -1)
        if raw.hget(f"{tag}:run:{rid.decode()}", "workflow") == b"fx-listener"
    ]
    assert len(listeners) == 500
    snd = fx.sender(server.url)
    for rid in listeners:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60)
    assert snd.sent == 500 and not snd.refused
    settled = fx.settle(raw, 90)
    recovery = time.monotonic() - t_up
    execs = _executions(fx)
    report = fx.finish(
        raw,
        "W2. SIGKILL supervisor, 1,000 suspended runs",
        recovery_s=recovery,
        note=f"restart -> all 1,000 finished (sleepers due 4-8 s after enqueue; all "
        f"suspended {t_suspended:.1f} s after it)",
    )
    report.assert_ok(all_succeeded=True)
    assert settled
    twice = {rid: n for rid, n in execs.items() if n != 2}
    assert not twice, f"runs not executed exactly twice (suspend + one resume): {twice}"
    assert report.events_sent == 500 and report.events_consumed == 500
    assert not _early(fx), _early(fx)[:5]
    raw.close()
