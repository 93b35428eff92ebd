"""A cancel cascade survives its canceller: the client process that canceled a
suspended parent is SIGKILLed between the parent's cancel and its children's,
and the supervisor (defaults) cancels the children."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunStatus
from redflow_mp.codec import text
from tests.process import flows_cascade
from tests.process.conftest import ROOT, Supervisor, clean_env, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

MODULES = ("tests.process.flows_cascade",)


def _children(raw: redis.Redis, client: Client, parent: str) -> list[str]:
    return sorted(text(x) for x in raw.smembers(client.keys.run_children(parent)))


def test_cascade_of_a_canceller_sigkilled_between_parent_and_children_is_finished(
    supervisor: Callable[..., Supervisor],
    client: Client,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
) -> None:
    sup = supervisor(procs=4, modules=MODULES)
    sup.wait_workers(4)
    parent = flows_cascade.cc_parent.run(None, client=client).id
    kids: list[str] = []

    def started() -> bool:
        kids[:] = _children(raw, client, parent)
        states = [client.get_run(k) for k in kids]
        running = [s for s in states if s is not None and s.status is RunStatus.RUNNING]
        p = client.get_run(parent)
        suspended = p is not None and p.status is RunStatus.SUSPENDED
        return len(kids) == 3 and len(running) == 2 and suspended

    wait_until(started, 30, message="the parent suspended on 2 running children and 1 waiting")
    with subprocess.Popen(
        [sys.executable, "-m", "tests.process.cancel_and_die", redis_url, prefix, parent],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
    ) as killer:
        try:
            assert killer.stdout is not None
            assert killer.stdout.readline() == b"parent-canceled\n"
        finally:
            killer.kill()  # SIGKILL between the parent's cancel and its children's
    state = client.get_run(parent)
    assert state is not None and state.status is RunStatus.CANCELED

    def statuses() -> list[str]:
        return [s.status.value for s in (client.get_run(k) for k in kids) if s is not None]

    with contextlib.suppress(AssertionError):  # the assertion below says what they are
        wait_until(lambda: statuses() == ["canceled"] * 3, 60, message="children canceled")
    assert statuses() == ["canceled"] * 3
