"""A ``/metrics`` scrape reads ``runs:status:running`` a page at a time: its
``ZRANGE ... 0 -1`` of the whole index cost 12.7 ms of Redis at every scrape at
200,000 running runs. The ``processing`` depths stay exact: with few runs
running at every scrape, past a page once a pass over the index is whole."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.admin import RunQueues
from redflow_mp.depths import RUNNING_PAGE, read_depths
from tests.helpers import command_counts, status_index_reads

Read = list[bytes]


def running_reads(raw: redis.Redis, action: Callable[[], object]) -> list[Read]:
    """The reads of ``runs:status:running`` (ZRANGE, ZRANGEBYSCORE) ``action`` made."""
    out: list[Read] = []

    def both() -> None:
        # status_index_reads logs every command: ZRANGE reads from it, the others here
        action()
        logged = raw.slowlog_get(1_000_000)
        out.extend(
            e["command"].split()
            for e in logged
            if e["command"].upper().startswith(b"ZRANGEBYSCORE ")
            and b":runs:status:running" in e["command"]
        )

    out.extend(r for r in status_index_reads(raw, both) if b":runs:status:running" in r[1])
    return out


pytestmark = pytest.mark.timeout(300)

PAGE = RUNNING_PAGE if RUNNING_PAGE else 10_000


def _running(raw: redis.Redis, client: Client, n: int, base: int = 0) -> dict[str, int]:
    """``n`` running runs of queues qa/qb (their records: a queue field), a third
    of them started in one millisecond (more ids of one score than a page):
    returns the runs per queue."""
    k = client.keys
    per: dict[str, int] = {}
    pipe = raw.pipeline(transaction=False)
    for i in range(n):
        run_id = f"run-{base + i:07d}"
        queue = "qa" if i % 3 else "qb"
        per[queue] = per.get(queue, 0) + 1
        pipe.hset(k.run(run_id), mapping={"status": "running", "queue": queue})
        score = 1_000_000 if i < n // 3 else 1_000_000 + i
        pipe.zadd(k.runs_status("running"), {run_id: score})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return per


def _processing(client: Client, seen: RunQueues) -> dict[str, int]:
    depths = read_depths(client, ["qa", "qb"], [], seen)
    return {name: q.processing for name, q in depths.queues.items()}


def test_a_scrape_reads_a_page_of_the_running_index_and_the_counts_stay_exact(
    raw: redis.Redis, client: Client
) -> None:
    n = 3 * PAGE + 123
    want = _running(raw, client, n)
    seen = RunQueues()
    got: list[dict[str, int]] = []
    for _ in range(5):  # more than a pass takes (4 pages)
        reads = running_reads(raw, lambda: got.append(_processing(client, seen)))
        assert reads, "the scrape read no page of the running index"
        for read in reads:
            words = [a.upper() for a in read]
            assert b"LIMIT" in words, f"a read of the whole index: {read!r}"
            assert int(read[words.index(b"LIMIT") + 2]) <= PAGE, read
    assert got[-1] == want
    # A warm scrape reads no run's queue it has seen (bounded by the page anyway).
    counts = command_counts(raw, lambda: _processing(client, seen))
    assert counts.get("hget", 0) <= PAGE
    # Runs that stop and start running are counted by the next whole pass.
    raw.zrem(client.keys.runs_status("running"), *[f"run-{i:07d}" for i in range(0, 3000, 3)])
    more = _running(raw, client, 500, base=n)
    for queue, c in more.items():
        want[queue] += c
    want["qb"] -= 1000
    for _ in range(10):  # the pass under way, then a whole one after the change
        last = _processing(client, seen)
    assert last == want
    assert len(seen.of(client.keys.tag)) == sum(want.values())  # the gone forgotten


def test_few_running_runs_are_counted_exactly_at_every_scrape(
    raw: redis.Redis, client: Client
) -> None:
    want = _running(raw, client, 300)
    seen = RunQueues()
    assert _processing(client, seen) == want
    raw.zrem(client.keys.runs_status("running"), "run-0000000")
    want["qb"] -= 1
    assert _processing(client, seen) == want


def test_a_pass_ends_while_runs_keep_starting(raw: redis.Redis, client: Client) -> None:
    """Runs keep starting (each scored after the pass's position): a pass read
    to ``+inf`` and, with as many starts between two scrapes as a page, never
    ended. Its counts grew at every scrape (past any number of running runs)
    and the ids it met with them, for good."""
    k = client.keys
    n = 2 * PAGE + PAGE // 2  # running at any time
    seen = RunQueues()

    def start(first: int, count: int) -> None:
        pipe = raw.pipeline(transaction=False)
        for i in range(first, first + count):
            run_id = f"run-{i:07d}"
            pipe.hset(k.run(run_id), mapping={"status": "running", "queue": "qa"})
            pipe.zadd(k.runs_status("running"), {run_id: 1_000_000 + i})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    start(0, n)
    oldest = 0
    for _ in range(12):  # a page of runs stop and as many start between two scrapes
        got = _processing(client, seen)
        assert sum(got.values()) <= n, f"processing {got} with {n} running"
        raw.zrem(k.runs_status("running"), *[f"run-{i:07d}" for i in range(oldest, oldest + PAGE)])
        start(oldest + n, PAGE)
        oldest += PAGE
    assert _processing(client, seen)["qa"] > 0
    assert len(seen.of(k.tag)) <= 2 * n, "the ids met are never forgotten"
