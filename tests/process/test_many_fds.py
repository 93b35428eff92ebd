"""The supervisor's parent with its signal pipe numbered past 1024: the workflow
modules it loads at start-up keep 1,100 descriptors open (a connection pool, files
an app opens when it loads; ``ulimit -n`` is often far above 1024). The check for
a signal waiting between two duties used ``select.select``, which refuses a
descriptor past 1023 (``ValueError: filedescriptor out of range in select()``):
the parent's loop ended at its first pass of the duties and the supervisor
stopped. Default settings."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import pytest

from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

FDS = 1100


def test_a_signal_pipe_past_descriptor_1024_keeps_the_loop_running(
    supervisor: Callable[..., Supervisor],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(soft, hard) < FDS + 200:
        pytest.skip(f"ulimit -n {soft} leaves no room for {FDS} descriptors")
    sup = supervisor(
        procs=1,
        modules=("tests.process.flows", "tests.process.flows_many_fds"),
        env={"MANY_FDS": str(FDS)},
    )
    sup.wait_workers(1, timeout=30)
    time.sleep(3.0)  # every duty is due at start: their first pass has run
    assert sup.proc is not None
    assert sup.proc.poll() is None, f"the supervisor exited\n{sup.log()[-3000:]}"
    assert "out of range" not in sup.log(), sup.log()[-3000:]
