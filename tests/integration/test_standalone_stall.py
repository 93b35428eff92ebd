"""A standalone worker (``Worker(maintenance=True)``, no supervisor) reaps expired
leases through the same stall guard as a supervisor's reaper: after a stall of
redis-server longer than a lease, which kept every holder from renewing, it
waits a lease before reaping, time for the live holders to renew. It reaped at
once and executed a live holder's run a second time.

The holder is modelled by the test (a claim with its own token, renewed every
second, except while the server is stopped and for one second after: its next
beat), so that which of the two calls reaches the resumed server first is not
left to chance. Default lease (5 s); the server is stopped for 7 s."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.ids import new_token
from redflow_mp.maintenance import StallGuard
from tests.helpers import WorkerPool, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(90)

LEASE_MS = 5000  # the default
STALL_S = 7.0  # longer than the lease


def test_a_standalone_worker_leaves_a_live_holders_run_after_a_redis_stall(
    server: RedisServer, registry: Registry
) -> None:
    ran: list[str] = []

    @define_workflow("held-elsewhere", queue="stall", registry=registry)
    def held(ctx: Context[Any]) -> str:
        ran.append(ctx.run.id)
        return "ran here"

    client = create_client(server.url, prefix="stall", registry=registry, default=False)
    holder = create_client(server.url, prefix="stall", registry=registry, default=False)
    pool = WorkerPool(client)
    renewing = threading.Event()
    done = threading.Event()
    kept: list[bool] = []

    def beat() -> None:  # the holder's heartbeat
        while not done.wait(1.0):
            if renewing.is_set():
                [(held_now, _cancel)] = holder.renew(LEASE_MS, [(run_id, token)])
                kept.append(held_now)

    try:
        run_id = client.run_by_name("held-elsewhere", None).id
        token = new_token()
        _r, claimed = holder.scripts.claim(("stall",), LEASE_MS, token)
        assert claimed is not None and claimed.id == run_id
        renewing.set()
        beater = threading.Thread(target=beat, daemon=True)
        beater.start()
        pool.start(queues=["stall"], lease_ms=LEASE_MS)  # maintenance=True
        time.sleep(1.0)  # its reaping goes on: the guard knows the server
        assert server.proc is not None
        renewing.clear()
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(STALL_S)
        os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(1.0)  # the holder's next beat
        renewing.set()
        time.sleep(LEASE_MS / 1000.0 + 2.0)  # past the guard's hold
        # before: ['<run id>'] (reaped at the end of the stall, executed here again)
        assert ran == [], "the run of a live holder was executed again"
        assert kept and all(kept), kept
        state = client.get_run(run_id)
        assert state is not None and state.status == "running", state
    finally:
        done.set()
        pool.stop_all()
        holder.close()
        client.close()


def test_a_long_run_is_not_taken_for_a_stall(
    server: RedisServer,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the worker executes a run, the lease keeper's thread goes on reaping:
    the guard sees no gap, neither holds reaping nor says the process stopped.

    Counted from the guard's first reap: a first reap later than the gap after the
    guard was made is a start-up that stood, and holds by design (StallGuard), as
    it did at a load average of 20 ('the first look at the leases came 2147 ms
    after this process set it up'); the run starts after it."""
    reaps: list[int] = []
    reap = StallGuard.reap

    def counted(self: StallGuard, *args: Any, **kwargs: Any) -> Any:
        try:
            return reap(self, *args, **kwargs)
        finally:
            reaps.append(1)

    monkeypatch.setattr(StallGuard, "reap", counted)

    @define_workflow("long-here", queue="stall", registry=registry)
    def long_run(ctx: Context[Any]) -> str:
        time.sleep(3.0)  # past the guard's gap (lease / 3)
        return "done"

    client = create_client(server.url, prefix="stall", registry=registry, default=False)
    pool = WorkerPool(client)
    try:
        pool.start(queues=["stall"], lease_ms=LEASE_MS)
        with caplog.at_level("WARNING", "redflow_mp.maintenance"):
            wait_until(lambda: reaps, 30, message="the guard's first reap")
            caplog.clear()
            assert client.run_by_name("long-here", None).result(timeout=30) == "done"
            time.sleep(0.5)  # the idle loop's next reaping
        held = [r.getMessage() for r in caplog.records if "not reaped" in r.getMessage()]
        assert held == []
    finally:
        pool.stop_all()
        client.close()
