"""What a supervisor does before its children claim (docs/internals.md, "Start-up"):
no OpenTelemetry or psutil imported before the fork when tracing is off, and
children that find the scripts the parent loaded (no ``SCRIPT EXISTS`` of their
own). Behaviours, not timings: ``python -m benchmarks.startup`` times them."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redflow_mp import Client
from tests.process import flows
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process


def _script_exists_calls(raw: Any) -> int:
    """``SCRIPT EXISTS`` calls since the last ``CONFIG RESETSTAT`` (Redis 6.2 counts
    every SCRIPT subcommand under one name; no LOAD happens here)."""
    stats = raw.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0))
        for name in ("cmdstat_script|exists", "cmdstat_script")
    )


def _pids_of_runs(client: Client, want: int, timeout: float = 30.0) -> set[int]:
    """Run ``pid`` runs in batches until ``want`` different children ran one."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < want:
        assert time.monotonic() < deadline, f"only children {pids} ran a run"
        handles = flows.pid.run_many([None] * 20, client=client)
        pids.update(int(h.result(timeout=30)) for h in handles)
    return pids


def test_children_start_without_opentelemetry_and_find_the_scripts_loaded(
    supervisor: Callable[..., Supervisor], client: Client, raw: Any
) -> None:
    handle = flows.loaded_modules.run(None, client=client)  # the test's own script loads
    raw.config_resetstat()
    sup = supervisor(procs=2)
    # redis-py 8 imported the OpenTelemetry SDK (and psutil through it) at
    # `import redis` when the extra is installed; the status duty imported psutil
    # before the first fork. Now neither is in a child when it starts.
    assert handle.result(timeout=30) == []
    sup.wait_workers(2)
    assert len(_pids_of_runs(client, 2)) == 2  # both children have claimed
    # The parent's SCRIPT EXISTS before it forked, none of the children's.
    assert _script_exists_calls(raw) == 1


_ATEXIT_MODULE = """
import atexit, os
from redflow_mp import define_workflow

@define_workflow("atexit-noop", queue="ax")
def noop(ctx):
    return None

def _bye():
    with open(os.environ["ATEXIT_MARK"], "a") as f:
        f.write(f"{os.getpid()}\\n")

atexit.register(_bye)
"""


def test_a_stopped_supervisor_runs_the_atexit_handlers_of_its_modules_once(
    supervisor: Callable[..., Supervisor], tmp_path: Path
) -> None:
    # The parent leaves by os._exit after running the atexit handlers itself
    # (entry.leave: no interpreter teardown); its children never run them.
    module = tmp_path / "atexit_flows.py"
    module.write_text(_ATEXIT_MODULE)
    mark = tmp_path / "atexit.txt"
    sup = supervisor(procs=2, modules=[str(module)], env={"ATEXIT_MARK": str(mark)})
    sup.wait_workers(2)
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert mark.read_text().split() == [str(sup.pid)]
    log = sup.log_path.read_text()
    assert "supervisor stopped (exit status 0)" in log  # logging flushed before _exit
