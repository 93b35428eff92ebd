"""A supervisor child's check of its descriptors after a run
(``_Hooks.check_descriptors``): one ``dup`` of descriptor 0 both proves a
descriptor can still be opened and, numbered above 2, that 0, 1 and 2 are open
(``dup`` takes the lowest free number); a standard descriptor a handler closed
is opened on ``/dev/null`` again, whichever of the three it was.

Each case runs in a fresh interpreter: closing the test process's own standard
descriptors would take pytest's output with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.conftest import ROOT

SCRIPT = """
import os, sys
from redflow_supervisor import child as ch
from redflow_supervisor.board import Board

calls = []
real = ch.reopen_std_fds
ch.reopen_std_fds = lambda: (calls.append(1), real())[1]
hooks = ch._Hooks(Board(1), ch.ChildSpec(
    index=0, slot=0, app="t", url="redis://127.0.0.1:1", prefix="t", queues=("q",), lease_ms=5000,
))
closed = [int(x) for x in sys.argv[1].split(",") if x]
for fd in closed:
    os.close(fd)
hooks._next_fd_check = 0.0  # a run ran since the last check
hooks.check_descriptors()
after_run = len(calls)
now_on = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in closed]
hooks.check_descriptors()  # within the second: the standard ones only, by poll
with open(sys.argv[2], "w") as out:
    out.write(f"{after_run} {len(calls)} {' '.join(now_on)}")
"""


@pytest.mark.parametrize(
    ("closed", "polls_after_run"),
    [("", 0), ("0", 1), ("1", 1), ("2", 1), ("1,2", 1), ("0,1,2", 1)],
)
def test_closed_standard_descriptors_are_opened_after_a_run(
    closed: str, polls_after_run: int, tmp_path: Path
) -> None:
    """After a run with nothing closed, no poll of 0-2 is made (the ``dup``
    answered it); with any of them closed, it is open on /dev/null before the
    next claim, and while idle (within the second) the poll still runs."""
    result = tmp_path / "result"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, closed, str(result)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    after_run, total, *now_on = result.read_text().split()
    assert int(after_run) == polls_after_run
    assert int(total) == polls_after_run + 1
    assert now_on == ["/dev/null"] * len(closed.split(",") if closed else [])
