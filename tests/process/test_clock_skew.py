"""A supervisor host whose clock is off from Redis's (no NTP, a VM resumed):
``redflow supervisors`` compares each status record with Redis's clock, so the
record's times must be on that clock too. They were the host's: a host a minute
ahead was shown as ``seen in 59.0s`` and ``up`` a minute short."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from redflow_mp import Client
from tests.process.conftest import ROOT, Supervisor, clean_env

pytestmark = pytest.mark.process

OFFSET_S = 60  # tests.faults.workload shifts its process's wall clock by this


def test_status_records_of_a_skewed_host_are_on_redis_clock(
    supervisor: Callable[..., Supervisor], client: Client, redis_url: str, prefix: str
) -> None:
    sup = supervisor(
        procs=1,
        modules=["tests.faults.workload"],
        env={"FAULTS_CLOCK_OFFSET_S": str(OFFSET_S)},
    )
    sup.wait_workers(1)
    target = ["--url", redis_url, "--prefix", prefix]

    def redflow(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "redflow_supervisor.ops", *args, *target],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    records = json.loads(redflow("supervisors", "--json"))
    while not records:  # the first record is written within 2 s of the start
        records = json.loads(redflow("supervisors", "--json"))
    now = client.server_time_ms()
    (record,) = records
    assert abs(record["updated_at"] - now) < 10_000, (record["updated_at"] - now, record)
    assert record["started_at"] <= now, (record["started_at"] - now, record)
    table = redflow("supervisors")
    assert re.search(r"seen [\d.]+m?s ago", table), table
