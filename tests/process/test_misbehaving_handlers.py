"""Handlers that change their child's signal handling (a library that installs
its own SIGTERM handler, or ignores TERM) must not make the child deaf to the
supervisor: a drain, a rolling restart (HUP) and TTOU stop such a child after
its current run, as they stop any other. The child used to hear those requests
only through SIGTERM: it then kept claiming runs until the drain's
``graceful_timeout`` killed it, and a child retired by HUP or TTOU never left
(it went on serving the old code next to its replacement)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from redflow_mp import Client
from redflow_mp.errors import RunFailedError
from tests.process import flows, flows_misbehave
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process

MODULES = ("tests.process.flows", "tests.process.flows_misbehave")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_term_drains_a_child_whose_handler_ignored_sigterm_at_once(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    assert isinstance(flows_misbehave.deaf.run(None, client=client).result(timeout=20), int)
    sup.send(signal.SIGTERM)
    # graceful_timeout is 30 s: a drain of an idle child ends before it (under a
    # second on an idle machine; the event, not a wall-clock bound)
    assert sup.wait(timeout=25) == 0, sup.log()
    assert "graceful timeout reached" not in sup.log()


def test_hup_replaces_a_child_whose_handler_installed_its_own_term_handler(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    old = flows_misbehave.own_term_handler.run(None, client=client).result(timeout=20)
    sup.send(signal.SIGHUP)
    wait_until(lambda: _gone(old), 20, message=f"the replaced child {old} to leave")
    pids = {flows.pid.run(None, client=client).result(timeout=20) for _ in range(5)}
    assert old not in pids


def test_a_handler_that_changed_directory_does_not_move_the_next_runs(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """A run's relative paths used to depend on which runs its child had run
    before: a handler's ``os.chdir`` stayed for every later run of that child
    (and a directory it then removed failed them all)."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    home = flows_misbehave.cwd.run(None, client=client).result(timeout=20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert flows_misbehave.chdir.run(str(elsewhere), client=client).result(timeout=20) == str(
        elsewhere
    )
    assert flows_misbehave.cwd.run(None, client=client).result(timeout=20) == home
    elsewhere.rmdir()
    flows_misbehave.chdir.run(str(tmp_path), client=client).result(timeout=20)
    assert flows_misbehave.cwd.run(None, client=client).result(timeout=20) == home


def test_a_process_a_handler_forked_never_returns_into_the_worker(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A process forked by a handler whose branch raised (or returned) went on
    as the worker: it wrote the run's outcome with the run's lease (the run
    failed with the forked branch's error while its handler still ran) and then
    served the queue unsupervised, while the handler waited for it forever."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    result = flows_misbehave.fork_escape.run(None, client=client).result(timeout=20)
    assert result.startswith("forked process ended with"), result
    assert result != "forked process ended with 0", result
    assert isinstance(flows.pid.run(None, client=client).result(timeout=20), int)


def test_a_process_forked_in_a_step_never_records_the_step(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """The forked branch of a step function that raised reached the step runner
    and recorded the step as failed with the run's lease while the step still
    ran in the worker (a worker crash before the step's own outcome was recorded
    would then have replayed the forked copy's failure)."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    handle = flows_misbehave.fork_in_step.run(None, client=client)
    result = handle.result(timeout=20)
    assert result.startswith("forked process ended with 1; "), result
    assert result.endswith("record ['running']"), result  # not ['failed']
    steps = client.get_run_steps(handle.id) or []
    assert [(s.name, str(s.status)) for s in steps] == [("fork", "succeeded")], steps


def test_a_handler_that_exits_its_process_with_status_zero_crashed_it(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A child that left with status 0 while a handler ran was logged at INFO
    as a clean exit, counted as one (``redflow_child_exits_total{cause="clean"}``,
    no restart in ``redflow supervisors``) and restarted as planned: only the
    run's crash count said anything had gone wrong."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    with pytest.raises(RunFailedError) as failed:
        flows_misbehave.exit_zero.run(None, client=client).result(timeout=30)
    assert failed.value.error is not None and failed.value.error.type == "RunCrashedError"

    def exits() -> list[str]:
        lines = sup.log().splitlines()
        return [x for x in lines if "worker 1 (pid" in x and "exited with code 0" in x]

    # the run is failed before its third child's exit is logged
    wait_until(lambda: len(exits()) == 3, 10, message="three exits logged")
    assert all(" ERROR " in x and "while running a handler" in x for x in exits()), exits()


@pytest.mark.parametrize("changer", ["ignore_sigchld", "reap_on_sigchld"])
def test_a_handler_that_took_sigchld_does_not_falsify_the_next_runs_exit_statuses(
    supervisor: Callable[..., Supervisor], client: Client, changer: str
) -> None:
    """A handler that ignored SIGCHLD (or reaped on it) left it so for every later
    run of its child: each process those runs started was reaped before they
    could wait for it, and ``subprocess`` reported every exit status as 0 (a
    failing ``ffmpeg`` or ``pg_dump`` under ``check=True`` passed as a success)."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    assert flows_misbehave.exit_status.run(7, client=client).result(timeout=20)[0] == 7
    pid = getattr(flows_misbehave, changer).run(None, client=client).result(timeout=20)
    status, same = flows_misbehave.exit_status.run(7, client=client).result(timeout=20)
    assert same == pid  # the same child ran both
    assert status == 7, sup.log()[-2000:]
    assert "SIGCHLD" in sup.log()


def test_a_handler_that_reset_sigpipe_does_not_let_a_closed_pipe_kill_the_next_runs(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A handler that reset SIGPIPE to its default action (the idiom of tools
    whose output goes into ``head``) left it so for every later run of its child:
    a later write into a pipe or socket whose reader was gone (a consumer that
    quit early, a peer or a Redis server that closed the connection) killed the
    child instead of failing the write with EPIPE: the run was put back, charged
    a crash and executed again."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    pid = flows_misbehave.default_sigpipe.run(None, client=client).result(timeout=20)
    handle = flows_misbehave.write_to_a_closed_pipe.run(None, client=client)
    assert handle.result(timeout=30) == ["EPIPE", pid], sup.log()[-2000:]
    state = client.get_run(handle.id)
    assert state is not None and state.crash_count == 0, state
    assert "SIGPIPE" in sup.log()


@pytest.mark.parametrize("action", ["raise", "default"])
def test_an_alarm_a_handler_left_armed_does_not_reach_the_next_run(
    supervisor: Callable[..., Supervisor], client: Client, action: str
) -> None:
    """A handler that armed a watchdog (``signal.signal(SIGALRM, ...)`` and
    ``signal.alarm``) and returned before it fired left it armed: it fired in the
    middle of the next run of its child, which failed with the earlier run's
    watchdog error (or, with SIGALRM's default action, lost its child: put back,
    charged a crash, executed again)."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    pid = flows_misbehave.leave_an_alarm.run(action, client=client).result(timeout=20)
    handle = flows_misbehave.doze.run(3.0, client=client)
    assert handle.result(timeout=30) == pid, sup.log()[-2000:]
    state = client.get_run(handle.id)
    assert state is not None and state.crash_count == 0 and len(state.attempts) == 1, state
    assert "SIGALRM" in sup.log()


@pytest.mark.parametrize("mask", [0o077, 0o000])
def test_a_handler_that_changed_the_umask_does_not_change_the_next_runs_files(
    supervisor: Callable[..., Supervisor], client: Client, mask: int
) -> None:
    """A handler's ``os.umask`` stayed for every later run of its child: the files
    those runs created were readable by nobody else (0o077: a downstream
    reader failed) or writable by everyone (0: a security hole), depending on
    which runs the child had run before."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    home, pid = flows_misbehave.umask_now.run(None, client=client).result(timeout=20)
    assert home != mask  # the supervisor's
    assert flows_misbehave.set_umask.run(mask, client=client).result(timeout=20) == pid
    assert flows_misbehave.umask_now.run(None, client=client).result(timeout=20) == [home, pid]
    assert "umask" in sup.log()
