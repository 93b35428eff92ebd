"""The supervisor's lease backstop (supervisor/duties/backstop.py) against a real
Redis: what it remembers about ignored cancellations."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.ids import new_token
from redflow_supervisor.board import Board
from redflow_supervisor.children import Child
from redflow_supervisor.duties.backstop import BackstopDuty

pytestmark = pytest.mark.timeout(30)


def test_the_backstop_forgets_cancellations_of_runs_a_child_no_longer_holds(
    client: Client, registry: Registry
) -> None:
    """A cancel request seen on a held run was remembered in child.cancel_seen for
    the life of the child (max_runs_per_child 0: for ever): one entry per run ever
    canceled while running. And a resumed run (same id) canceled again on the same
    child was stopped at once, its cancel_grace counted from the first request."""

    @define_workflow("bs", registry=registry)
    def bs(ctx: Context[Any]) -> None:
        return None

    aborted: list[str] = []
    board = Board(1)
    child = Child(pid=os.getpid(), slot=1, index=0, generation=1, started_at=time.monotonic())
    board.claim_entry(0, child.pid)
    duty = BackstopDuty(
        client,
        board,
        lambda: [child],
        5_000,
        5.0,
        lambda ch, reason, held, stack, now: aborted.append(held.run_id),
    )
    try:
        for _ in range(3):
            handle = bs.run()
            token = new_token()
            _, claimed = client.scripts.claim(("default",), 5_000, token)
            assert claimed is not None and claimed.id == handle.id
            board.push(0, claimed.id, token, "bs", None)
            assert handle.cancel("stop") is True  # running: a request
            duty.tick(time.monotonic())
            assert handle.id in child.cancel_seen
            # the handler honours it: the run ends, the child lets go of it
            assert client.scripts.finalize(claimed.id, token, "canceled", b"") == "canceled"
            board.pop(0)
            duty.tick(time.monotonic())
        assert child.cancel_seen == {}
        assert aborted == []
    finally:
        board.close()
