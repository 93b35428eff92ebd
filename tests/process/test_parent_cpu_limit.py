"""The supervisor's parent at its CPU time limit (RLIMIT_CPU's soft limit:
``prlimit --cpu=S:H``, systemd ``LimitCPU=S:H``): the kernel's SIGXCPU starts a
drain, as a TERM would, and the parent exits with status 1 once its children
left (``Restart=on-failure`` starts it again). Before, it logged each SIGXCPU as
a stray (``received SIGXCPU; ignored``) until the hard limit's SIGKILL ended it
and left its children orphans. A SIGXCPU sent by ``kill`` far from the limit is
still a stray.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable

import psutil
import pytest
import redis

from redflow_mp import Client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

MODULES = ("tests.process.flows", "tests.process.flows_parent_burn")


def _cpu_used(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_the_parent_at_its_cpu_time_limit_drains_and_exits_with_status_1(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    handle = flows.sleepy.run(6.0, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    soft = math.ceil(_cpu_used(sup.pid)) + 1
    psutil.Process(sup.pid).rlimit(psutil.RLIMIT_CPU, (soft, soft + 60))

    def reached() -> bool:
        if "CPU time limit reached" in sup.log():
            return True
        sup.send(signal.SIGHUP)  # a reload imports flows_parent_burn again: 0.5 s of CPU
        return False

    wait_until(reached, 40, interval=0.7, message=f"the limit logged\n{sup.log()}")
    wait_until(lambda: "draining: waiting" in sup.log(), 5, message="the drain")
    assert sup.wait(timeout=40) == 1, sup.log()
    assert handle.result(timeout=5)["slept"] == 6.0
    assert "RLIMIT_CPU soft" in sup.log()


def test_a_sigxcpu_sent_far_from_the_limit_is_still_ignored(
    supervisor: Callable[..., Supervisor],
) -> None:
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    soft = math.ceil(_cpu_used(sup.pid)) + 100
    psutil.Process(sup.pid).rlimit(psutil.RLIMIT_CPU, (soft, soft + 60))
    sup.send(signal.SIGXCPU)
    wait_until(lambda: "received SIGXCPU; ignored" in sup.log(), 10, message="the stray")
    assert "CPU time limit reached" not in sup.log()
    assert sup.proc is not None and sup.proc.poll() is None
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0, sup.log()
