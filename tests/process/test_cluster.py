"""Two supervisors on one prefix: a global max_concurrency and one cron leader."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda ev: (ev[0], ev[1])
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_max_concurrency_is_global_across_two_supervisors(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    a = supervisor(procs=4)
    b = supervisor(procs=4)
    a.wait_workers(4)
    b.wait_workers(4)
    handles = [flows.limited.run(None, client=client) for _ in range(40)]
    for h in handles:
        h.result(timeout=60)
    spans = [
        (float(a), float(b))
        for a, b in (json.loads(x) for x in raw.lrange(f"{client.keys.tag}:spans", 0, -1))
    ]
    assert len(spans) == 40
    assert _max_overlap(spans) == 2
    assert raw.scard(client.keys.wf_running("limited")) == 0
    assert raw.zcard(client.keys.wf_waiting("limited")) == 0


def _cron_fire_times(client: Client) -> list[int]:
    runs = client.list_runs(workflow="tick", limit=10_000)
    keys = [r.idempotency_key for r in runs]
    assert all(k is not None and k.startswith("cron:") for k in keys)
    return [int(str(k).rsplit(":", 1)[1]) for k in keys]


def _leader_of(sups: list[Supervisor]) -> Supervisor:
    def find() -> Supervisor | None:
        leaders = [s for s in sups if "became cron leader" in s.log()]
        return leaders[0] if len(leaders) == 1 else None

    found = wait_until(find, 20, message="one cron leader")
    assert isinstance(found, Supervisor)
    return found


def test_cron_leader_failover_without_a_duplicate_fire(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    args = ["--cron-lock-ttl-ms", "1500"]
    a = supervisor(procs=1, modules=["tests.process.flows_cron"], args=args)
    b = supervisor(procs=1, modules=["tests.process.flows_cron"], args=args)
    a.wait_workers(1)
    b.wait_workers(1)
    leader = _leader_of([a, b])
    follower = b if leader is a else a
    wait_until(lambda: len(_cron_fire_times(client)) >= 3, 20, message="three cron fires")

    leader.kill_group(signal.SIGKILL)
    leader.wait(timeout=10)
    killed_ms = client.server_time_ms()
    wait_until(lambda: "became cron leader" in follower.log(), 10, message="failover")
    wait_until(
        lambda: sum(t > killed_ms for t in _cron_fire_times(client)) >= 3,
        20,
        message="fires after failover",
    )

    times = _cron_fire_times(client)
    assert len(times) == len(set(times)), "a fire time produced two runs"
    after = sorted(t for t in times if t > killed_ms)
    assert after[0] - killed_ms < 1500 + 2000, "leadership did not move within the lock TTL"
    # every fire time is on a whole second and at most one run per second
    assert all(t % 1000 == 0 for t in times)
    assert re.search(r"became cron leader", follower.log())
    time.sleep(0)  # nothing else to wait for: the checks above are final
