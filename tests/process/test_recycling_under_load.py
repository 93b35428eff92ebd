"""Recycling (``max_runs_per_child``) and crashing runs under steady load. A child that served its
runs and left (exit status RECYCLE) before the parent's board poll had seen it
ready (under load a fresh child claims at once; its last run can end within
the parent's 20 ms poll) was counted as a failed start: the slot backed off
(1 s, 2 s, 4 s...) between runs, and after ``max_start_failures`` such exits
in a row the supervisor went FATAL and exited 1 with its queue full."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redflow_mp import Client
from redflow_mp.errors import RunFailedError
from tests.process import flows
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process


def test_recycling_every_run_under_load_never_backs_off(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    handles = flows.pid.run_many([None] * 40, client=client)
    sup = supervisor(procs=1, args=["--max-runs-per-child", "1"])
    pids = [h.result(timeout=60) for h in handles]
    log = sup.log()
    # never backed off: every delayed restart is logged ("worker N restarts in
    # X s", supervisor/slots.py), so the log says it, not a bound in seconds
    # (which a loaded machine stretches)
    assert "restarts in" not in log and "failed to start" not in log, log
    assert len(set(pids)) == 40  # one run per child, none run twice
    assert sup.proc is not None and sup.proc.poll() is None, log


def test_runs_that_kill_their_child_at_once_never_take_the_supervisor_to_fatal(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """The same race with crashes: a fresh child that claimed a queued run and
    died in it before the parent's poll had seen it ready was a failed start,
    so a few queued runs that kill their child (each up to ``max_run_crashes``)
    made ``max_start_failures`` in a row: FATAL, exit 1. A run that kills its
    child is the run's problem (the crash cap), never the slot's."""
    handles = flows.suicide.run_many([None] * 4, client=client)
    sup = supervisor(procs=1)
    for h in handles:
        with pytest.raises(RunFailedError) as failed:
            h.result(timeout=60)
        assert failed.value.error is not None and failed.value.error.type == "RunCrashedError"
    log = sup.log()
    assert "failed to start" not in log and "FATAL" not in log, log
    assert isinstance(flows.pid.run(None, client=client).result(timeout=20), int)
