"""Retention and durable waits: a parent suspended on a fan-out for longer than
``run_retention`` (a child waiting a week for a human's event) still reads the
children that finished long before; they go once the parent has finished.

Retention passes are the ``sweep_runs`` script the retention duty sends, with a
retention of 1 ms standing for the default 7 days having passed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def _is(client: Client, run_id: str, status: str) -> Callable[[], bool]:
    return lambda: run_status(client, run_id) == status


def _sweep_all(client: Client) -> None:
    """Retention passes until one removes less than a batch (as the duty calls it)."""
    while client.scripts.sweep(1, 100) == 100:
        pass


def _finished_a_while_ago(client: Client, run_id: str) -> None:
    """Wait until the server clock is past ``run_id``'s finish (by more than 1 ms)."""

    def past() -> bool:
        state = client.get_run(run_id)
        assert state is not None and state.finished_at is not None
        return client.server_time_ms() > state.finished_at + 2

    wait_until(past, timeout=5)


def _gone_after_sweeps(client: Client, run_id: str) -> bool:
    _sweep_all(client)
    return client.get_run(run_id) is None


def test_children_finished_long_before_the_last_are_kept_while_their_parent_waits(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    @define_workflow("rt-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("done", "done")
        return int(ctx.input) * 10

    @define_workflow("rt-parent", registry=registry)
    def parent(ctx: Context[Any]) -> list[Any]:
        return list(ctx.step.run_workflows("kids", child, [1, 2, 3]))

    workers.start()
    handle = parent.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    kids = sorted(
        (s.id for s in client.list_runs(workflow="rt-child")),
        key=lambda rid: client.get_run(rid).input,  # type: ignore[union-attr]
    )
    assert len(kids) == 3
    for kid in kids:
        wait_until(_is(client, kid, "suspended"), timeout=10)
    for kid in kids[:2]:
        assert client.send_event(kid, "done") is True
        wait_until(_is(client, kid, "succeeded"), timeout=10)
    _finished_a_while_ago(client, kids[1])
    _sweep_all(client)  # a week later: the first two children's retention is over
    # Before: both were removed, and the parent's step then failed with
    # "child run ... no longer exists (removed by retention?)".
    assert run_status(client, kids[0]) == "succeeded"
    assert run_status(client, kids[1]) == "succeeded"
    assert run_status(client, handle.id) == "suspended"
    assert client.send_event(kids[2], "done") is True
    assert handle.result(timeout=20) == [10, 20, 30]
    # the parent finished: the children go with their next retention pass
    _finished_a_while_ago(client, handle.id)
    _sweep_all(client)  # the parent and the last child; the others were scored anew
    wait_until(lambda: _gone_after_sweeps(client, kids[0]), timeout=5)
    assert [client.get_run(k) for k in kids] == [None, None, None]
    assert client.get_run(handle.id) is None


def test_emitted_children_and_children_of_finished_parents_are_not_kept(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("rt-leaf", registry=registry)
    def leaf(ctx: Context[Any]) -> int:
        return 1

    @define_workflow("rt-emitter", registry=registry)
    def emitter(ctx: Context[Any]) -> str:
        emitted = ctx.step.emit_workflow("fire", leaf, {})
        ctx.step.wait_for_event("hold", "go")
        return emitted

    workers.start()
    handle = emitter.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    fired = client.list_runs(workflow="rt-leaf")[0].id
    wait_until(lambda: run_status(client, fired) == "succeeded", timeout=10)
    _finished_a_while_ago(client, fired)
    _sweep_all(client)
    # emit_workflow: the parent does not wait for it, retention takes it
    assert client.get_run(fired) is None
    assert run_status(client, handle.id) == "suspended"
