"""How a step function is called: its ``timeout`` (``ITIMER_REAL`` in the main
thread, a helper thread elsewhere; an ``asyncio`` deadline in async handlers), a
coroutine run to its end, a ``SystemExit`` made the step's error
(:class:`StepExitError`). Used by ``steps.py``; no Redis here."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import signal
import threading
from collections.abc import Callable
from typing import Any

from .errors import StepExitError, StepTimeoutError

__all__ = ["call_async", "call_with_timeout", "check_step_timeout"]


class _StepDeadline(BaseException):
    """Private: raised by the SIGALRM handler; turned into StepTimeoutError."""


def _alarm_usable() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return False
    return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)


def _call_with_alarm(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float,
) -> Any:
    """:func:`call_with_timeout` by ``ITIMER_REAL`` (main thread, SIGALRM unused).

    Once the deadline fired, the step timed out whatever ``fn`` does with it: a
    step that swallows it (a bare ``except:`` around a retry) and returns late, or
    raises something else, used to be recorded as that outcome, a success past
    its timeout included; its late outcome is discarded, as in the thread path."""
    fired = False

    def on_alarm(signum: int, frame: object) -> None:
        nonlocal fired
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
            # Our timer still runs: a SIGALRM someone sent (``pkill -ALRM -f
            # redflow``), not the deadline; it failed the step "timed out after
            # 60 s" at once.
            return
        fired = True
        raise _StepDeadline()

    timed_out = StepTimeoutError(f"step {name!r} timed out after {timeout:g} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            value = _own_outcome(name, fn, args, kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _StepDeadline:
        raise timed_out from None
    except Exception as exc:  # not BaseException: a supervisor's abort or a Suspend passes
        if fired:
            raise timed_out from exc
        raise
    finally:
        signal.signal(signal.SIGALRM, previous)
    if fired:
        raise timed_out
    return value


def _settled(value: Any) -> Any:
    """``value``, or a coroutine's result (run in a new event loop): it used to be
    stored as is, failing the step with OutputSerializationError (never retried)."""
    if asyncio.iscoroutine(value):
        return asyncio.run(value)
    return value


def _own_outcome(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``fn``'s value (a coroutine's run to its end), or its error: a ``SystemExit``
    becomes :class:`StepExitError`. It used to end the worker process: the run went
    back, ran the step again once per crash, and failed as a crash-looping run."""
    try:
        return _settled(fn(*args, **kwargs))
    except SystemExit as exc:
        raise StepExitError(name, exc.code) from exc


async def _own_outcome_async(name: str, value: Any) -> Any:
    """:func:`_own_outcome` for an async step: ``value`` may be awaitable."""
    try:
        if asyncio.iscoroutine(value):
            value = await value
        return value
    except SystemExit as exc:
        raise StepExitError(name, exc.code) from exc


def call_with_timeout(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Call ``fn`` and raise :class:`StepTimeoutError` after ``timeout`` seconds.

    A coroutine function (or any ``fn`` that returns a coroutine) is run to its end
    in an event loop of its own: a sync handler's step may be ``async def``."""
    if timeout is None:
        return _own_outcome(name, fn, args, kwargs)
    if _alarm_usable():
        return _call_with_alarm(name, fn, args, kwargs, timeout)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _own_outcome(name, fn, args, kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"redflow-step-{name[:40]}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StepTimeoutError(f"step {name!r} timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


#: The longest step ``timeout``, in seconds (about 31 years): ``Thread.join`` and
#: ``setitimer`` take no more than a ``time_t``'s worth (``threading.TIMEOUT_MAX``,
#: 292 years), and past it a sync handler's step failed with ``OverflowError``
#: while an async one's was accepted.
MAX_STEP_TIMEOUT = 1e9


def check_step_timeout(timeout: object) -> float | None:
    """A step's ``timeout``: None, or a finite number of seconds > 0 and at most
    :data:`MAX_STEP_TIMEOUT` (refused before the step is recorded: inf, nan and
    1e10 used to fail the step itself in a sync handler, from ``setitimer`` /
    ``Thread.join``, and be retried like its own error)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"step timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_STEP_TIMEOUT:
        raise ValueError(
            f"step timeout must be a finite number of seconds > 0 and at most "
            f"{MAX_STEP_TIMEOUT:g} (about 31 years), not {timeout!r}"
        )
    return float(timeout)


def _in_own_thread(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    """``fn(*args, **kwargs)`` in a daemon thread of its own, as a future of the loop.

    Not the loop's default executor (``asyncio.to_thread``): a call that hangs past
    its timeout would keep one of its few threads for good, and once all were
    stuck every later step (and the loop's DNS lookups) would wait behind them."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # timed out and cancelled meanwhile: the outcome is moot
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(fn, *args, **kwargs)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name=f"redflow-step-{name[:40]}", daemon=True).start()
    return future


async def call_async(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Await ``fn`` (a coroutine function, or a sync function run in a thread when a
    timeout applies) and raise :class:`StepTimeoutError` after ``timeout`` seconds.

    The deadline is detected by ``asyncio.wait``, not by catching ``TimeoutError``:
    a step function that raises its own ``TimeoutError`` (a network timeout, say)
    must reach the handler as that error, not be relabelled as a step timeout.
    """
    if timeout is None:
        try:
            value = fn(*args, **kwargs)
        except SystemExit as exc:
            raise StepExitError(name, exc.code) from exc
        return await _own_outcome_async(name, value)
    task: asyncio.Future[Any]
    if asyncio.iscoroutinefunction(fn):
        # Wrapped in the task: a SystemExit out of a task ends the event loop.
        task = asyncio.ensure_future(_own_outcome_async(name, fn(*args, **kwargs)))
    else:
        task = _in_own_thread(name, _own_outcome, (name, fn, args, kwargs), {})
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # outcome is moot now
            await task
        raise StepTimeoutError(f"step {name!r} timed out after {timeout:g} s")
    return task.result()
