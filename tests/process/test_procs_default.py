"""--procs 0 forks one child per CPU the supervisor may use, not per host CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")
def test_procs_0_counts_the_cpus_in_the_affinity_mask(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    sup = Supervisor(redis_url, prefix, tmp_path / "sup.log", procs=0)
    sup.cmd = ["taskset", "-c", "0", *sup.cmd]  # pinned to one CPU (as a cpuset would)
    sup.start()
    try:
        sup.wait_workers(1)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # no second child follows
            assert len(sup.workers()) == 1, sup.log()
            time.sleep(0.05)
    finally:
        sup.stop()
