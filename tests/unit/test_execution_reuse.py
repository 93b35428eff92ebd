"""``Execution.reuse`` leaves an execution as ``__init__`` leaves a new one, and
``executor._unshared`` lets the executor use one again only when nothing but the
execution's own objects refers to it."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from redflow_mp.context import Context
from redflow_mp.execution import Execution
from redflow_mp.executor import Outcome, OutcomeMode, _unshared
from redflow_mp.scripts import Claimed
from redflow_mp.steps import Step

_SLOTS = [s for cls in Execution.__mro__ for s in getattr(cls, "__slots__", ())]


def _claimed(n: int) -> Claimed:
    return Claimed(
        f"run-{n}", f"wf-{n}", "q", b"null", n, 3, 1000 + n, None, None, None, 0,
        {f"step-{n}": b"1"}, f"tok-{n}", lease_until=50.0 + n,
    )  # fmt: skip


def _state(ex: Execution) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _SLOTS:
        value = getattr(ex, name)
        if isinstance(value, threading.Event):
            value = ("event", value.is_set())
        out[name] = value
    return out


def test_a_reused_execution_is_as_a_new_one() -> None:
    ex = Execution(None, _claimed(1), 5000, None, None, 7)  # type: ignore[arg-type]
    old_cancelled, old_lost = ex.cancelled, ex.lost
    ex.seen.add("a")
    ex.waits.append(object())
    ex.inflight[object()] = 1
    _ = ex.info, ex.logger
    ex.mark_lost()
    ex.cancel_reason = "why"
    ex.gave_up = ConnectionError()
    ex.suspending = True
    ex.renewed(1e9)
    seen, waits, inflight = ex.seen, ex.waits, ex.inflight

    ex.reuse(_claimed(2), 8)
    fresh = Execution(None, _claimed(2), 5000, None, None, 8)  # type: ignore[arg-type]
    assert _state(ex) == _state(fresh)
    assert ex.info == fresh.info and ex.logger.extra == fresh.logger.extra
    # what the last run set is replaced, never cleared under whoever had it
    assert ex.cancelled is not old_cancelled and ex.lost is not old_lost
    assert old_cancelled.is_set() and old_lost.is_set()
    assert seen == {"a"} and len(waits) == 1 and len(inflight) == 1
    assert ex.seen is not seen and ex.waits is not waits and ex.inflight is not inflight


def _objects() -> tuple[Execution, Context[Any], Step, Outcome]:
    ex = Execution(None, _claimed(1), 5000, None, None, 7)  # type: ignore[arg-type]
    step = Step(ex)
    ctx: Context[Any] = Context(None, step, None, ex.cancelled, None, ex.lost, facts=ex)
    return ex, ctx, step, Outcome(OutcomeMode.SUCCEEDED, facts=ex)


def test_unshared_only_when_nothing_else_refers_to_them() -> None:
    ex, ctx, step, outcome = _objects()
    del outcome  # the caller's outcome: counted (_REFS_EX), here not held
    outcome = Outcome(OutcomeMode.SUCCEEDED, facts=ex)
    assert _unshared(ex, ctx, step)

    for keep in (
        lambda: ctx,
        lambda: ctx.step,
        lambda: ex,
        lambda: ctx.cancelled,
        lambda: ex.lost,
        lambda: ctx.raise_if_cancelled,  # a bound method holds its context
        lambda: [ctx],
    ):
        kept = keep()
        assert not _unshared(ex, ctx, step), keep
        del kept
        assert _unshared(ex, ctx, step)

    ref = weakref.ref(ctx.cancelled)
    assert not _unshared(ex, ctx, step)
    del ref
    assert _unshared(ex, ctx, step)
    assert outcome.facts is ex


def test_reuse_replaces_exactly_the_events_that_were_set() -> None:
    """``reuse`` reads each event's flag as ``is_set()`` does: an event left unset
    is kept, a set one (cancel only, or lost and cancel) is replaced by an unset one."""
    ex = Execution(None, _claimed(1), 5000, None, None, 7)  # type: ignore[arg-type]
    cancelled, lost = ex.cancelled, ex.lost
    ex.reuse(_claimed(2), 7)
    assert ex.cancelled is cancelled and ex.lost is lost  # nothing set: kept
    ex.mark_cancel()
    ex.reuse(_claimed(3), 7)
    assert ex.cancelled is not cancelled and not ex.cancelled.is_set()
    assert ex.lost is lost and cancelled.is_set()
    cancelled = ex.cancelled
    ex.cancelled.clear()  # set, then cleared: the instance's flag False again
    ex.reuse(_claimed(4), 7)
    assert ex.cancelled is cancelled
    ex.mark_lost()
    ex.reuse(_claimed(5), 7)
    assert ex.lost is not lost and not ex.lost.is_set() and lost.is_set()
    assert ex.cancelled is not cancelled and not ex.cancelled.is_set()
