"""USR1 and USR2 sent to a supervisor (a logrotate ``postrotate kill -USR1``, a
``kill -USR1`` meant for another daemon, ``pkill -USR2 python``) or to its whole
process group: nothing is lost and nothing stops. Before, their default action
ended the parent (its children left, their runs waited for their leases) and
any child they reached."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from redflow_mp import Client
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_usr1_and_usr2_to_the_supervisor_and_its_group_stop_nothing(
    supervisor: Callable[..., Supervisor], client: Client, sig: signal.Signals
) -> None:
    sup = supervisor(procs=2)
    before = {p.pid for p in sup.wait_workers(2)}
    assert client.run_by_name("pid", None).result(timeout=30) in before
    sup.send(sig)  # the parent alone
    os.killpg(sup.pid, sig)  # and the whole group: every child too
    # A run after the signals is served by one of the same children: the
    # supervisor and its children are alive and were not replaced.
    for _ in range(4):
        assert client.run_by_name("pid", None).result(timeout=30) in before
    assert sup.proc is not None
    assert sup.proc.poll() is None, f"{sig.name} ended the supervisor:\n{sup.log()}"
    assert {p.pid for p in sup.workers()} == before, sup.log()
