"""Workflows whose handlers misbehave toward their process (the supervisor's
child): they change its signal handling, as some libraries do when imported or
first used inside a handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


@define_workflow("deaf", queue="p", max_concurrency=10)
def deaf(ctx: Context[Any]) -> int:
    """Ignores SIGTERM from now on (for the rest of its process's life)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return os.getpid()


@define_workflow("own-term-handler", queue="p", max_concurrency=10)
def own_term_handler(ctx: Context[Any]) -> int:
    """Installs its own SIGTERM handler, which only takes note."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    return os.getpid()


@define_workflow("chdir", queue="p", max_concurrency=10)
def chdir(ctx: Context[str]) -> str:
    """Changes its process's working directory to ``input`` and leaves it there."""
    os.chdir(ctx.input)
    return os.getcwd()


@define_workflow("cwd", queue="p", max_concurrency=10)
def cwd(ctx: Context[Any]) -> str:
    return os.getcwd()


@define_workflow("fork-escape", queue="p", max_concurrency=10)
def fork_escape(ctx: Context[Any]) -> str:
    """Forks; the forked branch fails before its ``os._exit`` (the common
    ``if os.fork() == 0: work(); os._exit(0)`` with a ``work()`` that raises)."""
    pid = os.fork()
    if pid == 0:
        raise RuntimeError("the forked branch failed before its os._exit")
    _, status = os.waitpid(pid, 0)
    return f"forked process ended with {os.waitstatus_to_exitcode(status)}"


def _fork_in_step(run_id: str) -> str:
    pid = os.fork()
    if pid == 0:
        raise RuntimeError("the forked branch of the step failed before its os._exit")
    _, status = os.waitpid(pid, 0)
    # what the run's record of this step says now (the forked copy wrote it as
    # failed, with the run's lease, while this step was still running)
    client = get_default_client()
    assert client is not None  # the worker's, in a supervisor child
    steps = client.get_run_steps(run_id) or []
    seen = [str(s.status) for s in steps if s.name == "fork"]
    return f"forked process ended with {os.waitstatus_to_exitcode(status)}; record {seen}"


@define_workflow("fork-in-step", queue="p", max_concurrency=10)
def fork_in_step(ctx: Context[Any]) -> str:
    """The same fork, inside a step function: the forked branch's exception
    reaches the step runner, which records the step's outcome."""
    return ctx.step.run("fork", _fork_in_step, ctx.run.id)


@define_workflow("exit-zero", queue="p", max_concurrency=10)
def exit_zero(ctx: Context[Any]) -> None:
    """Ends its process with status 0 in the middle of the run."""
    os._exit(0)


@define_workflow("ignore-sigchld", queue="p", max_concurrency=10)
def ignore_sigchld(ctx: Context[Any]) -> int:
    """Ignores SIGCHLD (``SIG_IGN``: exited processes are reaped by the kernel, as
    some daemon and process-pool code sets it) and leaves it so."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    return os.getpid()


@define_workflow("reap-on-sigchld", queue="p", max_concurrency=10)
def reap_on_sigchld(ctx: Context[Any]) -> int:
    """Installs a SIGCHLD handler that reaps every exited process (an event
    loop's or a server's) and leaves it so."""

    def reap(signum: int, frame: object) -> None:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass

    signal.signal(signal.SIGCHLD, reap)
    return os.getpid()


@define_workflow("exit-status", queue="p", max_concurrency=10)
def exit_status(ctx: Context[int]) -> list[int]:
    """The exit status of a process that exits with ``input`` (subprocess), and
    this worker's pid."""
    done = subprocess.run([sys.executable, "-c", f"raise SystemExit({int(ctx.input)})"])
    return [done.returncode, os.getpid()]


@define_workflow("default-sigpipe", queue="p", max_concurrency=10)
def default_sigpipe(ctx: Context[Any]) -> int:
    """Resets SIGPIPE to its default action (the idiom of command-line tools
    whose output goes into ``head``) and leaves it so."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return os.getpid()


@define_workflow("write-to-a-closed-pipe", queue="p", max_concurrency=10)
def write_to_a_closed_pipe(ctx: Context[Any]) -> list[Any]:
    """Writes into a pipe whose reader is gone (a consumer that quit early, a
    peer that closed its socket): EPIPE, and this worker's pid."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        os.write(write_end, b"x")
        return ["written", os.getpid()]
    except BrokenPipeError:
        return ["EPIPE", os.getpid()]
    finally:
        os.close(write_end)


def _watchdog(signum: int, frame: object) -> None:
    raise TimeoutError("the watchdog of an earlier run fired")


@define_workflow("leave-an-alarm", queue="p", max_concurrency=10)
def leave_an_alarm(ctx: Context[str]) -> int:
    """Arms a 1.5 s watchdog (``signal.alarm``'s timer) and returns without
    disarming it, as a handler that ended before its watchdog does: ``input``
    "raise" installs a SIGALRM handler that raises, "default" the default action
    (which ends the process)."""
    handler = _watchdog if ctx.input == "raise" else signal.SIG_DFL
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    return os.getpid()


@define_workflow("doze", queue="p", max_concurrency=10)
def doze(ctx: Context[float]) -> int:
    """Sleeps ``input`` seconds, then returns this worker's pid."""
    time.sleep(float(ctx.input))
    return os.getpid()


@define_workflow("set-umask", queue="p", max_concurrency=10)
def set_umask(ctx: Context[int]) -> int:
    """Sets its process's umask to ``input`` and leaves it so; returns its pid."""
    os.umask(int(ctx.input))
    return os.getpid()


@define_workflow("umask-now", queue="p", max_concurrency=10)
def umask_now(ctx: Context[Any]) -> list[int]:
    """This worker's umask (read, not changed) and pid."""
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("Umask:"))
    return [int(line.split()[1], 8), os.getpid()]
