"""A run in progress across a short Redis outage keeps its lease once Redis is
back (``supervisor/duties/__init__.py``: while Redis is out of reach the duties
wait for a 0.5 s probe; the lease backstop among them must not lapse a live
child's lease, nor the reaper take its run, once Redis answers again).

Default settings (``lease_ms`` included): a 20 s handler, the server stopped
(SIGSTOP) 3 s in the middle. The run must succeed once: one execution, one
attempt, no crash charged, nothing reaped. No wall-clock bound."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from redflow_mp import create_client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.process.test_putback_stall import _stopped
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

HANDLER_S = 20.0
OUTAGE_S = 3.0


def test_a_run_across_a_short_outage_keeps_its_lease_and_runs_once(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "leasekept"
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=2).start()
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        sup.wait_workers(2)
        handle = flows.counted_sleep.run(HANDLER_S, client=client)
        counter = f"{client.keys.tag}:ledger:counted-sleep"
        wait_until(lambda: client.redis.get(counter) == b"1", 60, message="started")
        time.sleep(2.0)  # the scenario: the outage begins a little into the handler
        with _stopped(server):
            time.sleep(OUTAGE_S)  # the scenario's outage length, not a bound
        pid = handle.result(timeout=120)
        assert pid in {p.pid for p in sup.workers()}, sup.log()[-3000:]
        # a lease that lapsed once Redis was back: the reaper re-queues the run
        # and another child executes it again (count 2, a second attempt or a crash)
        time.sleep(1.0)  # a duplicate started late would show here
        assert client.redis.get(counter) == b"1", (
            f"the run was executed {client.redis.get(counter)!r} times\n{sup.log()[-3000:]}"
        )
        state = client.get_run(handle.id)
        assert state is not None and state.status == "succeeded", state
        assert state.attempt == 1 and state.crash_count == 0, state
        sup.send(signal.SIGTERM)
        assert sup.wait(60) == 0, sup.log()[-3000:]
    finally:
        client.close()
        sup.stop()
