"""The ground every durable wait stands on: what a wait records and how a run suspends.

Owns :class:`Suspend` (the ``BaseException`` that suspends a run),
:class:`PendingWait` (one wait's unmet condition) and :func:`merge_waits` (all
of an execution's waits as one suspension), the ``waiting`` step record
(:class:`Waiting`: what the wait started, its kind and deadline), the checks
of the wait arguments, and :class:`WaitBase`: the bookkeeping every wait step
shares (begin: replay or resume a record of this attempt; record; re-base a
relative deadline after the Redis clock went back; suspend, gathering the
sibling waits of an async handler). The waits themselves are in ``waits.py``
(sleep, events) and ``childwaits.py`` (children).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from . import codec
from .codec import RunWait, StoredStep
from .errors import (
    DuplicateStepError,
    ErrorInfo,
    LeaseLostError,
    RedflowError,
    RunCanceledError,
    RunFailedError,
    StepTimeoutError,
    UnknownWorkflowError,
    WaitDeadlockError,
)
from .execution import Execution
from .options import MAX_RUN_AT, check_name
from .step_calls import MAX_STEP_TIMEOUT

__all__ = [
    "CHILD_OUTPUTS",
    "ChildOutputs",
    "PendingWait",
    "Suspend",
    "WaitBase",
    "Waiting",
    "begin_step",
    "cached_step",
    "check_sleep_seconds",
    "check_wait_timeout",
    "check_wake_time",
    "merge_waits",
    "now_ms",
    "replayed",
    "waiting_decoder",
]

CHILD_OUTPUTS = codec.CHILD_OUTPUTS  # (defined there for get_run_steps' StepState)


@dataclass(slots=True, frozen=True)
class ChildOutputs:
    """A replayed children wait recorded by reference (:data:`CHILD_OUTPUTS`)."""

    ids: list[str]


# Yields an async wait makes before suspending, so that the sibling waits of an
# asyncio.gather reach their own wait first (each registers without awaiting I/O).
_SIBLING_YIELDS = 4


class Suspend(BaseException):
    """Internal: the run suspends on the waits collected in its execution."""


def begin_step(ex: Execution, name: object) -> str:
    """The checked name of a step about to begin in ``ex``: raises :class:`Suspend`
    when a sibling wait decided to suspend (no more side effects), and
    ``DuplicateStepError`` for a name used before in this execution; reports a
    cancel request. Shared by every kind of step (run, emit, waits)."""
    step = check_name(name, "step name")
    if ex.suspending:
        raise Suspend()
    if step in ex.seen:
        raise DuplicateStepError(
            f"step {step!r} was already used in this execution of run {ex.run_id}; "
            "step names must be unique within a run"
        )
    ex.seen.add(step)
    ex.check_cancelled()
    return step


def cached_step(raw: bytes | str | None) -> StoredStep | None:
    """The step record ``raw`` (from the run's steps cache) decoded, or None when
    absent or unreadable (the step then runs as if new)."""
    if raw is None:
        return None
    try:
        return codec.decode_step(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass(slots=True)
class PendingWait:
    """One wait step's unmet condition."""

    step: str
    kind: str  # children | sleep | event
    children: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    wake_at: int | None = None


class Waiting(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The output of a ``waiting`` step record: what the wait step started, and
    which kind of wait it is (sleep | event | children; '' in records written
    before the kind was kept)."""

    kind: str = ""
    wake_at: int | None = None
    # msgspec's field: dataclasses.field here made a record without children
    # decode with a ``Field`` object in their place.
    children: list[str] = msgspec.field(default_factory=list)

    def of_kind(self, kind: str) -> bool:
        """Whether this record was written by a wait of ``kind``. A deploy may put
        another kind of wait under the step's name while the run is suspended:
        its record is then not used (a sleep read as a children wait had no
        children; a sleep took the old wait's deadline as its own time)."""
        if self.kind:
            return self.kind == kind
        return (kind == "children") == bool(self.children)


waiting_decoder = msgspec.json.Decoder(Waiting)


def merge_waits(waits: Sequence[PendingWait]) -> RunWait:
    """One suspension for every wait of an execution: all children, any event,
    the earliest wake-up time."""
    children: dict[str, None] = {}
    events: dict[str, None] = {}
    wake: list[int] = []
    for w in waits:
        children.update(dict.fromkeys(w.children))
        events.update(dict.fromkeys(w.events))
        if w.wake_at is not None:
            wake.append(w.wake_at)
    return RunWait(
        steps=[w.step for w in waits],
        kinds=[w.kind for w in waits],
        children=list(children),
        events=list(events),
        wake_at=min(wake) if wake else None,
    )


def check_sleep_seconds(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"sleep seconds must be a number, not {type(seconds).__name__}")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_STEP_TIMEOUT:
        raise ValueError(
            f"sleep seconds must be a finite number >= 0 and at most {MAX_STEP_TIMEOUT:g} "
            f"(about 31 years; sleep_until takes a later time), not {seconds!r}"
        )
    return float(seconds)


def check_wake_time(when: object) -> int:
    """``sleep_until``'s time as epoch ms: an aware datetime or epoch seconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
            raise ValueError(
                "sleep_until got a naive datetime; pass an aware one "
                "(e.g. datetime.now(timezone.utc) + timedelta(hours=1))"
            )
        return int(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise TypeError("sleep_until needs an aware datetime or epoch seconds")
    if not math.isfinite(when) or when < 0:
        raise ValueError(f"sleep_until needs a finite, non-negative epoch time, not {when!r}")
    if when > MAX_RUN_AT:
        raise ValueError(f"sleep_until needs a time before the year 3000, not {when!r}")
    return int(when * 1000)


def check_wait_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError("wait timeout must be a number of seconds or None")
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_STEP_TIMEOUT:
        raise ValueError(
            f"wait timeout must be a finite number of seconds > 0 and at most "
            f"{MAX_STEP_TIMEOUT:g} (about 31 years; None waits for ever), not {timeout!r}"
        )
    return float(timeout)


def replayed(info: ErrorInfo | None) -> Exception:
    """The exception a failed wait step raises again when it is replayed."""
    message = info.message if info is not None else "wait step failed"
    kind = info.type if info is not None else ""
    exc: Exception
    if kind == "StepTimeoutError":
        exc = StepTimeoutError(message)
    elif kind == "WaitDeadlockError":
        exc = WaitDeadlockError(message)
    elif kind == "UnknownWorkflowError":
        exc = UnknownWorkflowError(message)
    elif kind == "RunCanceledError":
        exc = RunCanceledError("", info)
        exc.args = (message,)
    else:
        exc = RunFailedError("", info)
        exc.args = (message,)
    return exc


def now_ms() -> int:
    return int(time.time() * 1000)


class WaitBase:
    """The bookkeeping and the suspension shared by every wait step."""

    __slots__ = ()
    _ex: Execution

    # provided by the step core
    def _succeed(
        self, step: str, value: Any, started: int, children: Sequence[str] | None = None
    ) -> Any:
        raise NotImplementedError

    def _fail(self, step: str, exc: BaseException, started: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ bookkeeping

    def _wait_begin(self, name: object, kind: str) -> tuple[str, bool, Any, Waiting | None, int]:
        """Validate, check cancellation and duplicates; returns (step, done, value,
        the waiting record of this attempt by a wait of ``kind`` or None, when the
        wait began)."""
        ex = self._ex
        step = begin_step(ex, name)
        stored = cached_step(ex.steps_cache.get(step))
        if stored is not None:
            if stored.status == "succeeded":
                ex.hits += 1  # replayed (Execution.made_progress)
                if stored.output_json == CHILD_OUTPUTS and stored.children is not None:
                    if kind != "children":
                        raise RedflowError(
                            f"step {step!r} was recorded as a wait for child runs; this "
                            f"execution reached it as a {kind} wait (step names must name "
                            "the same step on every replay)"
                        )
                    return step, True, ChildOutputs(stored.children), None, 0
                value = codec.decode_json(stored.output_json) if stored.output_json else None
                return step, True, value, None, 0
            if stored.attempt == ex.attempt:
                if stored.status == "failed":
                    raise replayed(codec.decode_error(stored.error_json))
                if stored.status == "waiting" and stored.output_json:
                    try:
                        waiting = waiting_decoder.decode(stored.output_json)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        waiting = None
                    if waiting is not None and waiting.of_kind(kind):
                        ex.confirm_lease()
                        ex.set_step(step)
                        return step, False, None, waiting, stored.started_at
        ex.confirm_lease()
        ex.set_step(step)
        return step, False, None, None, 0

    def _record_waiting(self, step: str, waiting: Waiting, started: int) -> None:
        ex = self._ex
        ex.write_step(
            step,
            StoredStep(
                status="waiting",
                started_at=started,
                finished_at=0,
                attempt=ex.attempt,
                seq=0,
                output_json=msgspec.json.encode(waiting).decode(),
            ),
        )

    def _rebased(self, step: str, waiting: Waiting, started: int, now: int) -> tuple[Waiting, int]:
        """A relative wait (``sleep(seconds)``, a wait's ``timeout``) recorded at a
        start after ``now``: the Redis clock went back since (it ran ahead, and NTP
        or a failover to a server whose clock is behind set it right), and its
        deadline came from the clock that was ahead. It is re-based on the clock
        now: its whole duration from now (what elapsed before the clock went back
        cannot be measured), so it ends at most its duration from now and never
        before it was due (wake_timers.lua wakes such runs to get here). Returns
        (the record, its start); unchanged when the start is not after now."""
        if waiting.wake_at is None or started <= now:
            return waiting, started
        duration = max(0, waiting.wake_at - started)
        rebased = Waiting(kind=waiting.kind, wake_at=now + duration, children=waiting.children)
        self._record_waiting(step, rebased, now)
        return rebased, now

    def _server_ms(self) -> int:
        ex = self._ex
        return ex.durable(ex.runs.server_time_ms, "reading the server clock")

    def _guarded(self, step: str, started: int, body: Any) -> tuple[bool, Any]:
        """Run ``body()`` -> (done, value | PendingWait); a failure is recorded."""
        try:
            result: tuple[bool, Any] = body()
        except (Suspend, LeaseLostError):
            raise
        except Exception as exc:
            self._fail(step, exc, started or now_ms())
            raise
        return result

    # ----------------------------------------------------------- suspension

    def _suspend_now(self, wait: PendingWait) -> Any:
        ex = self._ex
        ex.waits.append(wait)
        ex.suspending = True
        ex.set_step(None)
        raise Suspend()

    async def _suspend_gathered(self, wait: PendingWait) -> Any:
        """Register ``wait``, let sibling tasks reach theirs, then suspend on all."""
        ex = self._ex
        ex.waits.append(wait)
        ex.set_step(None)
        for _ in range(_SIBLING_YIELDS):
            await asyncio.sleep(0)
        ex.suspending = True  # no step starts from now on
        # Sibling steps already running finish and record their outcome first:
        # cut off (the loop cancels what is left), they would run again on resume.
        me = asyncio.current_task()
        while others := [m for m, task in ex.inflight.items() if task is not me]:
            await asyncio.wait(others)
        raise Suspend()
