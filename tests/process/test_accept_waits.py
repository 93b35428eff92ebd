"""Acceptance of durable waits under a real supervisor with default settings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redflow_mp import Client
from tests.process import flows_accept_waits as flows
from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

MODULES = ("tests.process.flows_accept_waits",)


def test_a_run_timeout_does_not_count_time_spent_sleeping(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    assert flows.aw_timed_sleeper.run(3.0, client=client).result(timeout=60) == "slept"


def test_a_run_timeout_does_not_count_time_spent_waiting_for_a_child(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    assert flows.aw_timed_parent.run(3.0, client=client).result(timeout=60) == "child-done"
