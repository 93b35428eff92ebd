"""A workflow module that starts a thread at import runs it in the supervisor's
parent, which then forks its children with that thread alive: the thread does
not run in the children, and a lock it holds at a fork stays held in that child
forever. The docs say to start such threads in the children
(``tracing.setup_in_workers``) or lazily; the supervisor said nothing when a
module did it anyway. It now warns once, naming the threads."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from redflow_mp import Client
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def test_a_thread_started_at_import_is_warned_about_before_the_fork(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=2, modules=("tests.process.flows", "tests.process.flows_thread"))
    sup.wait_workers(2)
    wait_until(lambda: "config-poller" in sup.log(), 10, message="a warning naming the thread")
    line = next(x for x in sup.log().splitlines() if "config-poller" in x)
    assert "WARNING" in line and "fork" in line, line
    sup.send(signal.SIGTTIN)  # another fork, the same thread: no second warning
    sup.wait_workers(3)
    assert sup.log().count("config-poller") == 1, sup.log()
