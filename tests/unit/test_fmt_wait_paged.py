"""A paged wait (more than SUSPEND_PAGE children) is stored without its
children's ids (``childrenAwaited``: their number): the run page showed no
child at all for it (a parent of 200,000 children "waits for" nothing, or
its deadline only)."""

from __future__ import annotations

from redflow_mp.codec import RunState, RunStatus, RunWait
from supervisor.ops.render import fmt_wait


def _state(wait: RunWait) -> RunState:
    return RunState(id="r1", workflow="wf", queue="q", status=RunStatus.SUSPENDED, wait=wait)


def test_a_paged_wait_shows_how_many_children_it_awaits() -> None:
    wait = RunWait(steps=["all"], kinds=["children"], children_awaited=200_000)
    shown = fmt_wait(_state(wait), 0)
    assert shown is not None and "200000 child run(s)" in shown, shown


def test_a_listed_wait_is_shown_as_before() -> None:
    wait = RunWait(steps=["all"], kinds=["children"], children=["c1", "c2"])
    shown = fmt_wait(_state(wait), 0)
    assert shown is not None and shown.startswith("2 child run(s) to finish: c1, c2"), shown
