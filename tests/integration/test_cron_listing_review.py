"""Review of the byte-bounded workflow listing (cronlist): for ordinary workflows
(small or no cron inputs, rate limits, priorities, retries, several shards, a
hash missing fields, a cron:def entry gone, a record without cronIdsJson) the
listing shows what the whole-hash readers show; a cronJson over 16 KiB keeps
every schedule that validates, as the whole decode does (inputs aside)."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import Cron, Registry, Retries, admin, create_client, define_workflow
from redflow_mp.queries import list_workflows_all, workflow_metas

pytestmark = pytest.mark.timeout(120)


def _noop(ctx: object) -> None:
    return None


def _expected(c: Any, names: list[str] | None) -> list[Any]:
    """What the listing showed before: every metadata hash read whole, every
    cron:def entry scanned and grouped by its workflow."""
    metas = list_workflows_all(c) if names is None else workflow_metas(c, names)
    crons: dict[str, list[Any]] = {}
    for entry in admin.cron_entries(c):
        crons.setdefault(entry.workflow, []).append(entry)
    return [(m, crons.get(m.name, [])) for m in metas]


def _listed(c: Any, names: list[str] | None) -> list[Any]:
    return [(s.meta, s.cron) for s in admin.workflow_stats(c, names)]


@pytest.mark.parametrize("shards", [1, 2])
def test_ordinary_workflows_are_listed_as_before(
    redis_url: str, prefix: str, raw: Any, shards: int
) -> None:
    registry = Registry()
    define_workflow("plain", registry=registry)(_noop)
    define_workflow(
        "rich",
        queue="q2",
        max_concurrency=3,
        priority=7,
        rate_limit="5/s",
        retries=Retries(max_attempts=4),
        cron=[
            Cron("*/5 * * * *", input={"a": [1, 2]}, id="r1"),
            Cron("0 1 * * *", timezone="Europe/Paris"),
        ],
        registry=registry,
    )(_noop)
    for i in range(6):
        define_workflow(f"wf-{i}", cron=[Cron(f"{i} 2 * * *", input=i)], registry=registry)(_noop)
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=shards)
    try:
        c.sync_registry(registry, app="cmp")
        page = ["wf-3", "rich", "nope", "plain", "wf-1", "wf-4"]

        def wk(name: str) -> str:
            return str(c.shard_of_workflow(name).keys.workflow(name))

        assert len(_listed(c, None)) == 8
        assert _listed(c, None) == _expected(c, None)
        assert _listed(c, page) == _expected(c, page)
        # a hash missing fields, a cron:def entry gone, a cronJson that is not JSON
        raw.hdel(wk("wf-0"), "queue", "maxConcurrency", "retriesJson", "priority", "app")
        cdef = c.shard_of_workflow("wf-2").keys.cron_def
        (gone,) = [k for k, v in raw.hgetall(cdef).items() if b'"wf-2"' in v]
        raw.hdel(cdef, gone)
        raw.hset(wk("wf-4"), "cronJson", "not json")
        assert _listed(c, None) == _expected(c, None)
        assert _listed(c, page) == _expected(c, page)
        # a record written before cronIdsJson: every entry scanned, as before
        raw.hdel(wk("wf-1"), "cronIdsJson")
        assert _listed(c, None) == _expected(c, None)
        assert _listed(c, page) == _expected(c, page)
    finally:
        c.close()


def test_a_big_cron_json_keeps_every_schedule_that_validates(client: Any, raw: Any) -> None:
    """A cronJson over 16 KiB with one item that no longer validates (written by
    hand, or by another version) lists the others, as a whole decode does."""
    registry = Registry()
    define_workflow("big", cron=[Cron("0 1 * * *", input="x")], registry=registry)(_noop)
    client.sync_registry(registry, app="big")
    big = "z" * (20 * 1024)
    raw.hset(
        client.keys.workflow("big"),
        "cronJson",
        '[{"expression":"0 1 * * *","input":"' + big + '","id":"k"},5,{"expression":"bad"},'
        '{"expression":"0 3 * * *","timezone":null},{"expression":"0 4 * * *"}]',
    )
    (s,) = admin.workflow_stats(client)
    whole = client.get_workflow_meta("big")
    assert [(c.expression, c.timezone, c.id) for c in whole.cron] == [
        ("0 1 * * *", "UTC", "k"),
        ("0 4 * * *", "UTC", None),
    ]
    assert [(c.expression, c.timezone, c.id) for c in s.meta.cron] == [
        (c.expression, c.timezone, c.id) for c in whole.cron
    ]
    assert [c.input for c in s.meta.cron] == [None, None]


MIB = 1024 * 1024


def _big_registry(inputs: dict[str, list[tuple[str, str]]]) -> Registry:
    registry = Registry()
    for name, crons in inputs.items():
        define_workflow(
            name, cron=[Cron(e, input=i, id=e.split()[0]) for e, i in crons], registry=registry
        )(_noop)
    return registry


@pytest.mark.parametrize("shards", [1, 2])
def test_a_resync_past_the_chunk_bytes_syncs_every_workflow_once(
    redis_url: str, prefix: str, raw: Any, shards: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 MiB of cron inputs (more than one chunk of 16 MiB): each workflow is
    written by exactly one chunk, and a resync that changes, drops and keeps
    crons leaves exactly the crons registered (none lost, none duplicated)."""
    from redflow_mp import sync

    seen: list[str] = []
    chunks: list[int] = []
    real = sync._sync_workflows

    def spy(runs: Any, wfs: list[Any], app: str, now: int) -> None:
        seen.extend(wf.name for wf in wfs)
        chunks.append(sum(len(c.input) for wf in wfs for c in wf.cron))
        real(runs, wfs, app, now)

    monkeypatch.setattr(sync, "_sync_workflows", spy)
    first = {f"w{i:02d}": [("1 * * * *", "a" * (2 * MIB)), ("2 * * * *", "b")] for i in range(12)}
    c = create_client(redis_url, prefix=prefix, registry=Registry(), default=False, shards=shards)
    try:

        def state() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for view in {id(s): s for s in (c.shard_of_workflow(n) for n in first)}.values():
                for k, v in raw.hgetall(view.keys.cron_def).items():
                    assert k.decode() not in out
                    out[k.decode()] = (len(v), raw.zscore(view.keys.cron_next, k) is not None)
            return out

        c.sync_registry(_big_registry(first), app="big")
        assert sorted(seen) == sorted(first)
        assert len(chunks) >= 2 and max(chunks) <= 16 * MIB, chunks
        before = state()
        assert sorted(before) == sorted(f"{n}:{e}" for n in first for e in ("1", "2"))
        assert all(scheduled for _, scheduled in before.values())
        # the resync (a HUP): half change their big input, a quarter drop it, the rest keep it
        second = dict(first)
        for i in range(6):
            second[f"w{i:02d}"] = [("1 * * * *", "c" * (2 * MIB + 1)), ("2 * * * *", "b")]
        for i in range(6, 9):
            second[f"w{i:02d}"] = [("2 * * * *", "b")]
        seen.clear()
        c.sync_registry(_big_registry(second), app="big")
        assert sorted(seen) == sorted(second)
        after = state()
        assert sorted(after) == sorted(
            f"{n}:{e.split()[0]}" for n, cs in second.items() for e, _ in cs
        )
        assert all(scheduled for _, scheduled in after.values())
        for i in range(6):
            assert after[f"w{i:02d}:1"][0] == before[f"w{i:02d}:1"][0] + 1
        for i in range(9, 12):
            assert after[f"w{i:02d}:1"] == before[f"w{i:02d}:1"]
        stats = {s.meta.name: s for s in admin.workflow_stats(c)}
        assert sorted(stats) == sorted(second)
        for n, cs in second.items():
            assert sorted(e.expression for e in stats[n].cron) == sorted(e for e, _ in cs)
    finally:
        c.close()
