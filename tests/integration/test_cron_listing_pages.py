"""The cron entries shown by ``redflow workflows`` and the dashboard's workflows
page are read a page at a time: no single command reads every entry of
``cron:def`` or asks ``cron:next`` for every id. One HGETALL of 100,000 cron
entries (28 MB) and one ZMSCORE of their ids took 141 ms of Redis CPU, and a
page of one workflow (the dashboard's, every refresh) paid the same."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Cron, Registry, admin, define_workflow
from redflow_mp.cron import CronDef
from tests.helpers import monitor, text

pytestmark = pytest.mark.timeout(120)

#: Entries in cron:def: more than one page of any sane size.
ENTRIES = 2_500
PER_WORKFLOW = 10
#: Most entries (fields, ids) any one command may read: admin.CRON_PAGE, or
#: the bound it stands for when the code predates it.
PAGE = getattr(admin, "CRON_PAGE", 1_000)


def _noop(ctx: object) -> None:
    return None


def _sync(client: Client, registry: Registry, workflows: int) -> None:
    for i in range(workflows):
        crons = [Cron(f"{m} 3 1 1 *") for m in range(PER_WORKFLOW)]
        define_workflow(f"cw-{i}", queue="cq", cron=crons, registry=registry)(_noop)
    client.sync_registry(registry, app="cron-pages")


def _fill(raw: redis.Redis, client: Client, n: int) -> None:
    """``n`` cron entries written as sync writes them (faster than syncing them)."""
    k = client.keys
    for at in range(0, n, 10_000):
        defs: dict[Any, Any] = {}
        nxt: dict[str, int] = {}
        for i in range(at, min(n, at + 10_000)):
            cid = f"c{i:07d}"
            defs[cid] = msgspec.json.encode(
                CronDef(
                    id=cid,
                    workflow=f"cw-{i // PER_WORKFLOW}",
                    queue="cq",
                    expression="0 3 1 1 *",
                    timezone="UTC",
                    input_json="{}",
                )
            )
            nxt[cid] = 4_000_000_000_000 + i
        with raw.pipeline(transaction=False) as pipe:
            pipe.hset(k.cron_def, mapping=defs)
            pipe.zadd(k.cron_next, nxt)
            pipe.execute()


def _arity(line: str) -> int:
    """Arguments of a MONITOR line (quoted strings) after the command and key."""
    return max(0, len(re.findall(r'"(?:[^"\\]|\\.)*"', line)) - 2)


def _cron_reads(lines: list[str], client: Client) -> list[str]:
    keys = (client.keys.cron_def, client.keys.cron_next)
    return [ln for ln in lines if any(f'"{key}"' in ln for key in keys)]


def test_a_page_of_workflows_reads_only_its_own_cron_entries(
    raw: redis.Redis, client: Client, registry: Registry, redis_url: str
) -> None:
    _sync(client, registry, ENTRIES // PER_WORKFLOW)
    assert raw.hlen(client.keys.cron_def) == ENTRIES
    with monitor(redis_url) as mon:
        stats = admin.workflow_stats(client, ["cw-7", "cw-42"])
        lines = _cron_reads(mon.snapshot(), client)
    assert [s.meta.name for s in stats] == ["cw-7", "cw-42"]
    for s in stats:
        assert len(s.cron) == PER_WORKFLOW
        assert {c.workflow for c in s.cron} == {s.meta.name}
        assert all(c.next_fire_at for c in s.cron)
    whole = [ln for ln in lines if '"HGETALL"' in ln.upper() or '"HSCAN"' in ln.upper()]
    assert whole == [], f"a page of 2 workflows read all of cron:def: {whole[:2]}"
    # HSTRLEN (a length, O(1): the listing measures a record before reading it) not counted
    asked = sum(_arity(ln) for ln in lines if '"HSTRLEN"' not in ln.upper())
    assert asked <= 4 * PER_WORKFLOW, f"{asked} cron ids read for 2 workflows' 20 entries"


def test_every_cron_entry_is_listed_a_page_at_a_time(
    raw: redis.Redis, client: Client, registry: Registry, redis_url: str
) -> None:
    _sync(client, registry, ENTRIES // PER_WORKFLOW)
    pairs: Any = raw.zrange(client.keys.cron_next, 0, -1, withscores=True)
    nxt = {text(k): int(v) for k, v in pairs}
    with monitor(redis_url) as mon:
        entries = admin.cron_entries(client)
        lines = _cron_reads(mon.snapshot(), client)
    assert len(entries) == ENTRIES
    assert [e.id for e in entries] == sorted(nxt)
    assert all(e.next_fire_at == nxt[e.id] for e in entries)
    hgetall = [ln[:120] for ln in lines if '"HGETALL"' in ln.upper()]
    assert hgetall == [], f"cron:def read whole: {hgetall}"
    widest = max(_arity(ln) for ln in lines)
    assert widest <= PAGE, f"one command asked for {widest} cron ids (page: {PAGE})"


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_100k_cron_entries_are_listed_a_page_at_a_time(
    raw: redis.Redis, client: Client, redis_url: str
) -> None:
    n = 100_000
    _fill(raw, client, n)
    raw.config_resetstat()
    entries = admin.cron_entries(client)
    assert len(entries) == n
    stats = raw.info("commandstats")
    assert "cmdstat_hgetall" not in stats, stats.get("cmdstat_hgetall")
    zmscore = stats["cmdstat_zmscore"]
    assert int(zmscore["calls"]) >= n // PAGE, zmscore
