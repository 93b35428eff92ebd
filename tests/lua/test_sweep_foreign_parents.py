"""sweep_runs.lua with ``shards > 1``: a finished child whose parent (its
``parentRunId`` or one in ``run:<id>:parents``) lives in another shard cannot be
decided by the script (it touches one shard). It is kept, scored now, and the
(child, parent) pair is named in the reply, at most the call's batch of runs;
the pairs passed back as released are removed by the next call (read by id),
unless a parent of this shard still awaits the child."""

from __future__ import annotations

from collections.abc import Callable

import redis

from redflow_mp import Client
from redflow_mp.ids import new_token

FOREIGN = "01J00000000000000000000000~1"  # shard 1 of 2 (this is shard 0)
OTHER = "01J00000000000000000000001~3"  # shard 3 % 2 = 1: foreign too


def _child(raw: redis.Redis, client: Client, enq: Callable[..., str], parent: str) -> str:
    rid = enq(workflow="kid")
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == rid
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") == "succeeded"
    raw.hset(client.keys.run(rid), "parentRunId", parent)
    raw.zadd(client.keys.runs_status("succeeded"), {rid: 1})  # long ago
    return rid


def test_a_child_of_a_foreign_parent_is_kept_named_and_removed_once_released(
    raw: redis.Redis, sharded: Client, enq: Callable[..., str]
) -> None:
    k = sharded.keys
    kid = _child(raw, sharded, enq, FOREIGN)
    removed, more, pairs = sharded.scripts.sweep_call(1_000, 10)
    assert (removed, more, pairs) == (0, False, [(kid, FOREIGN)])
    score = raw.zscore(k.runs_status("succeeded"), kid)
    assert score is not None and score > 1  # scored now: not read again this period
    assert sharded.scripts.sweep_call(1_000, 10) == (0, False, [])
    removed, more, pairs = sharded.scripts.sweep_call(1_000, 10, [(kid, FOREIGN)])
    assert (removed, pairs) == (1, [])
    assert not raw.exists(k.run(kid))
    assert raw.zscore(k.runs_status("succeeded"), kid) is None


def test_a_released_child_stays_while_another_foreign_parent_is_undecided(
    raw: redis.Redis, sharded: Client, enq: Callable[..., str]
) -> None:
    k = sharded.keys
    kid = _child(raw, sharded, enq, FOREIGN)
    raw.sadd(k.run_parents(kid), OTHER)
    _, _, pairs = sharded.scripts.sweep_call(1_000, 10)
    assert sorted(pairs) == sorted([(kid, FOREIGN), (kid, OTHER)])
    removed, _, pairs = sharded.scripts.sweep_call(1_000, 10, [(kid, FOREIGN)])
    assert (removed, pairs) == (0, [(kid, OTHER)])
    assert raw.exists(k.run(kid))
    # (the parents set drops a released member; parentRunId is named until released)
    assert raw.smembers(k.run_parents(kid)) == {OTHER.encode()}
    removed, _, pairs = sharded.scripts.sweep_call(1_000, 10, [(kid, FOREIGN), (kid, OTHER)])
    assert (removed, pairs) == (1, [])
    assert not raw.exists(k.run(kid), k.run_parents(kid))


def test_the_named_pairs_are_bounded_by_the_batch(
    raw: redis.Redis, sharded: Client, enq: Callable[..., str]
) -> None:
    kids = [_child(raw, sharded, enq, FOREIGN) for _ in range(5)]
    seen: list[str] = []
    for _ in range(3):
        _, _, pairs = sharded.scripts.sweep_call(1_000, 2)
        assert len(pairs) <= 2
        seen += [c for c, _ in pairs]
    assert sorted(seen) == sorted(kids)  # each named once (kept ones are scored now)


def test_one_shard_reads_an_id_with_a_suffix_here(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """With one shard the reply and the rule are as before: the parent is read
    here (absent: the child goes)."""
    kid = _child(raw, client, enq, FOREIGN)
    assert client.scripts.sweep_call(1_000, 10) == (1, False, [])
    assert not raw.exists(client.keys.run(kid))
