"""drainclock.DrainClock: the timer kills at its deadline, ignores a stray ALRM, and
interrupts a blocked call kill_grace later (real processes, real SIGALRM)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from redflow_supervisor.children import Child
from redflow_supervisor.drainclock import DrainClock, DrainOverrun


@pytest.fixture()
def proc() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait(10)


def _child(pid: int) -> Child:
    return Child(pid=pid, slot=1, index=0, generation=0, started_at=0.0)


def _block(seconds: float) -> None:
    """A call blocked in the kernel, as a Redis read is (select retries on EINTR)."""
    r, w = os.pipe()
    try:
        select.select([r], [], [], seconds)
    finally:
        os.close(r)
        os.close(w)


def test_kills_at_the_deadline_then_interrupts_a_blocked_call(
    proc: subprocess.Popen[bytes],
) -> None:
    child = _child(proc.pid)
    clock = DrainClock(lambda: [child])
    previous = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    clock.arm(0.3, 0.4)
    with pytest.raises(DrainOverrun):
        _block(10)
    waited = time.monotonic() - t0
    with pytest.raises(DrainOverrun):  # raised again, should something swallow it
        _block(10)
    clock.disarm()
    assert 0.65 <= waited < 3.0, waited
    assert proc.wait(5) == -signal.SIGKILL
    assert child.stop_sent == "kill" and clock.killed == 1 and clock.overrun
    assert signal.getsignal(signal.SIGALRM) is previous


def test_a_stray_alrm_before_the_deadline_kills_nothing(proc: subprocess.Popen[bytes]) -> None:
    child = _child(proc.pid)
    clock = DrainClock(lambda: [child])
    clock.arm(5.0, 5.0)
    try:
        os.kill(os.getpid(), signal.SIGALRM)
        time.sleep(0.2)
        assert proc.poll() is None and clock.killed is None and child.stop_sent is None
    finally:
        clock.disarm()


def test_arming_again_only_brings_the_kill_closer(proc: subprocess.Popen[bytes]) -> None:
    child = _child(proc.pid)
    clock = DrainClock(lambda: [child])
    clock.arm(0.3, 30.0)
    clock.arm(30.0, 30.0)  # the loop's own arm for the drain, later: ignored
    try:
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        clock.disarm()


def test_disarmed_in_time_nothing_happens(proc: subprocess.Popen[bytes]) -> None:
    clock = DrainClock(lambda: [_child(proc.pid)])
    clock.arm(0.2, 0.1)
    clock.disarm()
    _block(0.5)
    assert proc.poll() is None and not clock.overrun


def test_abandon_counts_one_child_as_one_child(
    proc: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The give-up line read "1 children stopped" (issue 16 asked for log lines that
    count correctly; ``children.count_children`` is the one spelling)."""
    child = _child(proc.pid)
    clock = DrainClock(lambda: [child])
    with caplog.at_level("ERROR", logger="redflow_supervisor"):
        clock.abandon(wait=5.0)  # kills and reaps it (so Popen.wait cannot tell how)
    assert child.stop_sent == "kill"
    lines = [r.getMessage() for r in caplog.records if "still blocked" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "; 1 child stopped (SIGKILL) is not put back: its run's lease lapses" in lines[0]
