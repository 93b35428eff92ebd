"""The key check's cost per tick does not grow with the workflows and queues a
supervisor serves: the prefix-wide keys every tick, the keys named by workflows
and queues in turns of at most ``KEYS_PER_TICK``, so every key is still looked
at within a bounded number of ticks."""

from __future__ import annotations

import math
import time

import pytest
import redis

from redflow_mp import Client
from redflow_mp.keycheck import expected_types
from redflow_supervisor.duties.keycheck import KEYS_PER_TICK, KeyCheckDuty
from tests.helpers import command_counts

pytestmark = pytest.mark.timeout(60)


def test_a_tick_looks_at_a_bounded_turn_and_a_full_pass_finds_every_bad_key(
    raw: redis.Redis, client: Client
) -> None:
    """Each tick sent a TYPE for every key of every workflow and queue served:
    1,000 workflows and 1,000 queues made 8,016 TYPE a minute per supervisor
    (134 commands/s each on an idle Redis)."""
    workflows = [f"wf-{i}" for i in range(1000)]
    queues = tuple(f"q-{i}" for i in range(1000))
    k = client.keys
    bad = {k.wf_waiting("wf-0"), k.workflow_runs("wf-500"), k.q_bell("q-999")}
    for key in bad:
        raw.set(key, "not a redflow key")
    raw.set(k.leases, "not a redflow key")  # prefix-wide: named at every tick
    duty = KeyCheckDuty(client, workflows, lambda: queues)
    named = 7 * len(workflows) + 3 * len(queues)  # wf-suspended, rate-started
    ticks = math.ceil(named / KEYS_PER_TICK)
    prefix_wide = len(expected_types(k))  # named at every tick, besides the turn
    found: set[str] = set()
    for i in range(ticks):
        counts = command_counts(raw, lambda: duty.tick(time.monotonic()))
        assert counts.get("type", 0) <= KEYS_PER_TICK + prefix_wide, counts
        assert k.leases in duty.found, i
        found.update(duty.found)
    assert found == bad | {k.leases}
