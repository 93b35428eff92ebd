"""The soak's takeover check (``takeover.py``) on states built with the product's
scripts: the stopped supervisor's run is done with only once it is leased again;
the running supervisor's run is done with once it moves on by itself (a retry
behind the backlog, scheduled or queued), which the check once waited for as
if it were stranded. Runs in the plain test run (no supervisor started)."""

from __future__ import annotations

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.faults.takeover import Takeover, live_leases
from tests.faults.workload import QUEUE
from tests.helpers import wait_until
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(30)


def _claim(client: Client) -> tuple[str, str]:
    token = new_token()
    _, got = client.scripts.claim((QUEUE,), 60_000, token)
    assert got is not None
    return got.id, token


@pytest.mark.parametrize("delay_ms", [60_000, 0])
def test_a_retry_of_the_running_supervisor_is_no_stranded_run(
    raw: redis.Redis, client: Client, prefix: str, delay_ms: int
) -> None:
    enq = Enq(client)
    for _ in range(2):
        enq(workflow="wf", queue=QUEUE, max_attempts=3, max_concurrency=10)
    stopped, stopped_token = _claim(client)
    running, running_token = _claim(client)
    backlog = [enq(workflow="wf", queue=QUEUE, max_concurrency=10) for _ in range(5)]
    # The retry below must come at a later millisecond than the backlog (equal
    # ready scores would order by run id, and the retried run's id is older).
    last = int(raw.hget(client.keys.run(backlog[-1]), "createdAt") or 0)
    wait_until(lambda: client.server_time_ms() > last, 5, message="the next millisecond")

    takeover = Takeover(raw, prefix, live_leases(raw, prefix))
    assert set(takeover.snapshot) == {stopped, running}
    assert not takeover.done()

    # The running supervisor's attempt fails: retried with a backoff (scheduled),
    # or at once (queued behind the backlog, attempt 2, the same lease field).
    status = client.scripts.finalize(running, running_token, "retry", '{"e":1}', delay_ms)
    assert status == ("scheduled" if delay_ms else "queued")
    # The stopped supervisor's lease expires; the reaper puts its run back.
    raw.zadd(client.keys.leases, {stopped: 1})
    assert client.scripts.reap(100)[1] == [stopped]
    assert not takeover.done(), takeover.describe()
    ready = client.keys.q_ready(QUEUE)
    if not delay_ms:  # behind the backlog; the reaped run goes back to the front
        assert raw.zrank(ready, running) == raw.zcard(ready) - 1
    assert raw.zrank(ready, stopped) == 0
    assert stopped in takeover.describe() and running not in takeover.describe()

    # Another supervisor leases it: the takeover is done, the retry still waits.
    assert _claim(client)[0] == stopped
    assert takeover.done(), takeover.describe()
    assert raw.hget(client.keys.run(running), "lease") == running_token.encode()
    assert stopped_token != running_token
