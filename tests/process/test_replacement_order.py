"""A dead child's replacement is forked before its runs are put back (so a
stalled Redis does not keep its slot empty): what the put-back owes the run must
not depend on that fork. Default settings, real processes, SIGKILL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from redflow_mp import Client, RunStatus
from tests.process import flows_forkfail
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def test_a_fork_that_fails_after_a_child_died_still_puts_its_run_back(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """The replacement's fork raised (EAGAIN at a process limit, ENOMEM) before
    the dead child's run was put back: the supervisor ended with the run still
    leased to the dead child, uncharged (a crash the reaper's lease expiry never
    counts: a run that kills its worker by exhausting memory escaped
    ``max_run_crashes``). Before the change the put-back came first. And the
    failed fork itself ended the supervisor with a traceback (its other children
    orphaned): it now backs off and forks again once the host lets it."""
    flag = tmp_path / "no-fork"
    sup = supervisor(
        procs=1,
        modules=["tests.process.flows", "tests.process.flows_forkfail"],
        env={"TEST_NO_FORK_FLAG": str(flag)},
    )
    (first,) = sup.wait_workers(1)
    started = tmp_path / "started"
    handle = flows_forkfail.marked_nap.run(str(started), client=client)
    wait_until(started.exists, 60, message="the run's handler started")
    flag.touch()
    started.unlink()
    first.kill()
    wait_until(lambda: "could not fork worker 1" in sup.log(), 60, message="a refused fork")
    log = sup.log()
    assert "fork refused" in log, log[-3000:]
    assert sup.proc is not None and sup.proc.poll() is None, log[-3000:]
    state = wait_until(
        lambda: (s := client.get_run(handle.id)) is not None and s.crash_count == 1 and s,
        60,
        message="the run put back and charged",
    )
    assert state.status is RunStatus.QUEUED, (state.status, log[-3000:])
    assert state.last_crash is not None and "SIGKILL" in state.last_crash
    assert f"worker 1 (pid {first.pid})" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    flag.unlink()  # the host lets it fork again: the slot gets its child, the run a worker
    (second,) = sup.wait_workers(1, timeout=60)
    assert second.pid != first.pid
    wait_until(started.exists, 60, message="the run taken up again by the new child")
    assert sup.proc.poll() is None, sup.log()[-3000:]


def test_the_exit_line_comes_before_what_it_means_for_its_slot(
    supervisor: Callable[..., Supervisor],
) -> None:
    """Each child's exit line precedes its slot's restart plan, and the last one
    precedes FATAL: the fork-first change logged ``worker 1 restarts in ...`` and
    ``FATAL; stopping the supervisor`` before the exit that caused them."""
    sup = supervisor(
        procs=1,
        modules=["tests.process.flows_bootfail"],
        args=["--restart-backoff", "0.05", "--max-start-failures", "3"],
    )
    assert sup.wait(timeout=60) == 1
    lines = sup.log().splitlines()
    exits = [i for i, line in enumerate(lines) if "failed to start:" in line]
    plans = [i for i, line in enumerate(lines) if "restarts in" in line]
    fatal = [i for i, line in enumerate(lines) if "FATAL" in line]
    assert len(exits) == 3 and len(fatal) == 1, "\n".join(lines[-40:])
    assert exits[-1] < fatal[0], "\n".join(lines[-40:])
    # each restart plan after the exit it answers (exit 1, plan 1, exit 2, plan 2, ...)
    assert len(plans) == len(exits) - 1, "\n".join(lines[-40:])
    assert all(e < p < n for e, p, n in zip(exits[:-1], plans, exits[1:], strict=True)), "\n".join(
        lines[-40:]
    )
