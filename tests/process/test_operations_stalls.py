"""Ways a child stopped serving while its supervisor believed it healthy: a
handler's output blocked on a reader that stopped reading, a child stopped
(SIGSTOP, a debugger, a frozen cgroup), a child out of file descriptors."""

from __future__ import annotations

from collections.abc import Callable

import psutil
import pytest

from redflow_mp import Client
from tests.process import flows_ops
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process

MODULES = ("tests.process.flows", "tests.process.flows_ops")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_out_of_file_descriptors_is_replaced(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A handler that leaked descriptors until none was left (EMFILE) left its
    child serving: every later run that opened anything (a file, a socket, a
    Redis connection beyond those the child had) failed with EMFILE in it, run
    after run, and the child was never replaced. It now finishes the run it
    holds, says why, and leaves; its replacement serves the next runs."""
    sup = supervisor(procs=1, modules=MODULES)
    (first,) = sup.wait_workers(1)
    leaker = flows_ops.leak_fds.run(None, client=client).result(timeout=20)
    assert leaker == first.pid
    assert flows_ops.open_file.run(None, client=client).result(timeout=30) != leaker
    wait_until(lambda: _gone(leaker), 10, message="the child out of descriptors to go")
    assert "no file descriptors left" in sup.log(), sup.log()[-3000:]
    sup.wait_workers(1)
