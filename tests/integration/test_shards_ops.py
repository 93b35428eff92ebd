"""``shards > 1`` on one redis-server: the control plane. Listing and stats read
every shard and merge; the duties (promoter, reaper, retention, cron, relist) cover every
shard; the keyspace records its shard count and refuses another one.

Runs are written into a chosen shard with that shard's own scripts (as the data
plane does), so these tests do not depend on how enqueue picks the shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from redflow_mp import Client, Registry, create_client
from redflow_mp.admin import cron_entries, queue_stats, running_counts, workflow_stats
from redflow_mp.cron import CronDef, cron_id_for
from redflow_mp.errors import ShardsMismatchError
from redflow_mp.ids import new_run_id
from redflow_mp.maintenance import LeaderLock, stores
from redflow_mp.queries import count_status, get_run_any, list_runs_all, merge_runs, run_view
from redflow_mp.shardmeta import check_shards, recorded_shards
from redflow_mp.shards import shard_tags
from redflow_mp.shardset import Shard
from supervisor.duties.cron import CronDuty
from supervisor.duties.leader import LeaderDuty
from supervisor.duties.promoter import PromoterDuty
from supervisor.duties.relist import RelistDuty
from supervisor.duties.retention import RetentionDuty
from supervisor.ops.cli import main as redflow_main
from tests.helpers import status_index_reads
from tests.sharding import put, sharded_client, workflow_in

N = 3


@pytest.fixture()
def sharded(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    with sharded_client(redis_url, prefix, registry, N) as c:
        yield c


def test_listing_merges_every_shard_newest_first_and_pages_exactly(sharded: Client) -> None:
    ids: list[str] = []
    for i in range(12):  # round-robin over the shards, increasing createdAt
        shard = sharded.shards[i % N]
        ids.append(put(shard, workflow_in(sharded, shard.index)))
        time.sleep(0.002)
    newest_first = list(reversed(ids))
    assert [r.id for r in list_runs_all(sharded, limit=100)] == newest_first
    pages = [[r.id for r in list_runs_all(sharded, limit=5, offset=o)] for o in (0, 5, 10)]
    assert pages[0] + pages[1] + pages[2] == newest_first  # no overlap, no gap
    assert [len(p) for p in pages] == [5, 5, 2]
    # a filter on one workflow sees only that workflow's runs (all shards asked)
    wf2 = workflow_in(sharded, 2)
    only = [r.id for r in list_runs_all(sharded, workflow=wf2, limit=100)]
    assert only == [i for i in newest_first if i.endswith("~2")]
    queued = list_runs_all(sharded, status="queued", limit=4, offset=2)
    assert [r.id for r in queued] == newest_first[2:6]
    # one run from any shard, through the id's suffix
    assert (got := get_run_any(sharded, ids[4])) is not None and got.id == ids[4]
    assert count_status(sharded, "queued") == 12


def test_merge_breaks_created_ties_on_the_id() -> None:
    from redflow_mp.codec import RunState, RunStatus

    def run(i: str, at: int) -> RunState:
        return RunState(id=i, workflow="w", queue="q", status=RunStatus.QUEUED, created_at=at)

    a = [run("b~0", 5), run("a~0", 5)]
    b = [run("c~1", 5), run("x~1", 4)]
    assert [r.id for r in merge_runs([a, b], 2, 1)] == ["b~0", "a~0"]


def test_one_shard_listing_is_the_plain_query(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = client.redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("pipeline")
        return real(*args, **kwargs)

    run_id = put(client.shards[0], "w")
    monkeypatch.setattr(client.redis, "pipeline", counting)
    assert [r.id for r in list_runs_all(client)] == [run_id]
    assert stores(client) == [client]
    # one zrevrange, one pipeline of the run's row and payload sizes (HMGET,
    # HSTRLEN), one hget of its input: no other shard
    assert calls == ["pipeline"]


def test_stats_add_up_over_shards(sharded: Client) -> None:
    for k in range(N):
        for _ in range(k + 1):
            put(sharded.shards[k], workflow_in(sharded, k), queue="shared")
    stats = {q.name: q for q in queue_stats(sharded)}
    assert stats["shared"].ready == 1 + 2 + 3
    assert stats["shared"].oldest_ready_age_ms is not None
    names = [workflow_in(sharded, k) for k in range(N)]
    for k, name in enumerate(names):
        sharded.shards[k].redis.sadd(sharded.shards[k].keys.wf_running(name), f"fake{k}")
    assert running_counts(sharded, names) == [1, 1, 1]


def test_promoter_and_retention_cover_every_shard(sharded: Client) -> None:
    now = sharded.server_time_ms()
    # 2 s ahead: under load three enqueues took longer than a shorter delay
    late = [put(s, workflow_in(sharded, s.index), run_at_ms=now + 2_000) for s in sharded.shards]
    assert count_status(sharded, "scheduled") == N
    while sharded.server_time_ms() < now + 2_050:
        time.sleep(0.05)
    PromoterDuty(sharded, 100).tick(time.monotonic())
    assert count_status(sharded, "queued") == N
    for run_id in late:
        assert sharded.shard_of_run(run_id).scripts.cancel(run_id, "test") == "canceled"
    assert count_status(sharded, "canceled") == N
    time.sleep(0.05)
    duty = RetentionDuty(sharded, retention_s=0.01)
    duty.tick(time.monotonic())
    assert duty.removed == N
    assert list_runs_all(sharded) == []


def test_relist_covers_every_shard(sharded: Client) -> None:
    # Each shard's ready set lost: each shard's own relist pass puts its run back.
    ids = [put(s, workflow_in(sharded, s.index)) for s in sharded.shards]
    for s in sharded.shards:
        s.redis.delete(s.keys.q_ready("q"))
    duty = RelistDuty(sharded, between_pages=0.0)
    now = time.monotonic()
    for _ in range(100):  # a pass per shard: 5 pages each (one per source)
        if duty.passes >= N:
            break
        now = duty.tick(now)
    assert duty.passes == N
    assert duty.relisted == N
    for s, run_id in zip(sharded.shards, ids, strict=True):
        assert s.redis.zrange(s.keys.q_ready("q"), 0, -1) == [run_id.encode()]


def test_cron_leader_fires_the_crons_of_every_shard(sharded: Client) -> None:
    now = sharded.server_time_ms()
    fired_in: dict[int, str] = {}
    for shard in sharded.shards:
        wf = workflow_in(sharded, shard.index, "cronwf")
        cid = f"{wf}:c"
        record = CronDef(
            id=cid, workflow=wf, queue="cq", expression="* * * * *", timezone="UTC", input_json="1"
        )
        shard.redis.hset(shard.keys.cron_def, cid, msgspec.json.encode(record))
        shard.redis.zadd(shard.keys.cron_next, {cid: now - 10})
        fired_in[shard.index] = wf
    assert {c.workflow for c in cron_entries(sharded)} == set(fired_in.values())
    leader = LeaderDuty(sharded, 3000)
    leader.tick(time.monotonic())
    assert leader.is_leader and all(leader.holds(k) for k in range(N))
    duty = CronDuty(sharded, leader)
    duty.tick(time.monotonic())
    assert duty.fired == N
    for shard in sharded.shards:
        runs = list_runs_all(sharded, workflow=fired_in[shard.index])
        assert len(runs) == 1 and runs[0].id.endswith(f"~{shard.index}")
        assert runs[0].cron_id is not None
    # a second supervisor is not the leader of any shard until the first resigns
    other = LeaderLock(sharded, 3000)
    assert not other.tick() and not any(other.holds(k) for k in range(N))
    leader.resign()
    assert other.tick() and all(other.holds(k) for k in range(N))
    # a leader whose shard-0 lock was taken over hands its copies back at its next tick
    sharded.redis.set(sharded.keys.lock_cron, b"usurper", px=3000)
    assert not other.tick() and not any(other.holds(k) for k in range(N))
    for shard in sharded.shards[1:]:
        assert shard.redis.exists(shard.keys.lock_cron) == 0
    sharded.redis.delete(sharded.keys.lock_cron)
    third = LeaderLock(sharded, 3000)
    assert third.tick() and all(third.holds(k) for k in range(N))
    third.release()


def test_workflow_stats_sum_the_shards(sharded: Client, registry: Registry) -> None:
    from redflow_mp import define_workflow

    names = [workflow_in(sharded, k, "stat") for k in range(N)]
    for name in names:
        define_workflow(name, queue="sq", registry=registry)(lambda ctx: None)
    sharded.sync_registry(registry, app="t")
    for k, name in enumerate(names):
        put(sharded.shards[k], name, queue="sq")
    by_name = {s.meta.name: s for s in workflow_stats(sharded)}
    assert [by_name[n].queued for n in names] == [1, 1, 1]


# ------------------------------------------------------------------ meta


def test_fresh_keyspace_records_its_count_and_refuses_another(
    redis_url: str, prefix: str, make_client: Callable[..., Client]
) -> None:
    three = make_client(shards=3)
    assert recorded_shards(three) is None
    check_shards(three)
    assert recorded_shards(three) == 3
    for k, shard in enumerate(three.shards):
        assert shard.redis.hgetall(shard.keys.meta)[b"shard"] == str(k).encode()
    # create_client itself refuses them (test_shards_follow.py): look without it
    two = make_client(shards=2, verify_shards=False)
    with pytest.raises(ShardsMismatchError, match=r"redflow migrate --prefix .* --shards 2"):
        check_shards(two)
    one = make_client(verify_shards=False)
    with pytest.raises(ShardsMismatchError, match="has 3 shard"):
        check_shards(one)


def test_keyspace_written_before_shards_has_one(
    client: Client, make_client: Callable[..., Client]
) -> None:
    put(client.shards[0], "w")
    client.redis.hdel(client.keys.meta, "shards")
    three = make_client(shards=3)
    with pytest.raises(ShardsMismatchError, match=r"has 1 shard.*--shards 3"):
        check_shards(three)
    check_shards(client)
    assert client.redis.hget(client.keys.meta, "shards") == b"1"


def test_a_shard_tag_holding_another_keyspace_is_refused(sharded: Client) -> None:
    shard = sharded.shards[2]
    shard.redis.hset(shard.keys.meta, mapping={"prefix": "someone-else", "shard": "1"})
    with pytest.raises(ShardsMismatchError, match="another application uses it"):
        check_shards(sharded)


def test_redflow_cli_takes_the_recorded_count_and_refuses_another(
    redis_url: str, prefix: str, sharded: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    check_shards(sharded)
    ids = [put(s, workflow_in(sharded, s.index)) for s in sharded.shards]
    base = ["--url", redis_url, "--prefix", prefix]
    assert redflow_main(["runs", "list", "--json", *base]) == 0
    listed = {r["id"] for r in msgspec.json.decode(capsys.readouterr().out)}
    assert listed == set(ids)
    assert redflow_main(["runs", "show", ids[2], *base]) == 0
    assert ids[2] in capsys.readouterr().out
    assert redflow_main(["queues", "--shards", "2", *base]) != 0
    err = capsys.readouterr().err
    assert "has 3 shard(s)" in err and "--shards 2" in err and "redflow migrate" in err


# ------------------------------------------------------------- re-sharding


def _finished(shard: Shard, workflow: str, key: str = "") -> str:
    run_id, _ = shard.scripts.enqueue(
        shard.run_id(new_run_id()), workflow, "q", b"1", 1, 0, key, 60_000, "", "", None, None
    )
    assert shard.scripts.cancel(run_id, "done") == "canceled"
    shard.redis.rpush(shard.keys.run_attempts(run_id), b'{"attempt":1}')
    return run_id


def _snapshot(client: Client) -> dict[str, tuple[str, str | None, int]]:
    """Every run (any shard): id -> (status, workflow, attempts list length)."""
    out: dict[str, tuple[str, str | None, int]] = {}
    for state in list_runs_all(client, limit=10_000):
        view = run_view(client, state.id)
        n = int(view.redis.llen(view.keys.run_attempts(state.id)))
        out[state.id] = (state.status.value, state.workflow, n)
    return out


def _reshard(old: Client, new: Client) -> Any:
    from redflow_mp.reshard import reshard

    return reshard(old, new)


def test_reshard_1_to_3_and_back_keeps_every_run_and_key(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    from redflow_mp import Cron, define_workflow

    one = make_client()
    three = make_client(shards=3)
    names = [workflow_in(three, k, "mv") for k in range(3)]
    for name in names:
        define_workflow(name, queue="q", registry=registry, cron=[Cron("0 0 1 1 *")])(
            lambda ctx: None
        )
    one.sync_registry(registry, app="t")
    check_shards(one)
    finished = [_finished(one.shards[0], name, key=f"k-{name}") for name in names for _ in range(3)]
    stay = put(one.shards[0], names[0])  # an unfinished run whose workflow stays in shard 0
    cids = {name: cron_id_for(name, Cron("0 0 1 1 *")) for name in names}
    for name, cid in cids.items():  # each entry's latest skipped fire time moves with it
        one.shards[0].redis.hset(one.shards[0].keys.cron_skipped, cid, 1000 + len(name))
    before = _snapshot(one)
    report = _reshard(one, three)
    assert sorted(report.workflows_moved) == sorted(names[1:])
    assert report.runs_moved == 0  # 1 -> 3: ids without a suffix name shard 0
    assert report.cron_entries == 2 and report.idempotency_keys == 2 * 1
    check_shards(three)
    with pytest.raises(ShardsMismatchError, match="--shards 1"):
        check_shards(one)
    assert _snapshot(three) == before
    for k, name in enumerate(names):
        shard = three.shards[k]
        assert shard.redis.exists(shard.keys.workflow(name)) == 1
        assert shard.redis.hget(shard.keys.cron_skipped, cids[name]) == b"%d" % (1000 + len(name))
        assert shard.redis.hlen(shard.keys.cron_skipped) == 1
        assert {c.workflow for c in cron_entries(three)} == set(names)
        # the idempotency key dedupes at the workflow's new shard
        again, created = shard.scripts.enqueue(
            shard.run_id(new_run_id()),
            name,
            "q",
            b"1",
            1,
            0,
            f"k-{name}",
            60_000,
            "",
            "",
            None,
            None,
        )
        assert not created and again in finished
    assert (got := get_run_any(three, stay)) is not None and got.status.value == "queued"
    # and back to one shard: every run lands in {prefix} with its id
    moved_back = [_finished(three.shards[2], names[2]) for _ in range(2)]
    before = _snapshot(three)
    one_again = make_client(verify_shards=False)  # the target count, not recorded yet
    report = _reshard(three, one_again)
    assert report.runs_moved == 2
    check_shards(one_again)
    assert _snapshot(one_again) == before
    for run_id in moved_back:
        assert one_again.redis.exists(one_again.keys.run(run_id)) == 1
    assert {c.workflow for c in cron_entries(one_again)} == set(names)


def test_reshard_refuses_unfinished_runs_that_would_move(
    make_client: Callable[..., Client],
) -> None:
    from redflow_mp.errors import RedflowError

    one = make_client()
    three = make_client(shards=3)
    check_shards(one)
    run_id = put(one.shards[0], workflow_in(three, 2))
    with pytest.raises(RedflowError, match=r"1 unfinished run.*Nothing was changed"):
        _reshard(one, three)
    assert recorded_shards(one) == 1 and one.redis.hget(one.keys.meta, "reshardTo") is None
    assert one.redis.exists(one.keys.run(run_id)) == 1


def test_reshard_reads_the_unfinished_runs_in_chunks(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check for unfinished runs that would move read every unfinished run at
    once: with a million queued runs (even for a count it already has), one
    ZRANGE 0 -1 that blocked Redis ~100 ms and a pipeline of a million HGETs,
    750 MB in the CLI. Now a chunk at a time, and a run to refuse is still found
    in a later chunk."""
    from redflow_mp.errors import RedflowError

    monkeypatch.setattr("redflow_mp.reshard._CHUNK", 2, raising=False)
    one = make_client()
    three = make_client(shards=3)
    check_shards(one)
    for _ in range(5):
        put(one.shards[0], workflow_in(three, 0))  # stays in shard 0
    blocked = put(one.shards[0], workflow_in(three, 2))
    raw = one.redis
    refused: list[RedflowError] = []

    def attempt() -> None:
        try:
            _reshard(one, three)
        except RedflowError as exc:
            refused.append(exc)

    status_reads = status_index_reads(raw, attempt)
    assert len(refused) == 1 and "1 unfinished run" in str(refused[0])
    assert blocked in str(refused[0])
    assert status_reads
    for command in status_reads:
        start, stop = int(command[2]), int(command[3])
        assert 0 <= start <= stop < start + 2, command


def test_reshard_moves_the_finished_runs_in_chunks(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`redflow migrate --shards` read each status index whole to move its runs
    (one ZRANGE 0 -1: a million finished runs blocked Redis ~100 ms and held
    them all in the CLI). Now a chunk at a time, whether the runs of a chunk
    move (they leave the index) or stay (the next chunk starts past them)."""
    monkeypatch.setattr("redflow_mp.reshard._CHUNK", 2, raising=False)
    three = make_client(shards=3)
    check_shards(three)
    for shard in three.shards:
        for _ in range(5):
            _finished(shard, workflow_in(three, shard.index))
    before = _snapshot(three)
    two = make_client(shards=2, verify_shards=False)
    # 3 -> 2: shard 0's runs stay; those of shard k move unless shard k % 2 of
    # two has the same tag (the tags of shards > 0 depend on the prefix)
    moving = [s.index for s in three.shards if s.keys.tag != two.shards[s.index % 2].keys.tag]
    assert 0 not in moving and moving
    reports: list[Any] = []
    status_reads = status_index_reads(three.redis, lambda: reports.append(_reshard(three, two)))
    assert reports[0].runs_moved == 5 * len(moving)
    assert _snapshot(two) == before
    assert status_reads
    for command in status_reads:
        start, stop = int(command[2]), int(command[3])
        assert 0 <= start <= stop < start + 2, command


def test_reshard_killed_halfway_then_rerun_loses_and_duplicates_nothing(
    make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    import redflow_mp.reshard as rs

    three = make_client(shards=3)
    check_shards(three)
    ids = [_finished(s, workflow_in(three, s.index)) for s in three.shards for _ in range(4)]
    before = _snapshot(three)
    one = make_client(verify_shards=False)  # the target count, not recorded yet
    real = rs._move_run
    calls = {"n": 0}

    def dying(src: Any, dst: Any, run_id: str, status: str, score: float) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # copied, not yet deleted at the source: then killed
            for key in rs._run_keys(src, run_id):
                rs._copy_key(src, dst, key, dst.keys.tag + key[len(src.keys.tag) :])
            raise KeyboardInterrupt
        real(src, dst, run_id, status, score)

    monkeypatch.setattr(rs, "_move_run", dying)
    with pytest.raises(KeyboardInterrupt):
        _reshard(three, one)
    with pytest.raises(ShardsMismatchError, match="interrupted"):
        check_shards(one)
    monkeypatch.setattr(rs, "_move_run", real)
    report = _reshard(three, one)
    assert report.runs_moved == len(ids) - 4 - (5 - 1)
    check_shards(one)
    assert _snapshot(one) == before
    assert int(one.redis.zcard(one.keys.runs_created)) == len(ids)
    for shard in three.shards[1:]:
        assert list(shard.redis.scan_iter(match=shard.keys.tag + ":*")) == []


def test_redflow_migrate_shards_then_workers_drain_everything(
    redis_url: str,
    prefix: str,
    make_client: Callable[..., Client],
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    from redflow_mp import Worker, define_workflow

    one = make_client()
    three = make_client(shards=3)
    names = [workflow_in(three, k, "dr") for k in range(3)]
    flows: list[Any] = [
        define_workflow(n, queue="dq", registry=registry)(lambda ctx: 7) for n in names
    ]
    one.sync_registry(registry, app="t")
    check_shards(one)
    done = [_finished(one.shards[0], n) for n in names]
    waiting = one.enqueue_workflow(flows[0], None).id  # its workflow stays in shard 0
    base = ["--url", redis_url, "--prefix", prefix]
    one.redis.zadd(one.keys.supervisors, {"host:1": 1})
    one.redis.set(one.keys.supervisor("host:1"), b"{}", px=60_000)
    assert redflow_main(["migrate", "--shards", "3", *base]) != 0
    assert "supervisors still run" in capsys.readouterr().err
    one.redis.delete(one.keys.supervisor("host:1"))
    assert redflow_main(["migrate", "--shards", "3", *base]) == 0
    out = capsys.readouterr().out
    assert "1 shard(s) -> 3" in out and "workflows moved to another shard: 2" in out
    assert redflow_main(["runs", "list", "--json", *base]) == 0  # takes the recorded 3
    listed = {r["id"] for r in msgspec.json.decode(capsys.readouterr().out)}
    assert listed == {*done, waiting}
    fresh = [three.enqueue_workflow(f, None).id for f in flows]
    assert [three.shard_of_run(i).index for i in fresh] == [0, 1, 2]
    worker = Worker(three, registry=registry, block_timeout=0.05, maintenance=True)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for run_id in [waiting, *fresh]:
            assert three.handle(run_id).result(timeout=30) == 7
    finally:
        worker.stop()
        thread.join(10)
    assert count_status(three, "succeeded") == 4 and count_status(three, "canceled") == 3


def test_metrics_gauges_add_up_the_shards(sharded: Client, registry: Registry) -> None:
    from supervisor.duties.status import gauges

    for k in range(N):
        put(sharded.shards[k], workflow_in(sharded, k), queue="gq")
    got = {(name, labels): value for name, labels, value in gauges(sharded, registry, 2, ["gq"])}
    assert got[("redflow_queue_depth", (("queue", "gq"), ("state", "ready")))] == 3.0
    assert got[("redflow_runs_suspended", ())] == 0.0


def test_async_listing_merges_every_shard(redis_url: str, prefix: str, sharded: Client) -> None:
    import asyncio

    from redflow_mp.aio import create_async_client
    from redflow_mp.aio_connection import drive_query as _drive_query
    from redflow_mp.queries import alist_runs_all

    ids = [put(s, workflow_in(sharded, s.index)) for s in sharded.shards for _ in range(2)]

    async def listing() -> list[list[str]]:
        c = create_async_client(redis_url, prefix=prefix, default=False, shards=N)
        try:
            pages = [await alist_runs_all(c, _drive_query, limit=4, offset=o) for o in (0, 4)]
            return [[r.id for r in page] for page in pages]
        finally:
            await c.aclose()

    first, second = asyncio.run(listing())
    assert sorted(first + second) == sorted(ids) and len(first) == 4
    assert [r.id for r in list_runs_all(sharded, limit=4)] == first


def test_a_standalone_worker_with_maintenance_promotes_every_shard(
    sharded: Client, registry: Registry
) -> None:
    import threading

    from redflow_mp import Worker

    now = sharded.server_time_ms()
    late = [put(s, workflow_in(sharded, s.index), run_at_ms=now + 200) for s in sharded.shards]
    worker = Worker(sharded, queues=["q"], registry=registry, block_timeout=0.05, maintenance=True)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while count_status(sharded, "scheduled") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    assert count_status(sharded, "scheduled") == 0
    # each run left its shard's scheduled set (unknown workflows: they fail, not stay)
    for run_id in late:
        state = get_run_any(sharded, run_id)
        assert state is not None and state.status.value != "scheduled"


def test_dashboard_pages_show_every_shard(sharded: Client, registry: Registry) -> None:
    from redflow_mp import define_workflow
    from supervisor.ops.pages import View, queues_page, run_page, runs_page, workflows_page

    names = [workflow_in(sharded, k, "dash") for k in range(N)]
    for name in names:
        define_workflow(name, queue="dq", registry=registry)(lambda ctx: None)
    sharded.sync_registry(registry, app="t")
    ids = [put(sharded.shards[k], names[k], queue="dq") for k in range(N)]
    view = View(
        base="",
        shown_url="redis://x",
        prefix=sharded.prefix,
        refresh=0,
        page_size=2,
        actions=False,
        has_token=False,
        actions_off_note="",
        footer_note="",
    )
    first = "".join(runs_page(sharded, view, {}).parts)
    second = "".join(runs_page(sharded, view, {"page": "2"}).parts)
    shown = [i for i in ids if i in first] + [i for i in ids if i in second]
    assert sorted(shown) == sorted(ids)  # 2 on page 1, 1 on page 2, none twice
    assert all(name in first for name in names)  # the workflow filter lists every shard's
    assert ids[2] in "".join(run_page(sharded, view, {"id": ids[2]}).parts)
    wf_html = "".join(  # a page of two workflows: both pages
        "".join(workflows_page(sharded, view, {"page": p}).parts) for p in ("1", "2")
    )
    assert all(name in wf_html for name in names)
    assert "dq" in "".join(queues_page(sharded, view, {}).parts)


def test_redflow_on_a_fresh_prefix_writes_nothing(
    redis_url: str, prefix: str, raw: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for shards in ("1", "3"):
        argv = ["queues", "--url", redis_url, "--prefix", prefix, "--shards", shards]
        assert redflow_main(argv) == 0
    capsys.readouterr()
    tags = [t.strip("{}") for t in shard_tags(prefix, 3)]
    for tag in tags:
        assert list(raw.scan_iter(match=_glob_escape("{" + tag + "}") + ":*")) == []


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def test_other_prefixes_name_a_sharded_prefix_once(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.redis_server import RedisServer

    with RedisServer() as server:
        other = create_client(server.url, prefix=prefix + "-x", default=False, shards=3)
        try:
            for shard in other.shards:
                put(shard, workflow_in(other, shard.index))
        finally:
            other.close()
        assert redflow_main(["queues", "--url", server.url, "--prefix", prefix]) == 0
    err = capsys.readouterr().err
    assert f"other prefixes with redflow keys in this database: '{prefix}-x' (" in err, err


def test_a_repeated_scrape_reads_no_running_runs_queue_again_over_shards(
    sharded: Client, raw: Any
) -> None:
    """The arbiter's RunQueues remembers the queue of each running run between
    scrapes; it was one map for every shard, and each shard's pass forgot the runs
    of the others as "no longer running": with shards > 1 every scrape read the
    queue of (nearly) every running run again, one HGET each."""
    from redflow_mp.admin import RunQueues
    from tests.helpers import command_counts

    ids = []
    for shard in sharded.shards:
        for _ in range(20):
            rid = put(shard, workflow_in(sharded, shard.index))
            shard.redis.zadd(shard.keys.runs_status("running"), {rid: 1})
            ids.append(rid)
    remembered = RunQueues()
    first = {q.name: q for q in queue_stats(sharded, ["q"], remembered)}
    assert first["q"].processing == 20 * N
    again: list[Any] = []
    counts = command_counts(raw, lambda: again.append(queue_stats(sharded, ["q"], remembered)))
    assert again[0][0].processing == 20 * N
    assert counts.get("hget", 0) == N, counts  # each shard's head: its availableAt


def test_a_lock_copy_no_leader_can_hold_is_named_per_shard(sharded: Client, raw: Any) -> None:
    """A shard's copy of ``lock:cron`` that no leader sets (a string without
    expiry): the leader leads but cannot fire that shard's crons, so
    :meth:`LeaderLock.foreign_keys` names it (the leader duty logs it); a live
    leader's lock (it has a TTL) is never named."""
    views = stores(sharded)
    copy = views[2].keys.lock_cron
    raw.set(copy, "someone else's")
    lock = LeaderLock(sharded, 10_000)
    assert lock.tick() is True
    assert lock.holds(0) and lock.holds(1) and not lock.holds(2)
    assert lock.foreign_keys() == [(copy, "a string without expiry")]
    other = LeaderLock(sharded, 10_000)
    assert other.tick() is False
    assert other.foreign_keys() == [(copy, "a string without expiry")]
    raw.delete(copy)
    assert lock.tick() and lock.holds(2) and lock.foreign_keys() == []
