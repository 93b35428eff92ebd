"""Workflows whose handlers misbehave toward their process (the supervisor's
child): they change its signal handling, as some libraries do when imported or
first used inside a handler."""

from __future__ import annotations

import os
import signal
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
