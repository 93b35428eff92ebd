"""Redis down for more than a minute while a run is in flight, with default
settings: the parent does not spin (its CPU time over the outage is measured),
the run finishes once Redis is back, and the log names the cause right: Redis
out of reach, not "this process did not run" (SIGSTOP, a debugger).

Before, the reaper's stall guard measured the gap since the reaper's own last
call, and during an outage those are seconds apart: each failing command
retries for ~0.7 s in every duty that is due, and once the outage passed a
minute the reaper's tick failed at its first call (listing the served queues
again, every 60 s) and never reached the reap. It took the outage for the
process having been stopped (``this process did not run for 11285 ms``, 4326 ms
with two such tests at once). Any failed duty call now counts as the process
running.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from redflow_mp import create_client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

OUTAGE_S = 70  # past the reaper's 60 s listing of the served queues (ANNOUNCE_EVERY)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
    yield srv
    srv.cleanup()


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_a_long_redis_outage_costs_the_parent_no_cpu_and_is_named_as_such(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "outage"
    back = RedisServer(
        ["--appendonly", "yes", "--appendfsync", "always"],
        data_dir=server.data_dir,
        port=server.port,
    )
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=2).start()
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        sup.wait_workers(2)
        handle = flows.sleepy.run(OUTAGE_S + 10, client=client)
        wait_until(lambda: client.redis.get(f"{client.keys.tag}:sleepy-started"), 20, message="run")
        cpu_before = _cpu(sup.pid)
        server.stop()  # data kept in its append-only file
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:  # the outage lasts OUTAGE_S: nothing to await
            assert sup.proc is not None and sup.proc.poll() is None, sup.log()
            time.sleep(1)
        used = _cpu(sup.pid) - cpu_before
        back.start()
        assert handle.result(timeout=60)["slept"] == OUTAGE_S + 10, sup.log()
        log = sup.log()
        assert used < 3.0, f"the parent used {used:.2f} s of CPU in a {OUTAGE_S} s outage"
        assert "this process did not run for" not in log, log
        assert "Redis was out of reach for longer than" in log, log
    finally:
        client.close()
        sup.stop()
        back.stop()
