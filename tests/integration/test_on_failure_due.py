"""``on_failure`` is recorded as due (``on-failure-due``) with the failure, for as
long as the hook runs, and removed once it returned or raised: called once in
the normal path. The supervisor's own failures (a timeout on the last attempt,
a crash cap) are recorded alike, and its helper removes the entry."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, FailureContext, Registry, Worker, define_workflow, hookdue
from redflow_mp.executor import on_failure_of_stored_run
from redflow_mp.hookdue import hooked, take_due
from redflow_mp.ids import new_token
from redflow_mp.maintenance import stores
from redflow_mp.recovery import Abort, HeldRun, Recovered, abort_run, recover_runs
from redflow_mp.worker_hooks import NoHooks
from supervisor.duties.reaper import ReaperDuty
from tests.helpers import texts

pytestmark = pytest.mark.timeout(60)


def _crashed(client: Client, held: HeldRun, names: Sequence[str]) -> Recovered:
    """The supervisor's helper recovering ``held`` (a crash cap: killed by SIGKILL,
    its one crash allowed spent): the outcome of ``recover_runs``."""
    (crash,) = recover_runs(
        client,
        [held],
        cause="killed by SIGKILL",
        stopping=False,
        charge_crash=True,
        max_crashes=1,
        hooked=names,
    )
    return crash


@pytest.mark.parametrize("raises", [False, True])
def test_a_worker_records_the_hook_due_while_it_runs_and_removes_it_after(
    client: Client, registry: Registry, raw: redis.Redis, raises: bool
) -> None:
    seen: list[float | None] = []

    def hook(fctx: FailureContext[Any]) -> None:
        seen.append(raw.zscore(client.keys.on_failure_due, fctx.run.id))
        if raises:
            raise RuntimeError("the hook's own failure")

    @define_workflow("due-hook", queue="dq", registry=registry, on_failure=hook)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("fails for good")

    @define_workflow("no-hook", queue="dq", registry=registry)
    def plain(ctx: Context[Any]) -> None:
        raise ValueError("fails for good")

    handle = flow.run(None, client=client)
    other = plain.run(None, client=client)
    worker = Worker(client, registry=registry, block_timeout=0.1)
    try:
        assert worker.run_until_idle(timeout=20) == 2
    finally:
        worker.close()
    assert len(seen) == 1 and seen[0] is not None  # due while it ran, called once
    assert raw.zcard(client.keys.on_failure_due) == 0  # removed once it returned / raised
    for h in (handle, other):
        state = client.get_run(h.id)
        assert state is not None and state.status.value == "failed"


def test_the_supervisors_own_failures_are_recorded_and_the_helper_removes_them(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    calls: list[str] = []

    @define_workflow(
        "sup-hook",
        queue="sq",
        max_concurrency=10,
        registry=registry,
        on_failure=lambda f: calls.append(f.run.id),
    )
    def flow(ctx: Context[Any]) -> None:
        return None

    names = hooked(registry)
    assert names == ("sup-hook",)
    held = []
    for _ in range(2):
        flow.run(None, client=client)
        _, claimed = client.scripts.claim(("sq",), 30_000, new_token())
        assert claimed is not None
        held.append(claimed)
    t, c = held
    done = abort_run(client, registry, HeldRun(t.id, t.token), Abort.TIMEOUT, 1, names)
    assert done.failed
    crash = _crashed(client, HeldRun(c.id, c.token), names)
    assert crash.failed
    due = set(texts(raw.zrange(client.keys.on_failure_due, 0, -1)))
    assert due == {t.id, c.id}
    for rid in (t.id, c.id):  # the helper's call
        assert on_failure_of_stored_run(client, registry, rid) is True
    assert calls == [t.id, c.id]
    assert raw.zcard(client.keys.on_failure_due) == 0


def test_the_reaper_duty_hands_over_the_hooks_past_their_deadline(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow("reaped-hook", queue="rq", registry=registry, on_failure=lambda f: None)
    def flow(ctx: Context[Any]) -> None:
        return None

    flow.run(None, client=client)
    _, claimed = client.scripts.claim(("rq",), 30_000, new_token())
    assert claimed is not None
    error = b'{"type":"E","message":"m","retryable":false}'
    status = client.scripts.finalize(
        claimed.id, claimed.token, "failed", error, 0, ("reaped-hook",)
    )
    assert status == "failed"
    taken: list[str] = []
    duty = ReaperDuty(client, 500, hooked=lambda: hooked(registry), take_over=taken.append)
    duty.tick(0.0)
    assert taken == []  # its process may still run it
    raw.zadd(client.keys.on_failure_due, {claimed.id: 1})  # the deadline passed
    duty.tick(1.0)
    duty.tick(2.0)  # taken once: scored a new deadline
    assert taken == [claimed.id]


class _LateHooks(NoHooks):
    """A host whose worker is held up between writing the failure and calling
    the hook (a kick to another shard riding out Redis trouble, a loaded
    machine): the failure's deadline is spent (aged) before the hook starts."""

    def __init__(self, raw: redis.Redis, key: str) -> None:
        self.raw, self.key = raw, key

    def finished(self, run: Any) -> None:
        if self.raw.zscore(self.key, run.id) is not None:
            self.raw.zadd(self.key, {run.id: 1})


def test_a_hook_started_late_after_the_failure_is_not_taken_over_while_it_runs(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """The deadline counted from the failure, the host's limit from the hook's
    start: a hook started more than the 5 s margin after the failure was taken
    over (called a second time) while it still ran within the limit."""
    store = stores(client)[0]
    taken: list[list[tuple[str, str]]] = []

    def hook(fctx: FailureContext[Any]) -> None:
        taken.append(take_due(store, ["late-hook"])[1])  # another supervisor's reaper

    @define_workflow("late-hook", queue="lq", registry=registry, on_failure=hook)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("fails for good")

    flow.run(None, client=client)
    hooks = _LateHooks(raw, client.keys.on_failure_due)
    worker = Worker(client, registry=registry, block_timeout=0.1, hooks=hooks)
    try:
        assert worker.run_until_idle(timeout=20) == 1
    finally:
        worker.close()
    assert taken == [[]]
    # the supervisor's helper (a crash cap, a takeover), forked late alike
    flow.run(None, client=client)
    _, claimed = client.scripts.claim(("lq",), 30_000, new_token())
    assert claimed is not None
    crash = _crashed(client, HeldRun(claimed.id, claimed.token), ("late-hook",))
    assert crash.failed
    raw.zadd(client.keys.on_failure_due, {claimed.id: 1})
    assert on_failure_of_stored_run(client, registry, claimed.id) is True
    assert taken == [[], []]
    assert raw.zcard(client.keys.on_failure_due) == 0


def test_an_unsupervised_workers_long_hook_is_not_taken_over_while_it_runs(
    client: Client, registry: Registry, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-process ``Worker`` (embedded, no supervisor to bound its hook): a hook
    running past the deadline (65 s) was taken over by a supervisor of the same
    app and called a second time while the first call still ran. Its worker now
    keeps the entry's deadline ahead while the hook runs."""
    store = stores(client)[0]
    beats = threading.Event()
    real = hookdue.started

    def started(runs: Any, run_id: str, patience: float = hookdue.DONE_PATIENCE) -> None:
        real(runs, run_id, patience)
        beats.set()

    monkeypatch.setattr(hookdue, "started", started)
    monkeypatch.setattr(hookdue, "BEAT_S", 0.05, raising=False)
    taken: list[list[tuple[str, str]]] = []

    def hook(fctx: FailureContext[Any]) -> None:
        raw.zadd(client.keys.on_failure_due, {fctx.run.id: 1})  # it ran past its deadline
        beats.clear()
        beats.wait(30)  # the worker's next beat (none on the failing path)
        taken.append(take_due(store, ["long-hook"])[1])  # a supervisor's reaper

    @define_workflow("long-hook", queue="hq", registry=registry, on_failure=hook)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("fails for good")

    flow.run(None, client=client)
    worker = Worker(client, registry=registry, block_timeout=0.1)
    try:
        assert worker.run_until_idle(timeout=20) == 1
    finally:
        worker.close()
    assert taken == [[]]
    assert raw.zcard(client.keys.on_failure_due) == 0


def test_a_takeover_refused_is_logged_once_in_a_while_and_the_tick_goes_on(
    client: Client, registry: Registry, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """``on-failure-due`` of another type: the reaper logged an error on every
    tick (twice a second, per shard); now once per 10 s, like a duty's error."""

    @define_workflow("typed-hook", queue="tq", registry=registry, on_failure=lambda f: None)
    def flow(ctx: Context[Any]) -> None:
        return None

    raw.set(client.keys.on_failure_due, "x")
    duty = ReaperDuty(client, 500, hooked=lambda: hooked(registry), take_over=lambda r: None)
    with caplog.at_level("ERROR"):
        for i in range(6):
            duty.tick(i * 0.5)
        logged = [r for r in caplog.records if "could not take over" in r.getMessage()]
        assert len(logged) == 1
        duty.tick(20.0)
        logged = [r for r in caplog.records if "could not take over" in r.getMessage()]
        assert len(logged) == 2
