"""What a draining supervisor still does (SPEC §5: TERM = stop claiming, let the
running handlers finish). It stops leading at once: no cron fires after the
drain began and the cron leader lock is handed back, so another supervisor takes
cron over within a tick. What protects runs goes on until the last child left:
the lease backstop of its children's runs and the reaper (runs of dead workers
anywhere go back to the queue).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from redflow_mp import Client, create_client
from redflow_supervisor.status import list_supervisors
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

#: The parent's lines for a lead it could not hand back (Redis out of reach).
_NOT_RELEASED = (
    "could not release the cron leader lock",
    "cron leader lock not released (Redis out of reach)",
)


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


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer(["--appendonly", "yes"]).start()
    yield srv
    srv.cleanup()


def test_a_drain_that_could_not_hand_the_lead_back_leads_no_more(
    server: RedisServer, tmp_path: Path
) -> None:
    """TERM while Redis is down: the lock's release fails (``could not release
    the cron leader lock``). Before, the draining supervisor still took itself
    for the leader: it said so in ``redflow supervisors`` (a second leader once
    another took the expired lock) and went on with the leader's sweeps
    (retention, relist, cascades) for the rest of the drain."""
    prefix = "lead"
    back = RedisServer(["--appendonly", "yes"], data_dir=server.data_dir, port=server.port)
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=1).start()
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        sup.wait_workers(1)
        wait_until(lambda: any(s.leader for s in list_supervisors(client)), 10, message="lead")
        handle = flows.sleepy.run(12.0, client=client)
        wait_until(lambda: client.redis.get(f"{client.keys.tag}:sleepy-started"), 20, message="run")
        server.stop()  # data kept in its append-only file
        sup.send(signal.SIGTERM)
        # the release failed, or was not tried: a duty had found Redis out of reach
        # first (the schedule's gate armed, the probe unanswered)
        wait_until(lambda: any(m in sup.log() for m in _NOT_RELEASED), 20, message="release")
        back.start()

        def draining() -> list[tuple[str, bool]]:
            try:
                found = [(s.mode, s.leader) for s in list_supervisors(client)]
            except redis.ConnectionError:
                return []
            return found if found and found[0][0] == "draining" else []

        assert wait_until(draining, 20, message="a status written while draining") == [
            ("draining", False)
        ], sup.log()
        assert sup.wait(timeout=40) == 0, sup.log()
        assert handle.result(timeout=10)["slept"] == 12.0
    finally:
        client.close()
        sup.stop()
        back.stop()
