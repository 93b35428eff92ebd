"""Durable waits: ``run_workflow(s)``, ``sleep``/``sleep_until`` and
``wait_for_event`` suspend the run instead of holding its process.

A wait step first looks at its condition (children finished, time reached,
event pending). When it holds, the step completes and is recorded like any
step. When it does not, the step records what it waits for (a ``waiting`` step
record: its children, its wake-up time, so that replays keep the same ones) and
raises :class:`Suspend`, a ``BaseException`` that user code's ``except
Exception`` cannot swallow. The executor turns it into a ``suspend`` outcome;
the worker sends ``suspend_run.lua``, which checks the condition again
atomically and either answers "resume" (the worker executes the run again at
once) or suspends it (lease and process freed, concurrency slot kept). When the
condition holds later, the run is queued again and executed from the top:
every finished step, the finished wait included, returns its recorded result.

A wait step that failed (a timeout, a failed child) replays its failure within
the same attempt, so a handler that catches it and waits again sees the same
history on every resume. An async handler that gathers several waits suspends
once, on all of them (each wait yields to its siblings before suspending), after
the sibling ``step.run`` calls already in flight have finished and been recorded,
so that each of them runs once.

The module owns the sleep and event waits and puts the parts together
(:class:`WaitMixin`): the record, the suspension and the argument checks are
``waitbase.py``'s, the children wait ``childwaits.py``'s; their public names
are re-exported here.
"""

from __future__ import annotations

from typing import Any

from . import codec, tracing
from .childwaits import ChildWaits
from .codec import StoredStep
from .errors import LeaseLostError, StepTimeoutError
from .options import check_name
from .waitbase import (
    PendingWait,
    Suspend,
    Waiting,
    check_sleep_seconds,
    check_wait_timeout,
    check_wake_time,
    merge_waits,
    now_ms,
)

__all__ = [
    "PendingWait",
    "Suspend",
    "WaitMixin",
    "check_sleep_seconds",
    "check_wake_time",
    "merge_waits",
]


class WaitMixin(ChildWaits):
    """The wait steps' logic, shared by the sync and async step APIs."""

    __slots__ = ()

    # ------------------------------------------------------------------ sleep

    @tracing.traced_wait  # a span per wait step, with the OpenTelemetry extra
    def _sleep_check(self, name: object, seconds: float | None, until_ms: int | None) -> Any:
        step, done, value, waiting, started = self._wait_begin(name, "sleep")
        if done:
            return True, value
        now = self._server_ms()
        if waiting is None or waiting.wake_at is None:
            wake = until_ms if until_ms is not None else now + int((seconds or 0.0) * 1000)
            if wake <= now:
                return True, self._succeed(step, None, now)
            started = now
            waiting = Waiting(kind="sleep", wake_at=wake)
            self._record_waiting(step, waiting, started)
        elif until_ms is None:  # sleep(seconds): relative
            waiting, started = self._rebased(step, waiting, started, now)
        if now >= waiting.wake_at:  # type: ignore[operator]
            return True, self._succeed(step, None, started)
        return False, PendingWait(step, "sleep", wake_at=waiting.wake_at)

    # ------------------------------------------------------------------ event

    @tracing.traced_wait  # a span per wait step, with the OpenTelemetry extra
    def _event_check(self, name: object, event: object, timeout: object) -> Any:
        limit = check_wait_timeout(timeout)
        ev = check_name(event, "event name")
        step, done, value, waiting, started = self._wait_begin(name, "event")
        if done:
            return True, value

        def body() -> tuple[bool, Any]:
            nonlocal waiting, started
            ex = self._ex
            record = StoredStep(
                status="succeeded",
                started_at=started or now_ms(),
                finished_at=now_ms(),
                attempt=ex.attempt,
                seq=0,
            )
            data = codec.encode_step(record)
            head = data[:-1] + b',"outputJson":'
            progress = ex.made_progress()
            code, payload, stored = ex.durable(
                lambda: ex.runs.scripts_for(ex.run_id).consume_event(
                    ex.run_id, ex.token, step, ev, (head, b"}"), ex.lease_ms, progress=progress
                ),
                f"consuming event {ev!r}",
            )
            if code == -1:
                ex.mark_lost()
                raise LeaseLostError(f"run {ex.run_id}: lease lost while waiting for {ev!r}")
            if code == 1 and payload is not None and stored is not None:
                ex.steps_cache[step] = stored
                ex.fresh += 1
                ex.record_step("succeeded", record.started_at)
                ex.set_step(None)
                return True, codec.decode_json(payload)
            now = self._server_ms()
            if waiting is None:
                waiting = Waiting(kind="event")
                if limit is not None:
                    started = now
                    waiting = Waiting(kind="event", wake_at=now + int(limit * 1000))
                    self._record_waiting(step, waiting, started)
            else:  # the timeout, relative: re-based if the clock went back
                waiting, started = self._rebased(step, waiting, started, now)
            if waiting.wake_at is not None and now >= waiting.wake_at:
                raise StepTimeoutError(
                    f"step {step!r} timed out after {limit or 0:g} s waiting for event {ev!r}"
                )
            return False, PendingWait(step, "event", events=(ev,), wake_at=waiting.wake_at)

        return self._guarded(step, started, body)
