"""The supervisor's probe (``supervisor/probe.py``) across many servers: one
call blocks the parent's loop about ``PROBE_TIMEOUT_S`` in all, however many
servers stall.

Before, each call PINGed every server it covered one after the other, each
bounded by 0.5 s: with the masters of a cluster stopped (SIGSTOP), the duties'
gate (``any_answers``) and the put-backs' probe (``answering``) each blocked
0.5 s per master, and both run in one pass of the loop (8 masters: about 8 s a
pass; 16: 16 s), while signals and exits waited. Now a call stops probing once
its 0.5 s budget is spent; the servers it did not reach are probed first by the
next call (a shard not probed is neither up nor down: its put-backs stay due).

The bound is the contract (two probes' worth, against 8 x 0.5 s before)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from redflow_mp import create_client
from redflow_mp.shards import shard_tags
from supervisor.probe import PROBE_TIMEOUT_S, Probe
from tests.servers import Cluster

pytestmark = pytest.mark.timeout(180)

MASTERS = 8
SHARDS = 16
#: The most one probe call may block: its budget, and the PING it started last.
BOUND = 3 * PROBE_TIMEOUT_S


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_probe_of_many_stalled_servers_blocks_one_budget_and_reaches_them_all(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(masters=MASTERS, full_coverage=False)
    prefix = next(
        p
        for p in (f"pbudget-{os.getpid()}-{i}" for i in range(200))
        if len({cluster.node_for_slot(key_slot(t.encode())).port for t in shard_tags(p, SHARDS)})
        == MASTERS
    )
    client = create_client(cluster.url, prefix=prefix, default=False, shards=SHARDS)
    probe = Probe(client)
    stopped: list[int] = []
    try:
        for shard in client.shards:
            shard.redis.ping()  # each pinned to its slot's master
        every = set(range(SHARDS))
        assert probe.any_answers()
        for node in cluster.masters:
            assert node.proc is not None
            os.kill(node.proc.pid, signal.SIGSTOP)
            stopped.append(node.proc.pid)
        answers, took = _timed(probe.any_answers)
        assert answers is False
        assert took < BOUND, (
            f"any_answers blocked {took:.1f} s with {MASTERS} masters stopped (bound {BOUND:g} s)"
        )
        down: set[int] = set()
        for _ in range(4 * MASTERS):
            left = every - down
            found, took = _timed(lambda: probe.answering(left))  # noqa: B023
            assert took < BOUND, (
                f"answering blocked {took:.1f} s with {MASTERS} masters stopped (bound {BOUND:g} s)"
            )
            assert isinstance(found, tuple)
            up, newly = found
            assert not up, up
            down |= newly
            if down == every:
                break
        assert down == every, f"shards never probed: {sorted(every - down)}"
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped.clear()
        assert probe.any_answers()
        assert probe.answering(every) == (every, set())
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        probe.close()
        client.close()
