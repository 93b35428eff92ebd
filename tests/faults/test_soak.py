"""The opt-in soak: the CI cases' faults in rotation over a long workload.

    .venv/bin/python -m pytest tests/faults -m soak -p no:cacheprovider -n 0 -s

``FAULTS_SOAK_RUNS`` (default 20000) sets the number of runs; at 100 runs/s the
default takes about 4 minutes and injects about 100 faults;
``FAULTS_SOAK_EXTRA_STOPS=n`` adds ``n`` more SIGSTOPs to the rotation's seven
kinds (each waits for the takeover: ``takeover.py``). Not selected by ``-m
faults`` nor by a plain ``pytest`` run (``conftest.py`` deselects it unless
``-m soak`` is given).
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import busy_children, restart_redis
from tests.faults.proxy import Proxy
from tests.faults.takeover import Takeover, live_leases

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

AOF = ("--appendonly", "yes", "--appendfsync", "always")


def test_soak_all_faults_in_rotation(fx: Faults) -> None:
    runs = int(os.environ.get("FAULTS_SOAK_RUNS", "20000"))
    server = fx.redis(*AOF)
    raw = server.client()
    proxy = Proxy(server.port).start()
    try:
        a = fx.supervisor(proxy.url(server.url), procs=2, args=["--max-run-crashes", "1000"])
        b = fx.supervisor(server.url, procs=2, args=["--max-run-crashes", "1000"])
        a.wait_workers(2)
        b.wait_workers(2)
        prod = fx.producer(server.url, runs, rate=100).start()
        rng = random.Random(11)
        faults: dict[str, int] = {}
        takeovers: list[float] = []
        while len(prod.ids) < runs:
            kinds = ["child", "child", "stop", "cut", "blackhole", "redis", "restart"]
            kinds += ["stop"] * int(os.environ.get("FAULTS_SOAK_EXTRA_STOPS", "0"))
            kind = rng.choice(kinds)
            faults[kind] = faults.get(kind, 0) + 1
            if kind == "child":
                sup = rng.choice([a, b])
                busy = busy_children(sup)
                if busy:
                    proc, run_id = rng.choice(busy)
                    fx.fault("kill", [proc.pid], run=run_id)
                    proc.send_signal(signal.SIGKILL)
            elif kind == "stop":
                pids = fx.group_pids(b)
                fx.stop(pids, group=b.pid)
                takeover = Takeover(raw, fx.prefix, live_leases(raw, fx.prefix))
                try:
                    wait_for(takeover.done, 30, "takeover")
                    takeovers.append(time.monotonic() - takeover.t0)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{takeover.describe()}") from None
                fx.fault("cont", pids)
                os.killpg(b.pid, signal.SIGCONT)
            elif kind in ("cut", "blackhole"):
                t0 = time.monotonic()
                proxy.cut() if kind == "cut" else proxy.blackhole()
                fx.fault(kind)

                def outage_over(t: float = t0) -> bool:
                    return time.monotonic() - t > rng.uniform(0.3, 3)

                wait_for(outage_over, 5, "outage")
                proxy.restore(heal=True)
                fx.fault(f"{kind}-end")
            elif kind == "redis":
                raw.close()
                down_for = rng.uniform(0.2, 2.5)
                fx.fault("redis-kill", seconds=down_for)
                restart_redis(server, down_for)
                raw = server.client()
            else:
                fx.kill_group(b)
                b = fx.supervisor(server.url, procs=2, args=["--max-run-crashes", "1000"])
                b.wait_workers(2)
            pause = time.monotonic() + rng.uniform(1.0, 3.0)

            def paused(p: float = pause) -> bool:
                return time.monotonic() >= p

            wait_for(paused, 5, "the next fault")
        prod.wait(600)
        report = fx.finish(
            raw,
            f"soak: {sum(faults.values())} faults in rotation",
            recovery_s=None,
            settle_timeout=300,
            note=f"{faults}; takeover max {max(takeovers, default=0):.2f} s",
        )
    finally:
        proxy.stop()
    report.assert_ok(all_succeeded=True)
    raw.close()
