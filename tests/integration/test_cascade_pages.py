"""A cancel cascade cut by its bound goes on from the SSCAN page it stopped in:
each walk of the supervisor's duty listed and sorted the parent's whole
children set (O(children) at each 5 s pass), and a child added between two
walks whose id sorted below the last one sent was never canceled."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import command_counts, status_of
from tests.integration.test_cascade_resume import _family as queued_family

pytestmark = pytest.mark.timeout(300)

N = 20_000


def _fan(registry: Registry) -> Any:
    @define_workflow("fan", registry=registry)
    def fan(ctx: Context[Any]) -> None:
        return None

    return fan


def _family(raw: redis.Redis, client: Client, fan: Any, n: int) -> tuple[str, list[str]]:
    """A canceled parent (its canceller gone) with ``n`` queued children."""
    parent, children = queued_family(raw, client, fan, n)
    assert client.scripts.cancel(parent, "") == "canceled"
    return parent, children


def test_a_resumed_walk_reads_a_bounded_part_of_the_children_set(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Each walk of 500 cancels read all 20,000 children (40 SSCAN pages of 500)
    before; now the pages it sends cancels to, and one more at most."""
    parent, children = _family(raw, client, _fan(registry), N)
    pages: list[int] = []
    total = 0
    sent: list[int] = []

    def walk() -> None:  # a pass of the duty: 500 cancels at most
        sent.append(client.cancel_children(parent, None, 500))

    while raw.zscore(client.keys.cascades, parent) is not None:
        pages.append(command_counts(raw, walk).get("sscan", 0))
        total += sent[-1]
        assert len(pages) <= 2 * N // 500, "the cascade does not end"
    assert max(pages) <= 3, f"SSCAN pages a walk: {pages}"
    assert total == N  # none sent twice
    assert all(status_of(raw, client, c) == "canceled" for c in children)


def test_a_child_added_between_walks_is_canceled(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A child whose id sorts first, added after the first walk was cut (a
    handler of the canceled parent still starting children)."""
    fan = _fan(registry)
    parent, children = _family(raw, client, fan, 300)
    assert client.cancel_children(parent, None, 100) == 100
    late, _ = client.scripts.enqueue(
        "0" * 26, "fan", "default", b"null", 1, 0, "", 60_000, "", "", None, None
    )
    late = str(late)
    assert late < min(children)
    raw.sadd(client.keys.run_children(parent), late)
    raw.hset(client.keys.run(late), "parentRunId", parent)
    for _ in range(10):
        if raw.zscore(client.keys.cascades, parent) is None:
            break
        client.cancel_children(parent, None, 100)
    assert raw.zscore(client.keys.cascades, parent) is None
    assert all(status_of(raw, client, c) == "canceled" for c in children)
    assert status_of(raw, client, late) == "canceled"
