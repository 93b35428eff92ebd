"""What a draining supervisor still does (SPEC §5: TERM = stop claiming, let the
running handlers finish). It stops leading at once: no cron fires after the
drain began and the cron leader lock is handed back, so another supervisor takes
cron over within a tick. What protects runs goes on until the last child left:
the lease backstop of its children's runs and the reaper (runs of dead workers
anywhere go back to the queue).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


def test_a_draining_supervisor_fires_no_cron_and_hands_the_lead_back(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, modules=("tests.process.flows", "tests.process.flows_cron"))
    sup.wait_workers(1)
    wait_until(lambda: "cron fired run" in sup.log(), 20, message="a first cron fire")
    lock = client.keys.lock_cron
    assert raw.exists(lock), "the leader holds no lock"
    handle = flows.sleepy.run(3.0, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    sup.send(signal.SIGTERM)
    wait_until(lambda: "draining: waiting" in sup.log(), 10, message="the drain")
    # the lead is handed back with the drain's start, not at exit
    wait_until(lambda: not raw.exists(lock), 2, message="the lock handed back")
    assert sup.wait(timeout=30) == 0
    assert handle.result(timeout=5)["slept"] == 3.0
    log = sup.log()
    after = log[log.index("draining: waiting") :]
    assert "cron fired run" not in after, after
