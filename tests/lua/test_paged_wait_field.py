"""The final call of a paged suspend stores the wait without its children: a
fan-out's ``wait`` field listed every child id (6 MB written at 200,000
children). What a reader of the field needs of them is in ``run:<id>:awaits``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, wait_scripts
from redflow_mp.codec import RunWait, decode_wait
from redflow_mp.ids import new_run_id
from tests.helpers import claim_one, status_of

pytestmark = pytest.mark.timeout(120)

SUSPEND_PAGE: int = getattr(wait_scripts, "SUSPEND_PAGE", 1_000)


def _suspend_paged(
    raw: redis.Redis, client: Client, enq: Callable[..., str], n: int
) -> tuple[str, list[str]]:
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    kids = [new_run_id() for _ in range(n)]
    pipe = raw.pipeline(transaction=False)
    for kid in kids:
        pipe.hset(client.keys.run(kid), mapping={"id": kid, "status": "queued", "workflow": "c"})
    pipe.execute()
    wait = RunWait(steps=["fan"], kinds=["children"], children=kids, events=["stop"])
    assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    return parent, kids


def test_a_paged_suspend_stores_a_bounded_wait(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Ten pages of children: the stored wait was 10 * SUSPEND_PAGE ids long
    (about 27 bytes each); now a count, whatever the number of children."""
    parent, kids = _suspend_paged(raw, client, enq, 10 * SUSPEND_PAGE)
    stored = raw.hget(client.keys.run(parent), "wait") or b""
    assert len(stored) < 512, f"the wait field holds {len(stored)} bytes"
    wait = decode_wait(stored)
    assert wait is not None
    assert (wait.children, wait.children_awaited) == ([], len(kids))
    assert (wait.steps, wait.kinds, wait.events) == (["fan"], ["children"], ["stop"])
    state = client.get_run(parent)
    assert state is not None and state.wait is not None
    assert state.wait.children_awaited == len(kids)


def test_recheck_wakes_a_paged_wait_whose_awaited_set_is_lost(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """recheck_waits read the awaited children from the wait field; a paged wait
    names none, so it reads run:<id>:awaits: still there with children running,
    the run sleeps on; gone (a lost key), the run is woken."""
    parent, _ = _suspend_paged(raw, client, enq, 2 * SUSPEND_PAGE + 1)
    assert client.scripts.recheck_waits([parent]) == ([], [])
    assert status_of(raw, client, parent) == "suspended"
    raw.delete(client.keys.run_awaits(parent))
    assert client.scripts.recheck_waits([parent]) == ([], [parent])
    assert status_of(raw, client, parent) == "queued"


def test_recheck_wakes_a_paged_wait_whose_awaited_child_is_lost(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A child record lost (all of them here, so that the sample finds one)."""
    parent, kids = _suspend_paged(raw, client, enq, SUSPEND_PAGE + 1)
    raw.delete(*[client.keys.run(kid) for kid in kids])
    assert client.scripts.recheck_waits([parent]) == ([], [parent])
    assert status_of(raw, client, parent) == "queued"
