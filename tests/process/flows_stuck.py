"""Workflows whose code keeps their process (the supervisor's child) from
serving, or fills what the supervisor writes its log to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


def _note_hook(ctx: Any) -> None:
    """Tell the test that this hook began, and in which process."""
    client = get_default_client()
    assert client is not None
    client.redis.rpush(f"{client.keys.tag}:hook-began", os.getpid())


def _hook_sleeps(ctx: Any) -> None:
    _note_hook(ctx)
    time.sleep(10**6)


def _hook_spins(ctx: Any) -> None:
    _note_hook(ctx)
    while True:
        pass


@define_workflow("hook-sleeps", queue="p", max_concurrency=10, on_failure=_hook_sleeps)
def hook_sleeps(ctx: Context[Any]) -> None:
    """Fails; its on_failure hook never returns (sleeps)."""
    raise RuntimeError("fails for good")


@define_workflow("hook-spins", queue="p", max_concurrency=10, on_failure=_hook_spins)
def hook_spins(ctx: Context[Any]) -> None:
    """Fails; its on_failure hook never returns (a busy loop)."""
    raise RuntimeError("fails for good")


@define_workflow("fill-stderr", queue="p", max_concurrency=10)
def fill_stderr(ctx: Context[Any]) -> int:
    """Fill the pipe on stderr (through a description of its own, without
    blocking) until it is full, then log how much it wrote; returns its pid."""
    fd = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK)
    written = 0
    try:
        while True:
            written += os.write(fd, b"x" * 4095 + b"\n")
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    logging.getLogger(__name__).warning("stderr filled with %d bytes", written)
    return os.getpid()


@define_workflow("block-signals", queue="p", max_concurrency=10)
def block_signals(ctx: Context[Any]) -> int:
    """Blocks SIGALRM, SIGTERM and SIGQUIT in its thread (the process's main
    thread) and leaves them blocked, as code that guards a critical section with
    ``pthread_sigmask`` and forgets (or fails) to unblock does."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGQUIT})
    return os.getpid()


@define_workflow("slow-step", queue="p", max_concurrency=10)
def slow_step(ctx: Context[Any]) -> int:
    """A step that would sleep for days, with a one-second ``timeout``."""
    ctx.step.run("slow", time.sleep, 10**6, timeout=1.0)
    return os.getpid()


_KEPT: list[Any] = []  # files the close-fds-keep-files handler keeps open


@define_workflow("close-fds-keep-files", queue="p", max_concurrency=10)
def close_fds_keep_files(ctx: Context[str]) -> int:
    """Closes every descriptor above 2 (what daemonizing code does), then opens
    64 files in the directory ``input`` and keeps them open: they take the
    numbers that were closed. Returns how many descriptors it closed."""
    before = len(os.listdir("/proc/self/fd"))
    os.closerange(3, 1 << 16)
    for n in range(64):
        _KEPT.append(open(os.path.join(ctx.input, f"file-{n}"), "wb"))  # noqa: SIM115
    return before


async def _stubborn() -> None:
    """Ignores its cancellation (a retry loop that catches CancelledError)."""
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


@define_workflow("stubborn-task", queue="p", max_concurrency=10)
async def stubborn_task(ctx: Context[Any]) -> int:
    """Returns at once, leaving behind a task that ignores cancellation."""
    _TASKS.append(asyncio.get_running_loop().create_task(_stubborn()))
    await asyncio.sleep(0.1)  # the task is in its loop
    return os.getpid()


@define_workflow("async-pid", queue="p", max_concurrency=10)
async def async_pid(ctx: Context[Any]) -> int:
    await asyncio.sleep(0)
    return os.getpid()


_TASKS: list[Any] = []  # keeps the stubborn tasks referenced


@define_workflow("reset-term", queue="p", max_concurrency=10)
def reset_term(ctx: Context[Any]) -> int:
    """Resets SIGTERM to its default action (terminate), as some libraries do."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return os.getpid()


class _FlushHangs(logging.Handler):
    """A log handler whose flush never returns (a network handler to a host gone)."""

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        time.sleep(10**6)


@define_workflow("hanging-log-handler", queue="p", max_concurrency=10)
def hanging_log_handler(ctx: Context[Any]) -> int:
    """Adds a handler to the root logger whose flush never returns."""
    logging.getLogger().addHandler(_FlushHangs())
    return os.getpid()
