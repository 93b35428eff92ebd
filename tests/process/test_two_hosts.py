"""Two supervisors of one app with different configurations: each host loads
its own workflow modules (``--app etl`` on both, ``--module cpu_jobs`` here,
``--module gpu_jobs`` there). A supervisor's start withdraws its app's
registration of workflows its registry does not list once that is older than
30 s (a rolling deploy's old code); a live supervisor that serves them keeps
its registration fresh, so the other host's start no longer removes their
metadata and cron entries while they are served."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from redflow_mp import Client
from redflow_mp.sync import STALE_WORKFLOW_GRACE_MS
from tests.process import flows
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process


def test_a_second_host_with_other_modules_keeps_the_first_hosts_workflows(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    first = supervisor(procs=1, app="shared")
    first.wait_workers(1)
    assert client.get_workflow_meta("pid") is not None
    time.sleep(STALE_WORKFLOW_GRACE_MS / 1000 + 3)  # its start-up sync is now "old"
    second = supervisor(procs=1, app="shared", modules=["tests.process.flows_hostb"])
    second.wait_workers(1)
    assert client.run_by_name("host-b", None).result(timeout=30)
    assert "removed stale workflow" not in second.log(), second.log()
    meta = client.get_workflow_meta("pid")
    assert meta is not None, (
        f"the second host's start removed the first's workflows\n{second.log()}"
    )
    assert flows.pid.run(None, client=client).result(timeout=30)
