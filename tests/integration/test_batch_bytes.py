"""A batch of large inputs is cut into script calls of bounded size, not only of
at most BATCH_CHUNK runs.

Each ``enqueue_runs`` call is atomic: Redis serves nobody else while it runs.
Chunks were cut by count alone, so 60 inputs of 8 MB (each within the default
max_payload_bytes) went in one call that held Redis for 3 s (measured: a PING
from another client waited 3.0 s; leases, claims and every other client stalled
behind it; past lua-time-limit they get BUSY)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, define_workflow
from redflow_mp.batch import BATCH_CHUNK, BATCH_CHUNK_BYTES, chunk_calls
from redflow_mp.options import NO_OPTIONS
from redflow_mp.runs import EnqueueTarget

pytestmark = pytest.mark.timeout(120)

MB = 1024 * 1024


def _script_calls(raw: redis.Redis) -> int:
    stats: dict[str, Any] = raw.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def test_large_inputs_go_in_calls_of_bounded_size(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    @define_workflow("big-batch", registry=registry)
    def big(ctx: Any) -> None:
        return None

    inputs = [f"{i:04d}" + "x" * (MB - 10) for i in range(48)]  # 48 MB in all
    before = _script_calls(raw)
    handles = big.run_many(inputs, client=client)
    calls = _script_calls(raw) - before
    assert calls >= 48 * MB // BATCH_CHUNK_BYTES  # not one 48 MB call
    assert len({h.id for h in handles}) == 48
    for i in (0, 3, 4, 47):  # in order, each its own input
        state = client.get_run(handles[i].id)
        assert state is not None and state.input[:4] == f"{i:04d}"
    # small inputs: still BATCH_CHUNK runs a call
    before = _script_calls(raw)
    big.run_many(list(range(BATCH_CHUNK + 1)), client=client)
    assert _script_calls(raw) - before == 2


def test_every_chunk_holds_at_most_the_byte_budget_or_one_input() -> None:
    from redflow_mp.keys import Keys

    target = EnqueueTarget("wf", "q", 1, None, None, 0, None)
    sizes = [10, BATCH_CHUNK_BYTES, 10, BATCH_CHUNK_BYTES // 2, BATCH_CHUNK_BYTES // 2 + 1, 5]
    datas = [b"x" * n for n in sizes]
    keys = ["k" * 100 for _ in sizes]
    chunks = list(chunk_calls(Keys("p"), target, datas, keys, NO_OPTIONS))
    assert sum(len(ids) for ids, _, _ in chunks) == len(sizes)
    for ids, _, args in chunks:
        carried = sum(len(a) for a in args[10:] if isinstance(a, bytes | str))
        assert len(ids) == 1 or carried <= BATCH_CHUNK_BYTES
    assert [len(ids) for ids, _, _ in chunks] == [1, 1, 2, 2]
