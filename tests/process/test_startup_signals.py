"""Signals that reach the supervisor during its start-up (importing the workflow
modules, connecting to Redis, syncing the registry), before its loop runs: TERM,
INT (Ctrl-C) and QUIT stop it cleanly (exit status 0, one line, no traceback, no
core dump); HUP (``systemctl reload`` right after ``start``) does not kill it:
the reload happens once it runs. systemd counts a death by SIGHUP as a clean
exit, so ``Restart=on-failure`` would not even have restarted it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from redflow_mp import Client
from tests.process.conftest import Supervisor, wait_until

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
