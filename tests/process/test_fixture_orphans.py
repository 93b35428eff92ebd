"""The test fixtures' own hygiene: a test process that dies without its teardown
(an xdist worker SIGKILLed, pytest-timeout's ``os._exit``) takes the supervisors and
redis-servers it started along (``tests/pdeath.py``), instead of leaving them
running for good."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.process.conftest import ROOT, clean_env, wait_until

pytestmark = pytest.mark.process

_STARTER = """
import json, sys, time
from pathlib import Path
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer
srv = RedisServer().start()
sup = Supervisor(srv.url, sys.argv[1], Path(sys.argv[2]), procs=2).start()
kids = sup.wait_workers(2)
print(json.dumps([srv.data_dir, srv.proc.pid, sup.pid, *(k.pid for k in kids)]), flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_test_process_killed_mid_test_takes_its_supervisor_and_server_along(
    prefix: str, tmp_path: Path
) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, prefix, str(tmp_path / "sup.log")],
        cwd=ROOT,
        env=clean_env({"PYTHONPATH": str(ROOT)}),
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    data_dir = ""
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()
        assert line, (
            f"the starter exited ({starter.wait(30)}):\n" + (tmp_path / "sup.log").read_text()
        )
        data_dir, *pids = json.loads(line)
        assert len(pids) == 4 and not any(_gone(p) for p in pids)
        starter.kill()  # no teardown, no atexit: as an xdist worker SIGKILLed
        starter.wait(timeout=30)
        # the server and the supervisor at once (PDEATHSIG), the supervisor's idle
        # children within a second or so (orphan_watch); before: timed out after
        # 60 s waiting for the supervisor and its children [...] to leave ...
        wait_until(
            lambda: all(_gone(p) for p in pids),
            60,
            0.05,
            message=f"the server, supervisor and children {pids} to leave with the test process",
        )
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=30)
        if starter.stdout is not None:
            starter.stdout.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
