"""A worker's executor uses the execution, context and step of a run that
succeeded again for the next run (``Executor.execute_plain``) only when nothing
else refers to them: a handler that kept its context, its step, an event of it
(also by a weak reference) or a closure over it keeps what it saw; a context
used again shows the new run's input, facts and steps, as a new one would."""

from __future__ import annotations

import weakref
from typing import Any

import pytest

from redflow_mp import Client, Context, NonRetriableError, Registry, define_workflow
from redflow_mp.execution import Execution
from redflow_mp.executor import _REUSE
from redflow_mp.worker import Worker

pytestmark = pytest.mark.timeout(60)

RUNS = 6


def _drain(client: Client, registry: Registry, n: int) -> None:
    worker = Worker(client, registry=registry, max_runs=n, block_timeout=0.1)
    worker.run()
    assert worker.runs_done == n


def _reuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    used: list[str] = []
    real = Execution.reuse

    def spy(self: Execution, claimed: Any, pid: int) -> None:
        used.append(claimed.id)
        real(self, claimed, pid)

    monkeypatch.setattr(Execution, "reuse", spy)
    return used


def test_plain_runs_reuse_one_context_that_shows_each_runs_data(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _reuses(monkeypatch)
    seen: list[tuple[Any, ...]] = []

    @define_workflow("plain", registry=registry)
    def plain(ctx: Context[int]) -> int:
        seen.append(
            (ctx.input, ctx.run.id, ctx.run.attempt, ctx.logger.extra["run_id"],  # type: ignore[index]
             ctx.cancelled.is_set(), ctx._lease_lost)
        )  # fmt: skip
        return ctx.step.run("double", lambda: ctx.input * 2)

    handles = [plain.run(i, client=client) for i in range(RUNS)]
    _drain(client, registry, RUNS)
    assert [h.result(timeout=10) for h in handles] == [i * 2 for i in range(RUNS)]
    assert seen == [(i, h.id, 1, h.id, False, False) for i, h in enumerate(handles)]
    assert used == ([h.id for h in handles[1:]] if _REUSE else [])  # each after the first


@pytest.mark.parametrize(
    "keep",
    ["ctx", "step", "cancelled", "lost", "closure", "weakref", "bound"],
)
def test_what_a_handler_kept_is_never_reused(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch, keep: str
) -> None:
    used = _reuses(monkeypatch)
    kept: list[tuple[Any, Any, str]] = []  # (what, the context then, its run id)

    @define_workflow("keeper", registry=registry)
    def keeper(ctx: Context[int]) -> int:
        what: Any = {
            "ctx": ctx,
            "step": ctx.step,
            "cancelled": ctx.cancelled,
            "lost": ctx._lost,
            "closure": lambda: ctx.input,
            "weakref": weakref.ref(ctx.cancelled),
            "bound": ctx.raise_if_cancelled,
        }[keep]
        for k_what, _, _ in kept:
            if keep == "weakref":
                assert k_what() is not ctx.cancelled
            elif keep in ("cancelled", "lost"):
                assert k_what is not ctx.cancelled and k_what is not ctx._lost
        kept.append((what, weakref.ref(ctx.cancelled), ctx.run.id))
        return ctx.input

    handles = [keeper.run(i, client=client) for i in range(RUNS)]
    _drain(client, registry, RUNS)
    assert [h.result(timeout=10) for h in handles] == list(range(RUNS))
    if keep != "weakref":
        assert used == []  # each run kept something of its own: none reused
    for i, (what, _, run_id) in enumerate(kept):
        assert run_id == handles[i].id
        if keep == "ctx":
            assert (what.input, what.run.id, what.step._ex.run_id) == (i, run_id, run_id)
        elif keep == "step":
            assert what._ex.run_id == run_id and what._ex.token != ""
        elif keep == "closure":
            assert what() == i
        elif keep == "bound":
            assert what.__self__.input == i and what.__self__.run.id == run_id


def test_a_run_that_failed_or_kept_something_leaves_new_objects_for_the_next(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _reuses(monkeypatch)
    kept: list[Any] = []

    @define_workflow("mixed", registry=registry)
    def mixed(ctx: Context[str]) -> str:
        if ctx.input == "keep":
            kept.append(ctx)
        if ctx.input == "fail":
            raise NonRetriableError("no")
        return ctx.input

    order = ["plain", "plain", "keep", "plain", "fail", "plain", "plain"]
    handles = [mixed.run(x, client=client) for x in order]
    _drain(client, registry, len(order))
    # taken again by the run after one that succeeded and kept nothing (0, 1, 3,
    # 5): not after the one that kept its context (2) nor the one that failed (4)
    assert used == ([handles[i].id for i in (1, 2, 4, 6)] if _REUSE else [])
    assert kept[0].input == "keep" and kept[0].run.id == handles[2].id


class _Traced:
    """A wrapper a handler (or a middleware) may put in place of ``ctx.step``."""

    def __init__(self, step: Any) -> None:
        self.inner = step


@pytest.mark.parametrize("slot", ["step", "cancelled"])
def test_a_step_or_event_swapped_out_of_the_context_and_kept_is_never_reused(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch, slot: str
) -> None:
    """Swapped, the context's own reference to it is gone and the keeper's takes
    its place: the counts alone matched, the object served the next run, and the
    kept step wrote (with the next run's token) into the next run."""
    used = _reuses(monkeypatch)
    kept: list[tuple[Any, str]] = []

    @define_workflow("swapper", registry=registry)
    def swapper(ctx: Context[int]) -> int:
        if slot == "step":
            ctx.step = _Traced(ctx.step)  # type: ignore[assignment]
            kept.append((ctx.step, ctx.run.id))
        else:
            mine = ctx.cancelled
            ctx.cancelled = type(mine)()
            kept.append((mine, ctx.run.id))
        return ctx.input

    handles = [swapper.run(i, client=client) for i in range(RUNS)]
    _drain(client, registry, RUNS)
    assert [h.result(timeout=10) for h in handles] == list(range(RUNS))
    # before: assert ['01K...', ...] == [] (reused after each run)
    assert used == []
    if slot == "step":
        assert [w.inner._ex.run_id for w, _ in kept] == [r for _, r in kept]
    else:
        assert len({id(e) for e, _ in kept}) == RUNS
