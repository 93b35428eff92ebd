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
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import msgspec

from . import codec, tracing
from .cascade import positions_by_shard
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
    run_failed,
)
from .execution import Execution
from .ids import new_token
from .keys import step_workflow_key
from .options import MAX_RUN_AT, RunOptions, check_name
from .registry import Workflow
from .step_calls import MAX_STEP_TIMEOUT

__all__ = [
    "PendingWait",
    "Suspend",
    "WaitMixin",
    "check_sleep_seconds",
    "check_wake_time",
    "merge_waits",
]

# Yields an async wait makes before suspending, so that the sibling waits of an
# asyncio.gather reach their own wait first (each registers without awaiting I/O).
_SIBLING_YIELDS = 4
# Above this many runs in a workflow's concurrency set, the deadlock check does
# not read them all: it counts the suspended ones (wf-suspended:<wf>, kept by the
# scripts). suspend_run.lua applies the same rule with the same limit when it
# suspends (DEADLOCK_SCAN_LIMIT).
_DEADLOCK_SCAN_LIMIT = 256


class Suspend(BaseException):
    """Internal: the run suspends on the waits collected in its execution."""


@dataclass(slots=True)
class PendingWait:
    """One wait step's unmet condition."""

    step: str
    kind: str  # children | sleep | event
    children: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    wake_at: int | None = None


class _Waiting(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
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


_waiting_decoder = msgspec.json.Decoder(_Waiting)


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


def _check_wait_timeout(timeout: object) -> float | None:
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


def _replayed(info: ErrorInfo | None) -> Exception:
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


def _now_ms() -> int:
    return int(time.time() * 1000)


class WaitMixin:
    """The wait steps' logic, shared by the sync and async step APIs."""

    __slots__ = ()
    _ex: Execution

    # provided by the step core
    def _succeed(self, step: str, value: Any, started: int) -> Any:
        raise NotImplementedError

    def _fail(self, step: str, exc: BaseException, started: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ bookkeeping

    def _wait_begin(self, name: object, kind: str) -> tuple[str, bool, Any, _Waiting | None, int]:
        """Validate, check cancellation and duplicates; returns (step, done, value,
        the waiting record of this attempt by a wait of ``kind`` or None, when the
        wait began)."""
        step = check_name(name, "step name")
        ex = self._ex
        if ex.suspending:
            raise Suspend()
        if step in ex.seen:
            raise DuplicateStepError(
                f"step {step!r} was already used in this execution of run {ex.run_id}; "
                "step names must be unique within a run"
            )
        ex.seen.add(step)
        ex.check_cancelled()
        raw = ex.steps_cache.get(step)
        stored: StoredStep | None = None
        if raw is not None:
            try:
                stored = codec.decode_step(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                stored = None
        if stored is not None:
            if stored.status == "succeeded":
                value = codec.decode_json(stored.output_json) if stored.output_json else None
                return step, True, value, None, 0
            if stored.attempt == ex.attempt:
                if stored.status == "failed":
                    raise _replayed(codec.decode_error(stored.error_json))
                if stored.status == "waiting" and stored.output_json:
                    try:
                        waiting = _waiting_decoder.decode(stored.output_json)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        waiting = None
                    if waiting is not None and waiting.of_kind(kind):
                        ex.confirm_lease()
                        ex.set_step(step)
                        return step, False, None, waiting, stored.started_at
        ex.confirm_lease()
        ex.set_step(step)
        return step, False, None, None, 0

    def _record_waiting(self, step: str, waiting: _Waiting, started: int) -> None:
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

    def _rebased(
        self, step: str, waiting: _Waiting, started: int, now: int
    ) -> tuple[_Waiting, int]:
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
        rebased = _Waiting(kind=waiting.kind, wake_at=now + duration, children=waiting.children)
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
            self._fail(step, exc, started or _now_ms())
            raise
        return result

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
            waiting = _Waiting(kind="sleep", wake_at=wake)
            self._record_waiting(step, waiting, started)
        elif until_ms is None:  # sleep(seconds): relative
            waiting, started = self._rebased(step, waiting, started, now)
        if now >= waiting.wake_at:  # type: ignore[operator]
            return True, self._succeed(step, None, started)
        return False, PendingWait(step, "sleep", wake_at=waiting.wake_at)

    # ------------------------------------------------------------------ event

    @tracing.traced_wait  # a span per wait step, with the OpenTelemetry extra
    def _event_check(self, name: object, event: object, timeout: object) -> Any:
        limit = _check_wait_timeout(timeout)
        ev = check_name(event, "event name")
        step, done, value, waiting, started = self._wait_begin(name, "event")
        if done:
            return True, value

        def body() -> tuple[bool, Any]:
            nonlocal waiting, started
            ex = self._ex
            record = StoredStep(
                status="succeeded",
                started_at=started or _now_ms(),
                finished_at=_now_ms(),
                attempt=ex.attempt,
                seq=0,
            )
            data = codec.encode_step(record)
            head = data[:-1] + b',"outputJson":'
            code, payload, stored = ex.durable(
                lambda: ex.runs.scripts_for(ex.run_id).consume_event(
                    ex.run_id, ex.token, step, ev, (head, b"}"), ex.lease_ms
                ),
                f"consuming event {ev!r}",
            )
            if code == -1:
                ex.mark_lost()
                raise LeaseLostError(f"run {ex.run_id}: lease lost while waiting for {ev!r}")
            if code == 1 and payload is not None and stored is not None:
                ex.steps_cache[step] = stored
                ex.record_step("succeeded", record.started_at)
                ex.set_step(None)
                return True, codec.decode_json(payload)
            now = self._server_ms()
            if waiting is None:
                waiting = _Waiting(kind="event")
                if limit is not None:
                    started = now
                    waiting = _Waiting(kind="event", wake_at=now + int(limit * 1000))
                    self._record_waiting(step, waiting, started)
            else:  # the timeout, relative: re-based if the clock went back
                waiting, started = self._rebased(step, waiting, started, now)
            if waiting.wake_at is not None and now >= waiting.wake_at:
                raise StepTimeoutError(
                    f"step {step!r} timed out after {limit or 0:g} s waiting for event {ev!r}"
                )
            return False, PendingWait(step, "event", events=(ev,), wake_at=waiting.wake_at)

        return self._guarded(step, started, body)

    # --------------------------------------------------------------- children

    @tracing.traced_wait  # a span per wait step, with the OpenTelemetry extra
    def _children_check(
        self,
        name: object,
        workflow: Workflow[Any, Any] | str,
        inputs: Sequence[Any],
        timeout: object,
        *,
        single: bool,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> Any:
        limit = _check_wait_timeout(timeout)
        child = _workflow_name(workflow)
        step, done, value, waiting, started = self._wait_begin(name, "children")
        if done:
            return True, value

        def body() -> tuple[bool, Any]:
            nonlocal waiting, started
            ex = self._ex
            fresh = waiting is None
            if waiting is None:
                self._check_known(step, workflow)
                ids = self._start_children(
                    step, workflow, child, inputs, single, queue_override, idempotency_key, priority
                )
                started = self._server_ms()
                wake = None if limit is None else started + int(limit * 1000)
                waiting = _Waiting(kind="children", wake_at=wake, children=ids)
                self._record_waiting(step, waiting, started)
            ids = waiting.children
            states, now = self._read_children(ids)
            if fresh and self._resume_cascaded(ids, states):
                states, now = self._read_children(ids)
            if not fresh:  # the timeout, relative: re-based if the clock went back
                waiting, started = self._rebased(step, waiting, started, now)
            for cid, st in zip(ids, states, strict=True):
                if st[0] in ("failed", "canceled"):  # fails the step now: first in input order
                    _child_output(cid, st)
            pending = [cid for cid, st in zip(ids, states, strict=True) if not _finished(st)]
            if not pending:
                outputs = [_child_output(cid, st) for cid, st in zip(ids, states, strict=True)]
                return True, self._succeed(step, outputs[0] if single else outputs, started)
            if waiting.wake_at is not None and now >= waiting.wake_at:
                raise StepTimeoutError(
                    f"step {step!r} timed out after {limit or 0:g} s waiting for "
                    f"{len(pending)} child run(s) of {child!r} ({', '.join(pending[:5])})"
                )
            same = [cid for cid, st in zip(ids, states, strict=True) if st[3] and not _finished(st)]
            if same and child == ex.workflow:
                self._check_deadlock(step, child, same)
            return False, PendingWait(
                step, "children", children=tuple(pending), wake_at=waiting.wake_at
            )

        return self._guarded(step, started, body)

    def _resume_cascaded(self, ids: Sequence[str], states: list[tuple[Any, ...]]) -> bool:
        """The step starts in a new attempt of this run (``resume_run`` of a
        canceled run): resume its children that this run's own cancel canceled
        (the cascade), so that they run on instead of failing the step at once
        with ``RunCanceledError``. Their own children follow the same way when
        they replay. Returns True when one was resumed."""
        ex = self._ex
        canceled = [cid for cid, st in zip(ids, states, strict=True) if st[0] == "canceled"]
        if not canceled:
            return False
        cascade = f"parent run {ex.run_id} was canceled"
        runs = ex.runs
        mine: list[str] = []
        for positions in positions_by_shard(canceled, runs.shard_of_run):
            shard = runs.shard_of_run(canceled[positions[0]])
            names = [shard.keys.run(canceled[i]) for i in positions]
            reasons = ex.durable(
                partial(_read_field, shard.redis, names, "cancelReason"),
                "reading the cancel reasons of canceled children",
            )
            mine += [
                canceled[i]
                for i, why in zip(positions, reasons, strict=True)
                if why is not None and codec.text(why).startswith(cascade)
            ]
        for cid in mine:
            scripts = runs.shard_of_run(cid).scripts
            ex.durable(
                partial(scripts.resume, cid, new_token()),
                "resuming a child canceled by this run's cancel",
            )
        return bool(mine)

    def _check_known(self, step: str, workflow: Workflow[Any, Any] | str) -> None:
        if isinstance(workflow, Workflow):
            return
        runs = self._ex.runs
        if runs.registry.get(workflow) is not None:
            return
        meta = self._ex.durable(lambda: runs.get_workflow_meta(workflow), "reading metadata")
        if meta is None:
            raise UnknownWorkflowError(
                f"step {step!r} waits for workflow {workflow!r}, which is neither "
                "registered in this process nor synced to Redis; nothing was started"
            )

    def _start_children(
        self,
        step: str,
        workflow: Workflow[Any, Any] | str,
        child: str,
        inputs: Sequence[Any],
        single: bool,
        queue_override: str | None,
        idempotency_key: str | None,
        priority: int | None,
    ) -> list[str]:
        ex = self._ex
        base = idempotency_key or step_workflow_key(ex.run_id, step, child)
        options = [
            RunOptions.of(
                queue_override=queue_override,
                idempotency_key=base if single else f"{base}:{i}",
                priority=priority,
                parent_run_id=ex.run_id,
                linked=True,
                system_key=idempotency_key is None,
            )
            for i in range(len(inputs))
        ]
        if single:
            return [
                ex.durable(
                    lambda: ex.runs.enqueue(workflow, inputs[0], options[0]),
                    f"starting child {child!r}",
                )
            ]
        # One pipelined round trip for the whole fan-out; every input is checked
        # before anything is written, and a resend is deduplicated by the keys.
        return ex.durable(
            lambda: ex.runs.enqueue_each(workflow, list(inputs), options),
            f"starting {len(inputs)} children of {child!r}",
        )

    def _read_children(self, ids: Sequence[str]) -> tuple[list[tuple[Any, ...]], int]:
        """Each child's (status, outputJson, errorJson, same workflow as this run)
        and the server time, in one round trip."""
        ex = self._ex
        runs = ex.runs
        if runs.shard_count == 1:

            def read() -> list[Any]:
                pipe = runs.redis.pipeline(transaction=False)
                for cid in ids:
                    pipe.hmget(runs.keys.run(cid), "status", "outputJson", "errorJson", "workflow")
                pipe.time()
                return list(pipe.execute())

        else:  # shards > 1: children may live in other shards, one pipeline per shard

            def read() -> list[Any]:
                groups: dict[int, list[int]] = {}
                for i, cid in enumerate(ids):
                    groups.setdefault(runs.shard_of_run(cid).index, []).append(i)
                out: list[Any] = [None] * len(ids)
                for index, positions in groups.items():
                    shard = runs.shards[index]
                    pipe = shard.redis.pipeline(transaction=False)
                    for i in positions:
                        pipe.hmget(
                            shard.keys.run(ids[i]), "status", "outputJson", "errorJson", "workflow"
                        )
                    for i, reply in zip(positions, pipe.execute(), strict=True):
                        out[i] = reply
                return [*out, runs.redis.time()]

        replies = ex.durable(read, "reading child runs")
        seconds, micros = replies[-1]
        now = int(seconds) * 1000 + int(micros) // 1000
        states: list[tuple[Any, ...]] = []
        for status, output, error, wf in replies[:-1]:
            states.append(
                (
                    codec.text(status) if status is not None else None,
                    output,
                    error,
                    wf is not None and codec.text(wf) == ex.workflow,
                )
            )
        return states, now

    def _check_deadlock(self, step: str, child: str, waiting_on: list[str]) -> None:
        """Fail the step when the awaited children of this run's own workflow can
        never start: every slot is held by runs that wait (this one included)."""
        ex = self._ex
        # the children are of this run's own workflow: the same shard as this run
        shard = ex.runs.shard_of_workflow(child)
        keys = shard.keys
        running_key = keys.wf_running(child)

        def read() -> list[Any]:
            pipe = shard.redis.pipeline(transaction=False)
            pipe.scard(running_key)
            pipe.hget(keys.workflow(child), "maxConcurrency")
            pipe.hget(keys.run(ex.run_id), "maxConcurrency")
            pipe.scard(keys.wf_suspended(child))
            pipe.sismember(running_key, ex.run_id)
            for cid in waiting_on:
                pipe.sismember(running_key, cid)
            replies = list(pipe.execute(raise_on_error=False))
            if isinstance(replies[3], Exception):  # of another type: no rule (as the script)
                replies[3] = -1
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies

        card, meta_limit, run_limit, held, me, *members = ex.durable(read, "checking concurrency")
        limit = max(1, _int(meta_limit) or _int(run_limit) or 1)
        if int(card) < limit or any(members):
            return
        if int(card) > _DEADLOCK_SCAN_LIMIT:  # counted (suspend_run.lua, the same rule)
            if int(held) >= int(card) - int(me):
                raise WaitDeadlockError(self._deadlock_message(step, child, waiting_on, limit))
            return

        def holders() -> list[Any]:
            ids = [codec.text(m) for m in shard.redis.smembers(running_key)]
            pipe = shard.redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(keys.run(rid), "status")
            return list(zip(ids, pipe.execute(), strict=True))

        holders_of = ex.durable(holders, "checking concurrency")
        if all(rid == ex.run_id or codec.text(st or b"") == "suspended" for rid, st in holders_of):
            raise WaitDeadlockError(self._deadlock_message(step, child, waiting_on, limit))

    @staticmethod
    def _deadlock_message(step: str, child: str, waiting_on: list[str], limit: int) -> str:
        return (
            f"step {step!r} waits for run(s) {', '.join(waiting_on[:5])} of workflow "
            f"{child!r}, which can never start: all {limit} max_concurrency slot(s) of "
            f"{child!r} are held by runs that wait, this one included. Raise "
            f"max_concurrency, or run the child as another workflow."
        )

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


def _read_field(r: Any, keys: list[str], name: str) -> list[Any]:
    """HGET of field ``name`` of each hash in ``keys``, in one round trip."""
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, name)
    return list(pipe.execute())


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _finished(state: tuple[Any, ...]) -> bool:
    status = state[0]
    return status is None or status in ("succeeded", "failed", "canceled")


def _child_output(child_id: str, state: tuple[Any, ...]) -> Any:
    status, output, error, _ = state
    if status is None:
        raise RedflowError(f"child run {child_id} no longer exists (removed by retention?)")
    if status == "succeeded":
        return codec.decode_json(output) if output else None
    info = codec.decode_error(error)
    if status == "canceled":
        raise RunCanceledError(child_id, info)
    raise run_failed(child_id, info)


def _workflow_name(workflow: Workflow[Any, Any] | str) -> str:
    if isinstance(workflow, Workflow):
        return workflow.name
    if isinstance(workflow, str):
        return check_name(workflow, "workflow name")
    raise TypeError("workflow must be a Workflow or a workflow name")
