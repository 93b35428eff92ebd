"""Steps the fault cases share: two supervisors started and ready, and a Redis
outage (SIGKILL, down for a while, restart on the same data) followed by the
wait for the first run that finishes after it."""

from __future__ import annotations

from typing import Any

import redis

from tests.faults.drivers import Progress, wait_for
from tests.faults.harness import Faults
from tests.faults.processes import restart_redis
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer

__all__ = ["ready_pair", "redis_outage"]


def ready_pair(fx: Faults, url: str, **options: Any) -> list[Supervisor]:
    """Two supervisors of the fault workload (``fx.supervisor(url, **options)``:
    two children each unless ``procs`` says otherwise), each with every child up."""
    sups = [fx.supervisor(url, **options) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(options.get("procs", 2))
    return sups


def redis_outage(
    fx: Faults, server: RedisServer, prog: Progress, raw: redis.Redis, down_for: float
) -> tuple[redis.Redis, float]:
    """Close ``raw``, SIGKILL ``server`` (a ``redis-kill`` fault of ``down_for`` s in
    the ledger), restart it after ``down_for`` s and wait (60 s at most) for a run
    to finish after the restart. Returns a new client of the server and the
    recovery time (restart -> first run finished, s)."""
    raw.close()
    fx.fault("redis-kill", seconds=down_for)
    _, t_up = restart_redis(server, down_for)
    fresh = server.client()

    def progressed() -> bool:
        return prog.first_progress_after(t_up) is not None

    wait_for(progressed, 60, "progress after restart")
    return fresh, prog.first_progress_after(t_up) or 0.0
