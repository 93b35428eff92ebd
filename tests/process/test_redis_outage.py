"""A Redis outage of more than a minute while a child has to start (it crashed,
was recycled or OOM-killed, a HUP replaced it), with default settings. The new
child cannot reach Redis; it used to give up after 10 s as a start failure, so
after five of them (about 80 s with the defaults) the supervisor went FATAL and
exited 1 in the middle of an outage it would otherwise have ridden out (and
under systemd, each restart then failed to connect until the start limit gave
up on the unit). A child now waits for Redis before reporting ready: an outage
is not a start failure. The test allows two start failures instead of five
(FATAL after ~21 s before the fix), to show the same in a third of the time."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redflow_mp import create_client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process

OUTAGE_S = 30  # past the ~21 s two start failures took (10 s each, 1 s backoff)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer(["--appendonly", "yes"]).start()
    yield srv
    srv.cleanup()


@pytest.mark.timeout(240)
def test_a_child_started_during_a_long_redis_outage_waits_instead_of_going_fatal(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "outage"
    back = RedisServer(["--appendonly", "yes"], data_dir=server.data_dir, port=server.port)
    sup = Supervisor(
        server.url, prefix, tmp_path / "supervisor.log", procs=1, args=["--max-start-failures", "2"]
    ).start()
    try:
        (child,) = sup.wait_workers(1)
        server.stop()  # data kept in its append-only file
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            assert sup.proc is not None
            code = sup.proc.poll()
            assert code is None, f"the supervisor exited ({code}) during the outage:\n{sup.log()}"
            time.sleep(1)
        assert "FATAL" not in sup.log(), sup.log()
        back.start()
        client = create_client(server.url, prefix=prefix, default=False)
        try:
            sup.wait_workers(1, timeout=30)
            wait_until(
                lambda: flows.pid.run(None, client=client).result(timeout=30),
                60,
                interval=1,
                message="a run served after the outage",
            )
        finally:
            client.close()
    finally:
        sup.stop()
        back.stop()
