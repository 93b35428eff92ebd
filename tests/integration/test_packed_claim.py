"""A worker's claim naming its queues goes through the packed call
(``PackedClaims``, ``claim_scripts.py``): its finish and its claim are applied
as the general path applies them, a server that lost the scripts is recovered
(NOSCRIPT: the call sent again as EVAL), a queue list rotated by the turn claims
as before, and a transport with a durability wait keeps the general path (the
WAIT that must follow the call)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, NotReplicatedError, Registry, create_client, define_workflow
from redflow_mp.ids import new_token
from redflow_mp.scripts import Finish
from redflow_mp.worker import Worker
from tests.helpers import command

pytestmark = pytest.mark.timeout(60)


def _claims(sent: list[bytes], client: Client) -> list[bytes]:
    s = client.scripts
    names = {s._shas["claim_run"], *([s._functions["claim_run"]] if s._functions else [])}
    return [p for p in sent if any(f"\r\n{n}\r\n".encode() in p for n in names)]


def _flush_scripts(raw: redis.Redis, client: Client) -> None:
    command(raw, "SCRIPT", "FLUSH")
    if client.transport.server_version() >= (7, 0):
        command(raw, "FUNCTION", "FLUSH")


def test_a_worker_survives_the_server_losing_its_scripts_between_two_claims(
    any_client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    """The first run's handler empties the script cache (and the function
    libraries): the claim carrying its finish meets NOSCRIPT (or "Function not
    found"), is sent again as EVAL, and every run still succeeds."""
    flushed: list[bool] = []

    @define_workflow("pk-flush", queue="pk-q", registry=registry)
    def flush(ctx: Any) -> int:
        if not flushed:
            flushed.append(True)
            _flush_scripts(raw, any_client)
        return int(ctx.input) * 2

    handles = [flush.run(i, client=any_client) for i in range(4)]
    worker = Worker(any_client, queues=["pk-q"], registry=registry, max_runs=4, block_timeout=0.1)
    worker.run()
    assert [h.result(timeout=10) for h in handles] == [0, 2, 4, 6]
    assert flushed and worker.runs_done == 4
    assert len(_claims(packed_calls, any_client)) >= 4  # 4 claims, the first finish-free


def test_a_packed_claim_applies_its_finish_and_claims_across_a_rotated_queue_list(
    client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    """Two queues, the turn moving the ties to the second one (the list rotated):
    each claim gives a ready run of either queue, and the finish riding on it is
    applied; all through the packed call."""

    @define_workflow("pk-a", queue="pk-a", registry=registry)
    def a(ctx: Any) -> None:
        return None

    @define_workflow("pk-b", queue="pk-b", registry=registry)
    def b(ctx: Any) -> None:
        return None

    ids = [a.run(client=client).id, b.run(client=client).id, a.run(client=client).id]
    before = len(packed_calls)
    queues = ("pk-a", "pk-b")
    got: list[str] = []
    finish: Finish | None = None
    results: list[str] = []
    for turn in (1, 0, 1, 0):
        token = new_token()
        result, claimed = client.scripts.claim(queues, 60_000, token, finish, turn=turn)
        results.append(result)
        finish = None
        if claimed is not None:
            got.append(claimed.id)
            finish = Finish("succeeded", claimed.id, token, b'"ok"')
    assert sorted(got) == sorted(ids)  # ties (one ms) go to the queue at the turn
    assert results == ["", "succeeded", "succeeded", "succeeded"]
    assert len(packed_calls) - before == 4
    assert [raw.hget(client.keys.run(i), "status") for i in ids] == [b"succeeded"] * 3
    assert raw.zcard(client.keys.leases) == 0


def test_a_claim_with_a_durability_wait_is_not_packed(
    redis_url: str, prefix: str, registry: Registry, packed_calls: list[bytes]
) -> None:
    """durability "wait": the claim is followed by its WAIT (no replica here: it
    fails with NotReplicatedError); a packed claim would have sent no WAIT."""
    c = create_client(
        redis_url,
        prefix=prefix,
        registry=registry,
        default=False,
        durability="wait",
        durability_wait_ms=50,
    )
    try:
        with pytest.raises(NotReplicatedError):
            c.scripts.claim(("pk-w",), 60_000, new_token())
        assert packed_calls == []
    finally:
        c.close()
