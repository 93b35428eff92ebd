"""A signal's handling calls no Redis while Redis is out of reach
(``supervisor/arbiterstate.py``: the bells that wake idle children, and the
cron leader's resignation, are best effort; while the duties find Redis out of
reach and a 0.5 s probe finds it still so, they are skipped).

Before, with ``redis-server`` stopped (SIGSTOP), a TTOU (and a TERM's drain)
rang the bells of every shard with the client's socket timeouts: the loop
blocked about 20 s per shard before the slot was removed, signals and exits
waiting meanwhile. Default settings; the bound is the contract (less than one
socket timeout, against two per shard before)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from redflow_mp import create_client
from redflow_mp.transport import SOCKET_TIMEOUT
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.process.test_putback_stall import _stopped
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

#: What the parent logs once a duty found Redis out of reach.
DOWN = "Redis not answering while running duty"


def test_a_ttou_during_an_outage_is_not_held_behind_the_bells(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "sigout"
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=2).start()
    try:
        sup.wait_workers(2)
        client = create_client(server.url, prefix=prefix, default=False)
        try:
            for _ in range(4):  # both ready
                flows.pid.run(None, client=client).result(timeout=60)
        finally:
            client.close()
        with _stopped(server):
            wait_until(lambda: DOWN in sup.log(), 120, message=f"down\n{sup.log()}")
            sent = time.monotonic()
            sup.send(signal.SIGTTOU)
            wait_until(
                lambda: "TTOU: 1 child" in sup.log(),
                120,
                interval=0.02,
                message=f"ttou\n{sup.log()}",
            )
            late = time.monotonic() - sent
            assert late < SOCKET_TIMEOUT, (
                f"the TTOU took {late:.1f} s during the outage: its handling waited "
                f"for Redis\n{sup.log()[-3000:]}"
            )
        sup.send(signal.SIGTERM)
        assert sup.wait(90) == 0, sup.log()[-3000:]
    finally:
        sup.stop()
