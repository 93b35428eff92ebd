"""A child that reaches its CPU time limit (RLIMIT_CPU's soft limit: ``prlimit
--cpu=S:H``, systemd ``LimitCPU=S:H``, ``resource.setrlimit`` in a workload) ends
there as the operator asked, by SIGXCPU, and the parent says why: its run is put
back as after any crash (one crash counted) and runs again in a new child.

Before, children ignored SIGXCPU with the other stray signals (so that a ``pkill
-XCPU`` sent to the group does not kill a busy child; ``test_stray_signals.py``
still holds): the kernel then raised the soft limit a second at a time until the
hard limit's SIGKILL, which the parent reported as "possibly the OOM killer".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


def test_a_child_at_its_cpu_time_limit_ends_and_its_run_runs_again(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, modules=("tests.process.flows_cpulimit",))
    sup.wait_workers(1)
    handle = client.run_by_name("burn", None)
    assert handle.result(timeout=60) == "second", sup.log()
    log = sup.log()
    assert "killed by SIGXCPU (its CPU time limit, RLIMIT_CPU, was reached)" in log, log
    fields = raw.hmget(client.keys.run(handle.id), "crashCount", "lastCrash")
    assert fields[0] == b"1", fields
    assert b"SIGXCPU" in (fields[1] or b""), fields
    assert int(raw.get(f"{client.keys.tag}:burns:{handle.id}") or 0) == 2
