"""``redflow runs list`` with a large ``--limit``: printed as it is read, holding
one page of runs at a time (``--limit 100000 --json`` took 379 MB holding every
run, its table row and its JSON record before the first line was printed).
Measured by commands, not memory or time: at each printed line, how many runs
were read (``HGETALL`` calls) and not printed yet."""

from __future__ import annotations

import argparse
import json
import tracemalloc
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow, listing, queries
from redflow_mp.codec import text
from redflow_supervisor.ops.runs import cmd_runs_list
from redflow_supervisor.ops.session import Session

pytestmark = pytest.mark.timeout(120)

RUNS = 2500


def _noop(ctx: Context[Any]) -> None:
    return None


def _hgetalls(raw: Any) -> int:
    """HGETALL calls since the last reset (every node of a cluster, summed)."""
    if isinstance(raw, redis.RedisCluster):
        per_node = raw.info("commandstats", target_nodes=redis.RedisCluster.ALL_NODES)
        tables = list(per_node.values())
    else:
        tables = [raw.info("commandstats")]
    return sum(int(t.get("cmdstat_hgetall", {}).get("calls", 0)) for t in tables)


def _reset_stats(raw: Any) -> None:
    if isinstance(raw, redis.RedisCluster):
        raw.config_resetstat(target_nodes=redis.RedisCluster.ALL_NODES)
    else:
        raw.config_resetstat()


@pytest.mark.parametrize("as_json", [True, False])
def test_a_large_list_holds_one_page_of_runs_at_a_time(
    raw: redis.Redis, client: Client, registry: Registry, as_json: bool
) -> None:
    wf = define_workflow("bulk", registry=registry)(_noop)
    wf.run_many([{"i": i} for i in range(RUNS)], client=client)
    printed: list[str] = []
    unprinted: list[int] = []  # runs read, not printed yet, at each line
    _reset_stats(raw)

    def out(line: str) -> None:
        rows = len(printed) - 1  # the first line: "[" or the header
        if len(printed) % 100 == 0:
            unprinted.append(_hgetalls(raw) - max(0, rows))
        printed.append(line)

    session = Session(client=client, url="redis://x", prefix="x", json=as_json, out=out)
    ns = argparse.Namespace(workflow=None, status=None, limit=100_000, offset=0, after=None)
    assert cmd_runs_list(session, ns) == 0
    # a page, plus the JSON record held back until the next one says whether a comma follows
    assert max(unprinted) <= queries.ITER_PAGE + 1, unprinted[:5]
    if as_json:
        listed: list[dict[str, Any]] = json.loads("\n".join(printed))
        assert [r["id"] for r in listed] == [r.id for r in client.list_runs(limit=RUNS)]
    else:
        assert len(printed) == RUNS + 1
        assert printed[1].split()[0] == client.list_runs(limit=1)[0].id


def test_iter_runs_matches_list_runs(client: Client, registry: Registry) -> None:
    wf = define_workflow("few", registry=registry)(_noop)
    wf.run_many([{"i": i} for i in range(25)], client=client)
    for kwargs in ({}, {"status": "queued", "limit": 7, "offset": 3}, {"workflow": "few"}):
        want = [r.id for r in client.list_runs(**kwargs)]
        got = [r.id for r in queries.iter_runs_all(client, page=4, **kwargs)]
        assert got == want
    with pytest.raises(ValueError, match="unknown status"):
        client.iter_runs(status="bogus")  # at the call, not at the first read


def test_a_deep_page_after_a_cursor_does_not_walk_the_runs_before_it(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``redflow runs list --status queued --offset 4975`` walked the creation
    index up to the page (a million runs: ~1.5 s of round trips). ``--after``
    (the last run of the previous page, as the dashboard's "older" link) starts
    the page there. Scaled down as the dashboard's test: 6,000 runs."""
    monkeypatch.setattr(listing, "_SCAN_LIMIT", 100)
    monkeypatch.setattr(listing, "_READ_LIMIT", 1000)
    monkeypatch.setattr(listing, "_CHUNK_MIN", 100)
    monkeypatch.setattr(listing, "_CHUNK_MAX", 100)
    define_workflow("deep", registry=registry)(_noop)
    client.sync_registry(registry, app="cursor")
    for _ in range(6):
        client.run_many_by_name("deep", [{}] * 1000)
    offset = 199 * 25
    (previous,) = client.list_runs(status="queued", limit=1, offset=offset - 1)
    want = [r.id for r in client.list_runs(status="queued", limit=25, offset=offset)]
    printed: list[str] = []
    session = Session(client=client, url="redis://x", prefix="x", json=True, out=printed.append)
    ns = argparse.Namespace(
        workflow=None, status="queued", limit=25, offset=offset, after=previous.id
    )
    before = int(client.redis.info("commandstats")["cmdstat_zrevrange"]["calls"])
    assert cmd_runs_list(session, ns) == 0
    walked = int(client.redis.info("commandstats")["cmdstat_zrevrange"]["calls"]) - before
    assert [r["id"] for r in json.loads("\n".join(printed))] == want
    assert walked <= 2, f"{walked} chunks of 100 walked for the page at offset {offset}"


# 100,000 runs written, then listed under tracemalloc (which slows Python down
# severalfold): CPU-bound, past the default 120 s on a loaded machine (once killed
# there by the timeout with the load average at 25 on 2 cores).
@pytest.mark.timeout(360)
def test_a_list_without_status_holds_one_page_of_ids(raw: redis.Redis, client: Client) -> None:
    """``redflow runs list --limit 1000000`` (no status) read every id of the
    selection before its first run: a million ids, ~140 MiB. Now a page of ids at
    a time, each page right after the last id of the one before (a keyset
    cursor): the same runs in the same order. 100,000 runs written straight into
    ``runs:created`` and ``run:<id>`` (ties of createdAt included: three per ms)."""
    runs = 100_000
    k = client.keys
    t0 = 1_700_000_000_000
    with raw.pipeline(transaction=False) as pipe:
        for i in range(runs):
            run_id = f"01BULK{i:020d}"
            pipe.zadd(k.runs_created, {run_id: t0 + i // 3})
            pipe.hset(k.run(run_id), mapping={"id": run_id, "createdAt": t0 + i // 3})
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    want = [text(x) for x in raw.zrevrange(k.runs_created, 5, 5 + runs)]
    tracemalloc.start()
    try:
        seen = 0
        for run in queries.iter_runs_all(client, limit=runs, offset=5):
            assert run.id == want[seen], seen
            seen += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == runs - 5
    assert peak < 5 * 2**20, f"peak of {peak / 2**20:.1f} MiB listing {runs:,} runs"
