"""The supervisor's log during a Redis outage (``supervisor/duties``), default
settings. Each pass of the arbiter's duties logged one line per failing duty
("reaper duty failed: Error 111 connecting to ..."): about 14 lines every 10 s
for as long as Redis was down. Now the outage is one line when it starts (the
error's class and the duty), at most one a minute while it lasts, and one
"recovered after N s" line when every duty goes through again; no line holds
the password of the Redis URL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process

PASSWORD = "duty-outage-s3cret"
OUTAGE_S = 20


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer(["--appendonly", "yes"], password=PASSWORD).start()
    yield srv
    srv.cleanup()


@pytest.mark.timeout(180)
def test_a_redis_outage_is_logged_once_then_its_recovery(
    server: RedisServer, tmp_path: Path
) -> None:
    back = RedisServer(
        ["--appendonly", "yes"], data_dir=server.data_dir, port=server.port, password=PASSWORD
    )
    sup = Supervisor(server.url, "dutyout", tmp_path / "supervisor.log", procs=1).start()
    try:
        sup.wait_workers(1)
        time.sleep(2)  # every duty ran once
        before = len(sup.log())
        server.stop()
        time.sleep(OUTAGE_S)
        back.start()
        wait_until(
            lambda: "recovered after" in sup.log()[before:],
            60,
            interval=0.5,
            message="the line saying the duties' outage is over",
        )
        time.sleep(2)
        log = sup.log()[before:]
    finally:
        sup.stop()
        back.stop()
    assert PASSWORD not in sup.log()
    duties = [line for line in log.splitlines() if "duty" in line or "duties" in line]
    assert len(duties) == 2, f"{len(duties)} lines about the duties in a {OUTAGE_S} s outage:\n" + (
        "\n".join(duties)
    )
    assert re.search(r"Redis \S.* while running dut(y|ies) \w+.* \(ConnectionError: ", duties[0]), (
        duties[0]
    )
    # one duty when only it met the outage: while Redis is out of reach the others
    # are not called (a 0.5 s probe first: duties/__init__.py)
    assert re.search(r"while running dut(y|ies) .*: recovered after \d+\.\d s", duties[1]), duties[
        1
    ]
