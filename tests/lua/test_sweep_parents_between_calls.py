"""Review probe of sweep_runs.lua's parents budget: a child read in slices (its
parents set past PARENT_BUDGET) is not removed when an unfinished parent links
to it between two of those calls, and is removed once that parent finished."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.lua.test_sweep_shared_parents import _add_parents, _finished_child, _status

pytestmark = pytest.mark.timeout(240)


def test_a_parent_linked_between_slices_keeps_the_child(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    child = _finished_child(raw, client, enq, "P1")
    _add_parents(raw, client, child, 4_500, "P")  # finished sharers: three slices
    parents = client.keys.run_parents(child)
    removed, more = client.scripts.sweep_step(1, 100)
    assert (removed, more) == (0, True)
    assert raw.scard(parents) == 2_500  # one slice read and dropped
    waiter = enq(workflow="sharer", queue="wq")  # links to it now (found by its key)
    tok = new_token()
    _, got = client.scripts.claim(("wq",), 600_000, tok)
    assert got is not None and got.id == waiter
    raw.sadd(client.keys.run_children(waiter), child)
    raw.sadd(parents, waiter)
    for _ in range(20):
        removed, more = client.scripts.sweep_step(1, 100)
        assert removed == 0
        assert _status(raw, client, child) == b"succeeded"
        if not more:
            break
    assert raw.sismember(parents, waiter)
    assert client.scripts.finalize(waiter, tok, "succeeded", b"1") == "succeeded"
    raw.zadd(client.keys.runs_status("succeeded"), {child: 1})  # (kept: scored now)
    for _ in range(20):
        client.scripts.sweep_step(1, 100)
        if not raw.exists(client.keys.run(child)):
            break
        raw.zadd(client.keys.runs_status("succeeded"), {child: 1})  # (kept: scored now)
    assert not raw.exists(client.keys.run(child))
    assert not raw.exists(parents)
