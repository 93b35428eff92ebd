"""How the parent names a child's exit (the run's ``RunCrashedError`` text, the
log line and the ``cause`` label of ``redflow_child_exits_total``). Status 3 is
the status of a child's boot error; a child that exits with it while running a
handler booted long ago: the status is the handler's own (``os._exit(3)``, a C
library's ``exit(3)``). The run failed after ``max_run_crashes`` with "worker
exited with a boot error", sending its operator to the imports and the
configuration, and the exit was counted as ``cause="boot"``."""

from __future__ import annotations

import logging

import pytest

from redflow_supervisor.board import Held
from redflow_supervisor.child import ExitCode
from redflow_supervisor.children import Child, ExitInfo, log_exit

RUNNING = Held("01M96YJ1G3PNKNZ2YD3KD65TPG", "token", 0.0, 0.0, "wf")
FINISHING = Held("01M96YJ1G3PNKNZ2YD3KD65TPG", "token", 0.0, -1.0, "wf")


def test_status_3_while_a_handler_runs_is_the_handlers_exit_not_a_boot_error() -> None:
    info = ExitInfo(ExitCode.BOOT_ERROR, None).given((RUNNING,))
    # before: AssertionError: assert 'exited with a boot error' == 'exited with
    # code 3 while running a handler'
    assert info.describe(we_killed=False) == "exited with code 3 while running a handler"
    assert info.kind(we_killed=False) == "crash"
    assert not info.clean


def test_a_boot_error_is_still_named_so() -> None:
    for held in ((), (FINISHING,)):
        info = ExitInfo(ExitCode.BOOT_ERROR, None).given(held)
        assert info.describe(we_killed=False) == "exited with a boot error"
        assert info.kind(we_killed=False) == "boot"


def test_the_other_exits_are_named_as_before() -> None:
    assert ExitInfo(0, None).given((RUNNING,)).describe(we_killed=False) == (
        "exited with code 0 while running a handler"
    )
    assert ExitInfo(7, None).given((RUNNING,)).describe(we_killed=False) == "exited with code 7"
    assert ExitInfo(ExitCode.RECYCLE, None).given(()).clean
    assert ExitInfo(None, 11).given((RUNNING,)).describe(we_killed=False) == "killed by SIGSEGV"


def test_a_handlers_exit_with_the_recycle_status_is_logged_as_the_crash_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Status 10 is a child's planned exit after ``max_runs_per_child``; a handler
    that ends its process with it (``os._exit(10)``) crashed the child, and its
    run is charged a crash, but the parent logged an INFO "worker 1 (pid 4242)
    recycled"."""
    child = Child(pid=4242, slot=1, index=0, generation=0, started_at=0.0, ready=True)
    info = ExitInfo(ExitCode.RECYCLE, None).given((RUNNING,))
    with caplog.at_level(logging.INFO, logger="redflow_supervisor"):
        log_exit(child, info, info.describe(we_killed=False))
    # before: AssertionError: assert ['worker 1 (pid 4242) recycled'] == ['worker 1 (pid
    # 4242) died: exited with code 10 while running a handler']
    assert [r.getMessage() for r in caplog.records] == [
        "worker 1 (pid 4242) died: exited with code 10 while running a handler"
    ]
    assert caplog.records[0].levelno == logging.ERROR
    planned = ExitInfo(ExitCode.RECYCLE, None).given(())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="redflow_supervisor"):
        log_exit(child, planned, planned.describe(we_killed=False))
    assert [r.getMessage() for r in caplog.records] == ["worker 1 (pid 4242) recycled"]
