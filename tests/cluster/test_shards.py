"""``shards = 3`` on the session's 3-master Redis Cluster: the control plane and
the whole system (real processes).

- The three shards of a prefix land on three different masters.
- Two supervisors (``redflow-supervisor --shards 3``) drain 3,000 runs of the
  fault suite's workload, whose workflows live in all three shards; every
  invariant of ``tests/faults/invariants.py`` holds, read through
  :class:`MergedRaw` (the shards' keys seen as one ``{prefix}`` keyspace).
- Bad input: a supervisor started with another ``--shards`` than the keyspace
  records exits naming ``redflow migrate --shards``; a shard's slot moved to
  another master (ASK, TRYAGAIN, then MOVED) while shards are listed, swept and
  promoted: nothing lost.
"""

from __future__ import annotations

import os
import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from redflow_mp import Registry, Worker, create_client, define_workflow
from redflow_mp.admin import queue_stats
from redflow_mp.ids import new_run_id
from redflow_mp.queries import count_status, list_runs_all
from redflow_mp.shardmeta import check_shards
from redflow_mp.shards import shard_tags
from supervisor.duties.promoter import PromoterDuty
from tests.faults.harness import faults_harness
from tests.process.conftest import run_supervisor_once
from tests.servers import Cluster

N = 3


def _pattern_tail(pattern: str, escaped_tag: str) -> str:
    assert pattern.startswith(escaped_tag), pattern
    return pattern[len(escaped_tag) :]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class MergedRaw:
    """The keys of a prefix's N shards, read as if they were one ``{prefix}``
    keyspace (for the fault suite's checkers, which read one tag). A key of a run
    goes to the shard its id names, a key of a workflow to the workflow's shard,
    the singletons to shard 0; an index (``runs:status:*``, queues, ``leases``,
    ...) is the union of every shard's. Read-only."""

    def __init__(self, cluster: Cluster, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.tag = "{" + prefix + "}"
        self.n = shards
        self.tags = list(shard_tags(prefix, shards))
        self.conns = []
        for tag in self.tags:
            node = cluster.node_for_slot(key_slot(tag[1:-1].encode()))
            self.conns.append(redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=10))

    def close(self) -> None:
        for c in self.conns:
            c.close()

    # routing
    def _wf(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self.n

    def route(self, key: str) -> list[int]:
        rest = key[len(self.tag) + 1 :]
        head, _, tail = rest.partition(":")
        if head == "run":
            run_id = tail.split(":", 1)[0]
            sep = run_id.rfind("~")
            return [int(run_id[sep + 1 :]) if sep >= 0 else 0]
        if head in ("workflow", "wf-running", "wf-waiting", "wf-apps", "rate", "workflow-runs"):
            return [self._wf(tail)]
        if head == "idempo":
            length, _, more = tail.partition(":")
            return [self._wf(more.encode()[: int(length)].decode())]
        if head in (
            "meta",
            "supervisors",
            "supervisor",
            "lock",
            "workflows",
            "app-live",
            "app-reg",
        ):
            return [0]
        return list(range(self.n))

    def _key(self, key: str, i: int) -> str:
        return self.tags[i] + key[len(self.tag) :]

    def _each(self, key: str) -> Iterator[tuple[redis.Redis, str]]:
        for i in self.route(key):
            yield self.conns[i], self._key(key, i)

    # reads
    def zrange(self, key: str, start: int, end: int, withscores: bool = False) -> Any:
        assert (start, end) == (0, -1)
        pairs: list[Any] = []
        for c, k in self._each(key):
            pairs.extend(c.zrange(k, 0, -1, withscores=True))
        pairs.sort(key=lambda p: p[1])
        return pairs if withscores else [p[0] for p in pairs]

    def zcard(self, key: str) -> int:
        return sum(int(c.zcard(k)) for c, k in self._each(key))

    def zscore(self, key: str, member: Any) -> Any:
        for c, k in self._each(key):
            score = c.zscore(k, member)
            if score is not None:
                return score
        return None

    def zmscore(self, key: str, members: list[Any]) -> list[Any]:
        out: list[Any] = [None] * len(members)
        for c, k in self._each(key):
            for i, score in enumerate(c.zmscore(k, members)):
                if out[i] is None:
                    out[i] = score
        return out

    def smembers(self, key: str) -> set[Any]:
        return {m for c, k in self._each(key) for m in c.smembers(k)}

    def sismember(self, key: str, member: Any) -> bool:
        return any(c.sismember(k, member) for c, k in self._each(key))

    def hgetall(self, key: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for c, k in self._each(key):
            out.update(c.hgetall(k))
        return out

    def hget(self, key: str, field: str) -> Any:
        for c, k in self._each(key):
            value = c.hget(k, field)
            if value is not None:
                return value
        return None

    def hmget(self, key: str, fields: Any, *more: Any) -> list[Any]:
        names = list(fields) if isinstance(fields, (list, tuple)) else [fields, *more]
        return [self.hget(key, f) for f in names]

    def get(self, key: str) -> Any:
        (i,) = self.route(key)
        return self.conns[i].get(self._key(key, i))

    def pttl(self, key: str) -> int:
        (i,) = self.route(key)
        return int(self.conns[i].pttl(self._key(key, i)))

    def llen(self, key: str) -> int:
        return sum(int(c.llen(k)) for c, k in self._each(key))

    def lrange(self, key: str, start: int, end: int) -> list[Any]:
        return [x for c, k in self._each(key) for x in c.lrange(k, start, end)]

    def time(self) -> Any:
        return self.conns[0].time()

    def scan_iter(self, match: str, count: int = 1000, _type: str | None = None) -> Iterator[bytes]:
        tail = _pattern_tail(match, _glob_escape(self.tag))
        for i, c in enumerate(self.conns):
            for k in c.scan_iter(match=_glob_escape(self.tags[i]) + tail, count=count, _type=_type):
                yield (self.tag + k.decode()[len(self.tags[i]) :]).encode()

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self)


class _Pipe:
    def __init__(self, raw: MergedRaw) -> None:
        self.raw = raw
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> _Pipe:
            self.calls.append((name, args, kwargs))
            return self

        return record

    def execute(self) -> list[Any]:
        calls, self.calls = self.calls, []
        return [getattr(self.raw, name)(*args, **kwargs) for name, args, kwargs in calls]


def _masters(cluster: Cluster, prefix: str) -> set[int]:
    return {cluster.node_for_slot(key_slot(t[1:-1].encode())).port for t in shard_tags(prefix, N)}


def spread_prefix(cluster: Cluster, base: str) -> str:
    """A prefix whose three shards land on three masters."""
    return next(p for i in range(200) if len(_masters(cluster, p := f"{base}{i}")) == N)


def test_three_shards_on_three_masters_and_fan_out_reads(redis_cluster: Cluster) -> None:
    prefix = spread_prefix(redis_cluster, f"spread-{os.getpid()}-")
    c = create_client(redis_cluster.url, prefix=prefix, default=False, shards=N)
    try:
        check_shards(c)
        c.redis.ping()
        ports = {getattr(s.transport.router, "address", None) for s in c.shards}
        assert len(ports) == N
        now = c.server_time_ms()
        ids = []
        for s in c.shards:
            wf = next(f"w{i}" for i in range(99) if c.shard_of_workflow(f"w{i}") is s)
            run_id, _ = s.scripts.enqueue(
                s.run_id(new_run_id()), wf, "q", b"1", 1, now + 200, "", 0, "", "", None, None
            )
            ids.append(run_id)
        assert sorted(r.id for r in list_runs_all(c)) == sorted(ids)
        time.sleep(0.3)
        PromoterDuty(c, 100).tick(time.monotonic())
        assert count_status(c, "queued") == N
    finally:
        c.close()


@pytest.mark.process
@pytest.mark.timeout(420)
def test_two_supervisors_drain_3000_runs_over_3_shards(
    redis_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = redis_cluster
    prefix = spread_prefix(cluster, f"sdrain-{os.getpid()}-")
    with faults_harness(tmp_path, prefix) as fx:
        raw = MergedRaw(cluster, prefix, N)
        sups = [fx.supervisor(cluster.url, procs=2, args=["--shards", str(N)]) for _ in range(2)]
        for sup in sups:
            sup.wait_workers(2)
        prod = fx.producer(cluster.url, 3000, shards=N)
        prod.start()
        prod.wait(240)
        fx.assert_no_crash()
        report = fx.finish(
            raw,  # type: ignore[arg-type]
            "cluster: 2 supervisors, 3 shards, 3000 runs",
            recovery_s=None,
            settle_timeout=240,
        )
        report.assert_ok(all_succeeded=True)
        assert report.runs >= 3000
        # every shard did its share of the work
        done = [
            int(c.zcard(f"{t}:runs:status:succeeded"))
            for c, t in zip(raw.conns, raw.tags, strict=True)
        ]
        assert all(n > 0 for n in done), done
        raw.close()


@pytest.mark.process
def test_supervisor_with_another_shard_count_is_refused(redis_cluster: Cluster) -> None:
    prefix = f"sref-{os.getpid()}"
    c = create_client(redis_cluster.url, prefix=prefix, default=False, shards=N)
    try:
        check_shards(c)
    finally:
        c.close()
    args = ["--url", redis_cluster.url, "--prefix", prefix, "--app", "a", "--procs", "1"]
    args += ["--module", "tests.process.flows", "--shards", "2"]
    proc = run_supervisor_once(*args)
    assert proc.returncode != 0
    assert re.search(r"has 3 shard\(s\).*redflow migrate --prefix \S+ --shards 2", proc.stderr), (
        proc.stderr
    )


@pytest.mark.timeout(180)
def test_a_shard_slot_moved_between_bursts_loses_nothing(
    redis_cluster: Cluster, registry: Registry
) -> None:
    """Shard 1's slot moves to another master (ASK / TRYAGAIN while it moves, MOVED
    after) with runs scheduled in every shard; listing, stats and the promoter run
    during the move; the same client and workers then finish everything."""
    from tests.cluster.test_connection import _migrate_slot

    cluster = redis_cluster
    prefix = spread_prefix(cluster, f"smove-{os.getpid()}-")
    client = create_client(cluster.url, prefix=prefix, registry=registry, default=False, shards=N)
    names = [
        next(f"m{i}" for i in range(99) if client.shard_of_workflow(f"m{i}").index == k)
        for k in range(N)
    ]
    flows = [define_workflow(n, queue="mv", registry=registry)(_double) for n in names]
    client.sync_registry(registry, app="t")
    check_shards(client)

    def burst(n: int, run_at: float | None = None) -> list[str]:
        return [client.enqueue_workflow(flows[i % N], i, run_at=run_at).id for i in range(n)]

    def drain(ids: list[str]) -> None:
        workers = [
            Worker(client, registry=registry, block_timeout=0.05, maintenance=True)
            for _ in range(2)
        ]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        for t in threads:
            t.start()
        try:
            for run_id in ids:
                assert client.handle(run_id).result(timeout=60) is not None
        finally:
            for w in workers:
                w.stop()
            for t in threads:
                t.join(10)

    first = burst(60)
    drain(first)
    later = burst(30, run_at=time.time() + 1.0)  # scheduled in every shard across the move
    slot = key_slot(client.shards[1].keys.tag[1:-1].encode())
    before = cluster.node_for_slot(slot)
    target = next(n for n in cluster.masters if n.port != before.port)
    seen: list[Any] = []

    def read_during_move() -> None:
        def read() -> None:
            seen.append(len(list_runs_all(client, limit=1000)))
            seen.append(sum(q.scheduled for q in queue_stats(client)))

        reader = threading.Thread(target=read)
        reader.start()
        seen.append(reader)

    _migrate_slot(cluster, slot, target.port, read_during_move)
    reader = seen.pop(0)
    reader.join(20)
    assert seen == [90, 30]
    assert cluster.node_for_slot(slot).port == target.port
    time.sleep(1.0)
    PromoterDuty(client, 100).tick(time.monotonic())
    drain(later)
    last = burst(30)
    drain(last)
    states = list_runs_all(client, limit=1000)
    assert len(states) == 120 and all(s.status == "succeeded" for s in states)
    assert {s.id for s in states} == set(first + later + last)
    client.close()


def _double(ctx: Any) -> int:
    return int(ctx.input) * 2 + 1
