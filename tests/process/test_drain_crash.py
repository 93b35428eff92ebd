"""A child that dies during a drain by a signal the supervisor did not send
(the OOM killer's SIGKILL, a segfault) crashed, whatever the supervisor was
doing: its run goes back at once with the real cause, charged a crash like any
other. It used to be put back as "supervisor stopping", uncharged: the cause
was lost in ``runs show``, and a run that kills its child only while a drain is
under way was never capped by ``max_run_crashes``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def test_a_child_killed_by_someone_else_while_draining_is_a_crash(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1)
    sup.wait_workers(1)
    handle = flows.multi_step.run(None, client=client)
    victim = wait_until(lambda: raw.get(f"{client.keys.tag}:victim"), 20, message="step two")
    sup.send(signal.SIGTERM)
    wait_until(lambda: "draining" in sup.log(), 10, message="the drain")
    os.kill(int(victim), signal.SIGKILL)
    assert sup.wait(timeout=30) == 0, sup.log()
    state = client.get_run(handle.id)
    assert state is not None and state.status == "queued", state
    (attempt,) = state.attempts
    assert attempt.outcome == "requeued", attempt
    assert attempt.cause is not None and "SIGKILL" in attempt.cause, (attempt.cause, sup.log())
    assert raw.hget(f"{client.keys.tag}:run:{handle.id}", "crashCount") == b"1"
