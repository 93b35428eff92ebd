"""Inspecting runs: get_run / get_run_steps / list_runs (filters, newest first,
paging, bad arguments), None for unknown ids."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, Registry, RunState, RunStatus, define_workflow
from redflow_mp.ids import new_token

pytestmark = pytest.mark.timeout(60)


def _echo(ctx: Context[Any]) -> Any:
    return ctx.input


def _define(registry: Registry, *names: str) -> None:
    for name in names:

        def handler(ctx: Context[Any]) -> Any:
            return ctx.input

        define_workflow(name, registry=registry, max_concurrency=100)(handler)


def _finish(client: Client, queue: str, mode: str) -> str:
    tok = new_token()
    _, claimed = client.scripts.claim((queue,), 5_000, tok)
    assert claimed is not None
    payload = b'"ok"' if mode == "succeeded" else b'{"type":"E","message":"m"}'
    assert client.scripts.finalize(claimed.id, tok, mode, payload) == mode
    return claimed.id


def test_unknown_ids_and_names_return_none(client: Client) -> None:
    assert client.get_run("NO-SUCH-RUN") is None
    assert client.get_run_steps("NO-SUCH-RUN") is None
    assert client.get_workflow_meta("no-such-workflow") is None
    assert client.handle("NO-SUCH-RUN").state() is None
    assert client.list_runs() == []
    assert client.list_runs(workflow="nothing") == []
    assert client.list_workflows() == []


def test_get_run_returns_a_run_state(client: Client, registry: Registry) -> None:
    _define(registry, "a")
    h = client.run_by_name("a", {"x": 1}, idempotency_key="k")
    state = client.get_run(h.id)
    assert isinstance(state, RunState)
    assert (state.id, state.workflow, state.queue, state.status) == (h.id, "a", "default", "queued")
    assert state.input == {"x": 1}
    assert state.idempotency_key == "k"
    assert client.get_run_steps(h.id) == []


def test_list_runs_is_newest_first_with_paging(client: Client, registry: Registry) -> None:
    _define(registry, "a")
    ids = [client.run_by_name("a", i).id for i in range(25)]
    newest_first = list(reversed(ids))
    assert [r.id for r in client.list_runs()] == newest_first
    assert [r.id for r in client.list_runs(limit=10)] == newest_first[:10]
    assert [r.id for r in client.list_runs(limit=10, offset=10)] == newest_first[10:20]
    assert [r.id for r in client.list_runs(limit=10, offset=20)] == newest_first[20:]
    assert client.list_runs(offset=30) == []
    assert client.list_runs(limit=0) == []
    assert [r.input for r in client.list_runs(limit=3)] == [24, 23, 22]


def test_list_runs_filters_by_workflow_and_status(client: Client, registry: Registry) -> None:
    _define(registry, "a", "b")
    a_ids = [client.run_by_name("a", i).id for i in range(6)]
    b_ids = [client.run_by_name("b", i).id for i in range(4)]
    # the two oldest runs of a succeed, the next one fails; b stays queued
    done = [_finish(client, "default", "succeeded") for _ in range(2)]
    failed_a = _finish(client, "default", "failed")
    assert done == a_ids[:2] and failed_a == a_ids[2]
    all_ids = a_ids + b_ids
    assert [r.id for r in client.list_runs(workflow="a")] == list(reversed(a_ids))
    assert [r.id for r in client.list_runs(workflow="b")] == list(reversed(b_ids))
    assert [r.id for r in client.list_runs(status="succeeded")] == list(reversed(done))
    assert [r.id for r in client.list_runs(status=RunStatus.FAILED)] == [failed_a]
    assert [r.id for r in client.list_runs(workflow="a", status="succeeded")] == list(
        reversed(done)
    )
    assert client.list_runs(workflow="b", status="succeeded") == []
    queued = client.list_runs(status="queued")
    assert {r.id for r in queued} == set(all_ids) - set(done) - {failed_a}
    assert [r.id for r in client.list_runs(workflow="a", status="queued", limit=2, offset=1)] == [
        a_ids[4],
        a_ids[3],
    ]


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"status": "bogus"}, ValueError),
        ({"status": "SUCCEEDED"}, ValueError),
        ({"status": 3}, TypeError),
        ({"limit": -1}, ValueError),
        ({"limit": "10"}, TypeError),
        ({"limit": True}, TypeError),
        ({"offset": -1}, ValueError),
        ({"offset": 1.5}, TypeError),
        ({"workflow": ""}, ValueError),
        ({"workflow": 5}, TypeError),
    ],
)
def test_list_runs_bad_arguments(client: Client, kwargs: dict[str, Any], exc: type) -> None:
    with pytest.raises(exc):
        client.list_runs(**kwargs)


def test_list_runs_skips_removed_runs(raw: redis.Redis, client: Client, registry: Registry) -> None:
    _define(registry, "a")
    keep = client.run_by_name("a", 1)
    gone = client.run_by_name("a", 2)
    raw.delete(client.keys.run(gone.id))
    assert [r.id for r in client.list_runs()] == [keep.id]


def test_list_workflows_after_sync(client: Client, registry: Registry) -> None:
    _define(registry, "b", "a")
    client.sync_registry(app="inspect")
    metas = client.list_workflows()
    assert [m.name for m in metas] == ["a", "b"]
    assert all(m.app == "inspect" and m.max_concurrency == 100 for m in metas)


def test_list_runs_orders_by_creation_also_for_large_indexes(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redflow_mp.listing as client_module

    _define(registry, "a")
    ids = [client.run_by_name("a", i).id for i in range(8)]
    # finish four of them in an order unlike their creation order
    tokens: dict[str, str] = {}
    for _ in range(8):
        tok = new_token()
        _, c = client.scripts.claim(("default",), 5_000, tok)
        assert c is not None
        tokens[c.id] = tok
    for i in (5, 1, 7, 3):
        assert client.scripts.finalize(ids[i], tokens[ids[i]], "succeeded", b"1") == "succeeded"
    expected = [ids[7], ids[5], ids[3], ids[1]]
    small = [r.id for r in client.list_runs(workflow="a", status="succeeded")]
    assert small == expected
    # same answer when the indexes are too large to load at once
    monkeypatch.setattr(client_module, "_SCAN_LIMIT", 2)
    assert [r.id for r in client.list_runs(workflow="a", status="succeeded")] == expected
    assert [r.id for r in client.list_runs(status="succeeded")] == expected
    assert [r.id for r in client.list_runs(status="succeeded", limit=2, offset=1)] == expected[1:3]
    assert [r.id for r in client.list_runs(workflow="a", limit=3)] == ids[::-1][:3]


def test_corrupted_step_record_is_reported_not_raised(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    _define(registry, "a")
    h = client.run_by_name("a")
    raw.hset(client.keys.run_steps(h.id), "broken", b"{nope")
    steps = client.get_run_steps(h.id)
    assert steps is not None and len(steps) == 1
    assert steps[0].name == "broken"
    assert steps[0].error is not None and steps[0].error.type == "CorruptRecord"


def test_workflow_stats_do_not_read_every_queued_run(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """The workflows view (dashboard, `redflow workflows`) used to ZRANGE all of
    runs:status:queued and HGET each run's workflow: a million queued runs meant a
    million-entry reply and a million HGETs per page load. Past the counting limit
    the per-workflow queued count is unknown (None) and costs nothing."""
    from redflow_mp import admin
    from tests.helpers import command_counts

    _define(registry, "many-queued", "few-queued")
    client.sync_registry(registry, app="stats")
    registry.get("many-queued").run_many([None] * 12_000)  # type: ignore[union-attr]
    registry.get("few-queued").run_many([None] * 3)  # type: ignore[union-attr]
    out: list[Any] = []
    counts = command_counts(raw, lambda: out.extend(admin.workflow_stats(client)))
    by_name = {s.meta.name: s for s in out}
    assert by_name["many-queued"].queued is None
    assert by_name["few-queued"].queued is None
    assert counts.get("hget", 0) == 0, counts
    assert counts.get("zrange", 0) == 0, counts
    assert sum(counts.values()) < 50, counts


def test_workflow_stats_count_queued_runs_below_the_limit(
    client: Client, registry: Registry
) -> None:
    from redflow_mp import admin

    _define(registry, "some-queued", "none-queued")
    client.sync_registry(registry, app="stats")
    registry.get("some-queued").run_many([None] * 5)  # type: ignore[union-attr]
    by_name = {s.meta.name: s for s in admin.workflow_stats(client)}
    assert by_name["some-queued"].queued == 5
    assert by_name["none-queued"].queued == 0


def test_workflow_stats_below_the_limit_cost_a_few_commands_at_each_refresh(
    client: Client, registry: Registry, redis_url: str, raw: redis.Redis
) -> None:
    """Below the counting limit the workflows view (dashboard, every 5 s per
    viewer) sent one HGET per queued run at every refresh: 10,000 commands a
    refresh at the limit. A run's workflow never changes: a client reads it once
    while the run stays queued, so a refresh sends a handful of commands and the
    reads of the runs queued since (the counts stay exact: new runs counted, runs
    no longer queued dropped, a run hash gone or of another type left out)."""
    from redflow_mp import admin
    from tests.helpers import monitor

    _define(registry, "lots-queued", "some-queued", "none-queued")
    client.sync_registry(registry, app="stats")
    lots = registry.get("lots-queued").run_many([None] * 4_500)  # type: ignore[union-attr]
    registry.get("some-queued").run_many([None] * 7)  # type: ignore[union-attr]
    first = {s.meta.name: s.queued for s in admin.workflow_stats(client)}
    assert first == {"lots-queued": 4_500, "some-queued": 7, "none-queued": 0}
    client.cancel_run(lots[0].id)
    client.cancel_run(lots[1].id)
    registry.get("none-queued").run_many([None] * 3)  # type: ignore[union-attr]
    out: list[Any] = []
    with monitor(redis_url) as mon:
        mon.snapshot()
        mon.clear()
        out.extend(admin.workflow_stats(client))
        lines = mon.snapshot()
    by_name = {s.meta.name: s.queued for s in out}
    assert by_name == {"lots-queued": 4_498, "some-queued": 7, "none-queued": 3}
    sent = [line for line in lines if " lua]" not in line]
    assert len(sent) < 50, sent[:60]
    # a run whose hash went, or is of another type (a neighbour's), is not counted
    fresh = registry.get("some-queued").run_many([None] * 2)  # type: ignore[union-attr]
    raw.delete(client.keys.run(fresh[0].id))
    raw.set(client.keys.run(fresh[1].id), "a neighbour's value")
    by_name = {s.meta.name: s.queued for s in admin.workflow_stats(client)}
    assert by_name == {"lots-queued": 4_498, "some-queued": 7, "none-queued": 3}


def test_ids_naming_a_runs_other_keys_are_unknown_runs(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """`<id>:steps` named the run's steps hash, read back as a bogus queued run
    with no workflow (the dashboard showed it, with its buttons); `<id>:attempts`
    named a list and raised WRONGTYPE (a 500 page). No run id has a ':' in it:
    such an id is an unknown run, and no key is touched."""
    _define(registry, "shown")
    handle = registry.get("shown").run(None)  # type: ignore[union-attr]
    raw.hset(client.keys.run_steps(handle.id), "s", b'{"status":"succeeded"}')
    raw.rpush(client.keys.run_attempts(handle.id), b"{}")
    from redflow_mp import RedflowError, RunNotResumableError

    for suffix in (":steps", ":attempts", ":children", ":ev:1:x"):
        bogus = handle.id + suffix
        assert client.get_run(bogus) is None, suffix
        assert client.get_run_steps(bogus) is None, suffix
        assert client.cancel_run(bogus) is False, suffix
        assert client.send_event(bogus, "e") is False, suffix
        assert client.handle(bogus).state() is None, suffix
        with pytest.raises(RunNotResumableError, match="does not exist"):
            client.resume_run(bogus)
        with pytest.raises(RedflowError, match="does not exist"):
            client.handle(bogus).result(timeout=1)
    state = client.get_run(handle.id)
    assert state is not None and state.workflow == "shown"


def test_list_runs_of_a_workflow_and_a_sparse_status_is_not_a_walk(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """Both indexes past 10,000 runs: list_runs walked the workflow's runs newest
    first, 1,000 at a time, until it found `limit` in the status (all of them
    when the match is sparse: a workflow with few failures among many failed
    runs of others). 30,000 runs were 31 ZREVRANGE + 60 ZMSCORE; a million, a
    thousand round trips per dashboard refresh. After a few chunks it now reads
    the smaller index whole (up to 200,000), with the same order and paging."""
    from tests.helpers import command_counts

    _define(registry, "big", "other")
    big = registry.get("big")
    other = registry.get("other")
    assert big is not None and other is not None
    big_ids = [h.id for h in big.run_many([None] * 30_000)]
    other_ids = [h.id for h in other.run_many([None] * 15_000)]
    now = client.server_time_ms()
    failed = client.keys.runs_status("failed")
    for i in range(0, len(other_ids), 5_000):  # the index a failure writes
        raw.zadd(failed, {rid: now for rid in other_ids[i : i + 5_000]})
    few = [big_ids[10], big_ids[20_000], big_ids[29_990]]
    raw.zadd(failed, {rid: now for rid in few})
    got: list[RunState] = []
    counts = command_counts(
        raw, lambda: got.extend(client.list_runs(workflow="big", status="failed"))
    )
    assert [s.id for s in got] == list(reversed(few))  # newest created first
    # (a chunk's ZMSCOREs, at most 2,000 members each, go in its round trip)
    # (the page's runs are read by their fields: HMGET, HSTRLEN, HGET of payloads)
    run_reads = ("zmscore", "hmget", "hstrlen", "hget", "exists")
    assert sum(n for c, n in counts.items() if c not in run_reads) < 32, counts
    assert [s.id for s in client.list_runs(workflow="big", status="failed", offset=1)] == [
        few[1],
        few[0],
    ]
    # a dense match is still a short walk: the newest runs of big, queued
    dense = client.list_runs(workflow="big", status="queued", limit=3)
    assert [s.id for s in dense] == list(reversed(big_ids[-3:]))


def test_workflow_stats_walk_the_cron_entries_once(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each workflow's cron entries were picked by walking every entry, once per
    workflow: 4,000 workflows with a cron each took 1.2 s of the workflows view
    (16 million comparisons; 10,000: ~7 s per dashboard refresh). Now they are
    grouped in one walk."""
    from redflow_mp import Cron, admin

    for i in range(30):
        define_workflow(f"cron-{i}", cron=[Cron("0 0 1 1 *")], registry=registry)(_echo)
    client.sync_registry(registry, app="stats")
    walks = 0
    real = admin.cron_entries

    class Counted(list[Any]):
        def __iter__(self) -> Any:
            nonlocal walks
            walks += 1
            return super().__iter__()

    monkeypatch.setattr(admin, "cron_entries", lambda c, ids=None: Counted(real(c, ids)))
    stats = admin.workflow_stats(client)
    assert [len(s.cron) for s in stats] == [1] * 30
    assert {s.cron[0].workflow for s in stats} == {f"cron-{i}" for i in range(30)}
    assert walks <= 2


def test_list_runs_of_one_sparse_status_past_the_read_limit_is_few_round_trips(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """One status filter whose index is past 200,000 runs (too large to read whole)
    with a sparse match among the newest runs: list_runs walked runs:created 1,000
    at a time, two round trips per chunk (120,000 newest runs without a match:
    242 round trips; 280,000: 559 round trips, 1.6 s per dashboard page). The walk
    now doubles its chunk (up to 32,000): a few dozen round trips, same page."""
    from tests.helpers import command_counts

    _define(registry, "sparse")
    wf = registry.get("sparse")
    assert wf is not None
    template: dict[Any, Any] = raw.hgetall(client.keys.run(wf.run(None).id))
    raw.delete(client.keys.runs_created, client.keys.runs_status("queued"))
    old, new = 205_000, 120_000  # failed (oldest), then queued without a hash
    ids = [f"r{i:07d}" for i in range(old + new)]
    failed = client.keys.runs_status("failed")
    for i in range(0, len(ids), 20_000):
        part = ids[i : i + 20_000]
        raw.zadd(client.keys.runs_created, {rid: 1_000 + n for n, rid in enumerate(part, i)})
        if i < old:
            raw.zadd(failed, {rid: 5 for rid in part if int(rid[1:]) < old})
    few = [ids[old + 10], ids[old + 60_000], ids[old + new - 5]]  # sparse among the newest
    raw.zadd(failed, {rid: 5 for rid in few})
    expected = [*reversed(few), *reversed(ids[old - 47 : old])]
    for rid in expected:
        raw.hset(client.keys.run(rid), mapping={**template, b"id": rid, b"status": b"failed"})
    got: list[RunState] = []
    counts = command_counts(raw, lambda: got.extend(client.list_runs(status="failed")))
    assert [s.id for s in got] == expected
    # a round trip per chunk: its ZREVRANGE and its ZMSCOREs (2,000 members each)
    assert counts.get("zrevrange", 0) <= 15, counts
    page2 = client.list_runs(status="failed", limit=2, offset=3)
    assert [s.id for s in page2] == expected[3:5]


def test_no_zmscore_of_a_listing_asks_for_more_than_2000_runs(
    client: Client, raw: redis.Redis
) -> None:
    """A filtered listing checked a whole chunk against the other indexes in one
    ZMSCORE: 10,000 members reading an index whole, 32,000 on a long walk (27 to
    45 ms of Redis on a million-run index, in front of every claim). The same
    reads now go as ZMSCOREs of at most 2,000 members, in the same round trip."""
    from redflow_mp import queries

    k = client.keys
    ids = [f"r{i:06d}" for i in range(12_000)]
    raw.zadd(k.runs_created, {rid: 1_000 + i for i, rid in enumerate(ids)})
    raw.zadd(k.workflow_runs("w"), {rid: 1_000 + i for i, rid in enumerate(ids)})
    others = [f"o{i:06d}" for i in range(12_000)]  # failed runs of another workflow
    raw.zadd(k.runs_created, {rid: 50_000 + i for i, rid in enumerate(others)})
    few = [ids[5], ids[6_000], ids[11_990]]
    raw.zadd(k.runs_status("failed"), {rid: 5 for rid in [*others, *few]})
    asked: list[int] = []
    plan = queries.list_runs(k, workflow="w", status="failed")
    read: list[Any] = []
    batch = next(plan)
    try:
        while True:
            asked += [len(args[1]) for name, args in batch if name == "zmscore"]
            read += [args[0] for name, args in batch if name == "hmget"]  # the page's runs
            with raw.pipeline(transaction=False) as pipe:
                for name, args in batch:
                    getattr(pipe, name)(*args)
                replies = pipe.execute()
            batch = plan.send(replies)
    except StopIteration:
        pass
    assert read == [k.run(rid) for rid in reversed(few)]
    assert max(asked) <= 2_000, f"a ZMSCORE of {max(asked)} members"


def test_the_steps_of_a_big_run_are_read_page_by_page(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """get_run_steps read a run's steps with one HGETALL: a run with a million
    steps (one per row of an ETL loop) held Redis for 0.9 s each time the CLI's
    `runs show` or a dashboard page read it (100,000 steps: 42 ms). They come by
    HSCAN now, a page of about 1,000 per call; a small run's in one call."""
    from tests.helpers import command_counts

    _define(registry, "etl")
    wf = registry.get("etl")
    assert wf is not None
    rid = wf.run(None).id
    steps: dict[Any, Any] = {
        f"row-{i}": msgspec.json.encode(
            {
                "seq": i,
                "status": "succeeded",
                "outputJson": "1",
                "startedAt": 1_000 + i,
                "finishedAt": 1_001 + i,
                "attempt": 1,
            }
        )
        for i in range(5_000)
    }
    raw.hset(client.keys.run_steps(rid), mapping=steps)
    got: list[Any] = []
    counts = command_counts(raw, lambda: got.extend(client.get_run_steps(rid) or []))
    assert "hgetall" not in counts, counts
    assert [s.name for s in got] == [f"row-{i}" for i in range(5_000)]
    small = wf.run(None).id
    raw.hset(client.keys.run_steps(small), mapping={"a": steps["row-0"]})
    counts = command_counts(raw, lambda: client.get_run_steps(small))
    assert counts.get("hscan") == 1, counts


def test_list_runs_positions_past_64_bits_are_a_clear_value_error(client: Client) -> None:
    """``offset=2**64`` reached Redis as a range index and came back as redis-py's
    ResponseError "value is not an integer or out of range"."""
    for limit, offset in ((1, 2**64), (2**63, 0), (1, 2**53 + 1)):
        with pytest.raises(ValueError, match=r"(offset|limit) must be at most 9007199254740992"):
            client.list_runs(limit=limit, offset=offset)
    assert client.list_runs(limit=2**53, offset=2**53) == []


def test_workflow_metadata_without_a_name_field_is_named_by_its_key(
    client: Client, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """A ``workflow:<name>`` hash without a ``name`` field (written by hand, by
    another program) came back from ``get_workflow_meta`` and ``list_workflows``
    (sync and async) as ``WorkflowMeta(name='')``, though a run record without
    its ``id`` field is named by its key."""
    import asyncio

    from redflow_mp.aio import create_async_client

    raw.sadd(client.keys.workflows, "by-hand")
    raw.hset(client.keys.workflow("by-hand"), mapping={"queue": "q", "maxConcurrency": "2"})
    meta = client.get_workflow_meta("by-hand")
    assert meta is not None and (meta.name, meta.queue) == ("by-hand", "q"), meta
    assert [m.name for m in client.list_workflows()] == ["by-hand"]

    async def main() -> list[str]:
        ac = create_async_client(redis_url, prefix=prefix, default=False)
        try:
            one = await ac.get_workflow_meta("by-hand")
            assert one is not None
            return [one.name] + [m.name for m in await ac.list_workflows()]
        finally:
            await ac.aclose()

    assert asyncio.run(main()) == ["by-hand", "by-hand"]
