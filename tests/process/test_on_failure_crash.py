"""``on_failure`` when its process dies mid-call (SPEC: "runs once when a run
fails for good"). The failing finish records the hook as due
(``on-failure-due``); a worker SIGKILLed while its hook runs leaves the entry,
and a supervisor's reaper takes it over past its deadline (``hookdue.py``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from redflow_mp import Client
from redflow_mp.codec import text
from redflow_mp.errors import RunFailedError
from tests.process import flows, flows_hook_crash
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

MODULES = ("tests.process.flows", "tests.process.flows_hook_crash")
#: A live worker's hook may run this long before its parent kills it (60 s) and
#: some margin: a hook recorded as due could be taken over no sooner.
REDO_WAIT_S = 75.0


def test_a_hook_whose_worker_is_sigkilled_mid_call_runs_again_exactly_once(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """The run is failed and its hook began in a worker; that worker is
    SIGKILLed mid-hook. The run stays failed, and the hook is called once more,
    in another process, and no more."""
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    handle = flows_hook_crash.hook_killed.run(None, client=client)
    with pytest.raises(RunFailedError):
        handle.result(timeout=30)
    key = f"{client.keys.tag}:hook-calls"
    wait_until(lambda: client.redis.llen(key) == 1, 30, message="the hook to begin")
    first = client.redis.lindex(key, 0)
    assert first is not None
    run_id, pid = text(first).split()
    assert run_id == handle.id
    os.kill(int(pid), signal.SIGKILL)
    sup.wait_workers(2, timeout=60)  # the slot restarts
    run = client.get_run(handle.id)
    assert run is not None and run.status.value == "failed"
    wait_until(
        lambda: client.redis.llen(key) >= 2,
        REDO_WAIT_S,
        interval=0.2,
        message="the hook to be called again after its worker was killed",
    )
    # exactly once: a later run on the same supervisor finds no third call
    flows.pid.run(None, client=client).result(timeout=60)
    calls = [text(c).split() for c in client.redis.lrange(key, 0, -1)]
    assert len(calls) == 2, calls
    assert calls[1][0] == handle.id and calls[1][1] != pid
