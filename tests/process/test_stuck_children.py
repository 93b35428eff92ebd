"""Ways a supervisor used to stop serving without noticing it: its own log
writes blocked on a stderr nobody read, and a child stuck in an ``on_failure``
hook that never returned."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from redflow_mp import Client
from redflow_mp.errors import RunFailedError
from tests.process import flows, flows_stuck
from tests.process.conftest import ROOT, Supervisor, wait_until
from tests.process.test_observability import _get, _scrape
from tests.redis_server import free_port

pytestmark = pytest.mark.process

MODULES = ("tests.process.flows", "tests.process.flows_stuck")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _PipedSupervisor(Supervisor):
    """A supervisor whose stdout and stderr go to a pipe the test reads only when
    it chooses to (:meth:`read_from_now_on`)."""

    def start(self) -> Supervisor:
        self._read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
        )
        os.close(write_fd)
        self._log = open(os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self._seen = bytearray()
        return self

    def read_from_now_on(self) -> None:
        def pump() -> None:
            while chunk := os.read(self._read_fd, 65536):
                self._seen += chunk

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def close_pipe(self) -> None:
        """Close the read end once nobody reads it: the pump ends at EOF (every
        writer gone, after stop()). Closed under a pump still reading, the pump's
        next read failed (EBADF, reported as an error of the next test) or read
        whatever file got the number next."""
        pump: threading.Thread | None = getattr(self, "_pump", None)
        if pump is not None:
            pump.join(timeout=10)
            if pump.is_alive():
                return  # a writer outlived the supervisor: leave the descriptor be
        with contextlib.suppress(OSError):
            os.close(self._read_fd)

    def log(self) -> str:
        return self._seen.decode(errors="replace")


def test_a_stderr_nobody_reads_never_stops_the_supervisor(
    redis_url: str, prefix: str, tmp_path: object, client: Client
) -> None:
    """Once the pipe on its stderr was full (64 KiB nobody read), the parent
    blocked in its next log line: a child SIGKILLed was never replaced, a TERM
    never drained. Its lines now wait in a buffer, written once the reader is
    back (the count of lines dropped past the buffer: tests/unit/test_logsink.py)."""
    sup = _PipedSupervisor(redis_url, prefix, ROOT / "unused.log", procs=2, modules=MODULES)
    sup.start()
    try:
        sup.wait_workers(2)
        filler = flows_stuck.fill_stderr.run(None, client=client).result(timeout=20)
        (victim,) = [w.pid for w in sup.workers() if w.pid != filler]
        os.kill(victim, signal.SIGKILL)  # the parent logs this exit (an ERROR line)
        wait_until(
            lambda: len([w for w in sup.workers() if w.pid != victim]) == 2,
            10,
            message="the killed worker to be replaced",
        )
        assert flows.pid.run(None, client=client).result(timeout=20) != victim
        sup.read_from_now_on()
        # the lines that waited for the reader follow: the parent's (the exit of
        # the one killed) and the filler's, which has logged nothing since
        wait_until(lambda: f"(pid {victim})" in sup.log(), 10, message="the parent's lines")
        wait_until(lambda: "stderr filled with" in sup.log(), 10, message="the child's lines")
        sup.send(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0
    finally:
        sup.stop()
        sup.close_pipe()


def test_an_on_failure_hook_that_never_returns_costs_its_worker_not_the_slot(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A hook that never returned (a sleep, a busy loop) held its child from
    every later run, unseen: with both children in such hooks nothing else ran.
    The runs' failures are written before the hooks start; each stuck child is
    killed 60 s into its hook and replaced."""
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    handles = [
        flows_stuck.hook_sleeps.run(None, client=client),
        flows_stuck.hook_spins.run(None, client=client),
    ]
    for handle in handles:
        with pytest.raises(RunFailedError):
            handle.result(timeout=20)
    began_key = f"{client.keys.tag}:hook-began"
    wait_until(lambda: client.redis.llen(began_key) == 2, 20, message="both hooks to begin")
    hooked = {int(p) for p in client.redis.lrange(began_key, 0, -1)}
    assert len(hooked) == 2  # one stuck hook in each child
    began = time.monotonic()
    pid = flows.pid.run(None, client=client).result(timeout=90)
    assert pid not in hooked
    assert time.monotonic() - began < 70
    wait_until(lambda: all(_gone(p) for p in hooked), 10, message="the stuck children to go")
    stuck = [x for x in sup.log().splitlines() if "on_failure hook ran past 60 s" in x]
    assert len(stuck) == 2, sup.log()[-3000:]
    sup.wait_workers(2)


def test_signals_a_handler_left_blocked_are_unblocked_before_the_next_run(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A handler that left SIGALRM blocked (``pthread_sigmask``) disarmed every
    later step ``timeout`` of its child: a step stuck for good then held its run
    and its child forever (no run timeout by default), and nothing said so."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    child = flows_stuck.block_signals.run(None, client=client).result(timeout=20)
    with pytest.raises(RunFailedError) as failed:
        flows_stuck.slow_step.run(None, client=client).result(timeout=20)
    assert failed.value.error is not None
    assert failed.value.error.type == "StepTimeoutError", failed.value.error
    assert flows.pid.run(None, client=client).result(timeout=20) == child
    assert "a handler left SIGALRM, SIGQUIT, SIGTERM blocked in this worker" in sup.log()


def test_a_handler_that_closed_the_workers_descriptors_gets_no_metrics_in_its_files(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """A handler that closed every descriptor above 2 (``os.closerange``, as
    daemonizing code does) closed its child's pipe to the parent's metrics, and
    the next file (or Redis connection) it opened took that number: the child
    wrote its metric deltas into it once a second (into a connection: bytes
    Redis reads as commands), and the parent's counters of that child stopped."""
    port = free_port()
    sup = supervisor(procs=1, modules=MODULES, args=["--metrics-port", str(port)])
    sup.wait_workers(1)
    files = tmp_path / "files"
    files.mkdir()
    flows_stuck.close_fds_keep_files.run(str(files), client=client).result(timeout=20)

    def counted() -> float:
        flows.pid.run(None, client=client).result(timeout=20)
        finished = "redflow_runs_finished_total"
        return _get(_scrape(port), finished, workflow="pid", status="succeeded")

    wait_until(lambda: counted() >= 3, 15, interval=0.2, message="the runs in the metrics")
    written = {p.name: p.stat().st_size for p in files.iterdir() if p.stat().st_size}
    assert written == {}
    assert "a handler closed this worker's metrics pipe" in sup.log()


def test_a_task_an_async_handler_left_that_ignores_cancellation_holds_nothing(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """The tasks an async handler leaves behind are cancelled and awaited once it
    returns; one that ignored its cancellation (a loop catching CancelledError)
    was awaited forever: the run's result was never written and its child never
    claimed again (no run timeout by default), and nothing said so."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    # the grace is 5 s: the result came after it (no run timeout: without the
    # grace it never came; no wall-clock bound)
    child = flows_stuck.stubborn_task.run(None, client=client).result(timeout=30)
    assert flows_stuck.async_pid.run(None, client=client).result(timeout=5) == child
    assert "ignored its cancellation" in sup.log()


def test_a_handler_that_reset_sigterm_to_its_default_does_not_cost_the_next_run(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A handler that reset SIGTERM to its default action left its child to be
    killed by the next drain's (or HUP's, TTOU's) TERM in the middle of its next
    run: the run was put back and charged a crash instead of finishing."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    flows_stuck.reset_term.run(None, client=client).result(timeout=20)
    handle = flows.sleepy.run(1.0, client=client)
    started = f"{client.keys.tag}:sleepy-started"
    wait_until(lambda: client.redis.exists(started), 20, message="the run to start")
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=20) == 0, sup.log()
    assert handle.result(timeout=5)["slept"] == 1.0
    assert "a handler reset SIGTERM to the default action" in sup.log()


def test_a_log_handler_that_hangs_in_its_flush_does_not_keep_a_child_alive(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """A child flushes the root logger's handlers as it leaves: one a handler
    added whose flush never returned kept it alive for good (a child retired by
    HUP never left; a drain waited for graceful_timeout, 30 s)."""
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    old = flows_stuck.hanging_log_handler.run(None, client=client).result(timeout=20)
    sup.send(signal.SIGHUP)
    wait_until(lambda: _gone(old), 20, message=f"the retired child {old} to leave")
    assert flows.pid.run(None, client=client).result(timeout=20) != old
