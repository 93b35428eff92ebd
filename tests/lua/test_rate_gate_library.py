"""The rate gate's helpers are made by rate_gate() (_lib_rate.lua) on a claim's
first need: per call in an EVALSHA, once in the function library (kept in
RATE_GATE across calls). Two workflows with different limits claimed in turn,
over many calls of one library: each keeps its own limit (nothing of one call,
or of one workflow, is kept for the next)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(30)


def test_two_limits_claimed_in_turn_each_keep_their_own(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    k = cl.keys
    limits = {"a": 2, "b": 5, "free": None}
    for wf, n in limits.items():
        spec = {"name": wf, "maxConcurrency": 1000}
        if n is not None:
            spec["rateLimit"] = f"{n}/h"
        raw.hset(k.workflow(wf), mapping=spec)
    ids: dict[str, list[str]] = {wf: [] for wf in limits}
    for _ in range(8):
        for wf in limits:
            ids[wf].append(enq(wf, queue=wf, max_concurrency=1000))
    started: dict[str, int] = dict.fromkeys(limits, 0)
    for _ in range(12):  # one claim per call, the workflows in turn
        for wf in limits:
            _, got = cl.scripts.claim((wf,), 60_000, new_token())
            if got is not None:
                started[wf] += 1
    assert started == {"a": 2, "b": 5, "free": 8}
    for wf, n in limits.items():
        if n is None:
            continue
        states = [status_of(raw, cl, rid) for rid in ids[wf]]
        assert states.count("running") == n
        assert states.count("scheduled") == 8 - n
        assert raw.zcard(k.rate_started(wf)) == n
