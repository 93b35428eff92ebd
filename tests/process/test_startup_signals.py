"""Signals that reach the supervisor during its start-up (importing the workflow
modules, connecting to Redis, syncing the registry), before its loop runs: TERM,
INT (Ctrl-C) and QUIT stop it cleanly (exit status 0, one line, no traceback, no
core dump); HUP (``systemctl reload`` right after ``start``) does not kill it:
the reload happens once it runs. systemd counts a death by SIGHUP as a clean
exit, so ``Restart=on-failure`` would not even have restarted it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from redflow_mp import Client
from tests.process.conftest import ROOT, Supervisor, wait_until

pytestmark = pytest.mark.process

MODULE = "tests.process.flows_slowstart"


def _start(supervisor: Callable[..., Supervisor], tmp_path: Path) -> Supervisor:
    marker = tmp_path / "importing"
    sup = supervisor(procs=2, modules=[MODULE], env={"SLOWSTART_MARKER": str(marker)})
    wait_until(marker.exists, 20, message="the workflow module's import to begin")
    return sup


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_term_int_or_quit_during_start_up_stop_it_cleanly(
    supervisor: Callable[..., Supervisor], tmp_path: Path, sig: signal.Signals
) -> None:
    sup = _start(supervisor, tmp_path)
    sup.send(sig)
    code = sup.wait(timeout=20)
    log = sup.log()
    assert code == 0, f"exit status {code} after {sig.name} during start-up:\n{log}"
    assert "Traceback" not in log, log
    assert f"received {sig.name} during start-up" in log, log
    assert not sup.workers()


def test_hup_during_start_up_is_a_reload_once_it_runs(
    supervisor: Callable[..., Supervisor], tmp_path: Path, client: Client
) -> None:
    sup = _start(supervisor, tmp_path)
    sup.send(signal.SIGHUP)
    wait_until(
        lambda: (
            sup.proc is not None and (sup.proc.poll() is not None or "rolling restart" in sup.log())
        ),
        30,
        message="the supervisor to run (or die)",
    )
    assert sup.proc is not None
    assert sup.proc.poll() is None, (
        f"HUP during start-up killed it ({sup.proc.returncode}):\n{sup.log()}"
    )
    sup.wait_workers(2, timeout=30)
    assert client.run_by_name("slowstart", None).result(timeout=30)
    assert "Traceback" not in sup.log(), sup.log()


@pytest.mark.parametrize(("sig", "children"), [(signal.SIGTTIN, 3), (signal.SIGTTOU, 1)])
def test_ttin_or_ttou_during_start_up_resizes_once_it_runs(
    supervisor: Callable[..., Supervisor],
    tmp_path: Path,
    client: Client,
    sig: signal.Signals,
    children: int,
) -> None:
    """TTIN and TTOU stop a process by default (job control): sent while the
    modules were importing (an autoscaler, an operator right after a deploy), they
    froze the whole supervisor (state T: no child ever started, and TERM did
    nothing until a CONT). Now they are kept and applied once the loop runs."""
    sup = _start(supervisor, tmp_path)
    assert sup.proc is not None
    sup.send(sig)
    try:
        wait_until(
            lambda: sup.proc is not None and (sup.proc.poll() is not None or sup.workers()),
            30,
            message="the supervisor to fork its children",
        )
    finally:
        with open(f"/proc/{sup.proc.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "T":
            sup.send(signal.SIGCONT)  # so that the fixture can stop it
    assert state != "T", f"{sig.name} during start-up stopped the process (state T)"
    assert sup.proc.poll() is None, sup.log()
    sup.wait_workers(children, timeout=30)
    wait_until(lambda: f"{sig.name[3:]}: " in sup.log() or "minimum" in sup.log(), 10)
    assert client.run_by_name("slowstart", None).result(timeout=30)
    assert "Traceback" not in sup.log(), sup.log()


# Sends the signal while ``entry.supervisor`` imports its own command module
# (``from .cli import main``: some 450 modules, seconds on a loaded host), before
# the workflow modules: a finder that sees ``redflow_supervisor.cli`` asked for
# signals the process, and the handler runs inside that import.
_TRIP = """
import os, signal, sys

SIG = int(sys.argv[1])

class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == "redflow_supervisor.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), SIG)
        return None

sys.meta_path.insert(0, Trip())
sys.argv = ["redflow-supervisor", "--app", "x", "--module", "json",
            "--url", "redis://127.0.0.1:1/0"]
from redflow_supervisor.entry import supervisor
supervisor()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_supervisor_imports_itself_is_a_clean_stop(sig: signal.Signals) -> None:
    """TERM (``systemctl stop`` right after ``start``) during the supervisor's own
    imports, before its command's handler was entered, escaped as a
    ``StartupStop`` traceback with exit status 1; it is the same clean stop as
    during the workflow modules' import (exit 0, one line)."""
    done = subprocess.run(
        [sys.executable, "-c", _TRIP, str(int(sig))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert f"received {sig.name} during start-up; stopped" in done.stderr, done.stderr
