"""sync_registry: metadata and cron entries; an app withdraws only its own
registration of a workflow it no longer lists, once that registration is older
than 30 s, and the metadata goes with the last registration (age simulated by
rewriting the sync times); runs are never removed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Cron,
    Registry,
    Retries,
    WorkflowMeta,
    define_workflow,
)
from redflow_mp.cron import cron_id_for, next_fire_ms
from redflow_mp.sync import registry_gaps
from tests.helpers import text, texts

pytestmark = pytest.mark.timeout(60)


def _handler(ctx: Context[Any]) -> None:
    return None


def _age(raw: redis.Redis, client: Client, name: str, ms: int) -> None:
    """Make every sync of ``name`` look ``ms`` older (its metadata and each app's
    registration in ``wf-apps``)."""
    key = client.keys.workflow(name)
    updated = int(raw.hget(key, "updatedAt") or 0)
    raw.hset(key, "updatedAt", updated - ms)
    apps_key = client.keys.wf_apps(name)
    for app, at in raw.hgetall(apps_key).items():
        raw.hset(apps_key, app, int(at) - ms)


def test_sync_writes_metadata_and_cron_entries(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    cron = Cron("*/15 * * * *", timezone="Europe/Berlin", input={"full": True})
    define_workflow(
        "resize",
        queue="media",
        max_concurrency=8,
        retries=Retries(max_attempts=3),
        cron=[cron],
        registry=registry,
    )(_handler)
    define_workflow("plain", registry=registry)(_handler)
    before = client.server_time_ms()
    client.sync_registry(registry, app="etl")
    meta = client.get_workflow_meta("resize")
    assert isinstance(meta, WorkflowMeta)
    assert (meta.name, meta.queue, meta.max_concurrency, meta.app) == ("resize", "media", 8, "etl")
    assert meta.updated_at >= before
    assert meta.retries == Retries(max_attempts=3)  # a Struct, snake_case attributes
    assert meta.retries.max_attempts == 3
    assert meta.cron == [cron]
    assert meta.cron[0].timezone == "Europe/Berlin" and meta.cron[0].input == {"full": True}
    cid = cron_id_for("resize", cron)
    assert meta.cron_ids == [cid]
    assert raw.smembers(client.keys.workflows) == {b"resize", b"plain"}
    assert {b"media", b"default"} <= raw.smembers(client.keys.queues)
    record = msgspec.json.decode(raw.hget(client.keys.cron_def, cid) or b"{}")
    assert record["workflow"] == "resize" and record["queue"] == "media"
    assert record["expression"] == "*/15 * * * *" and record["maxConcurrency"] == 8
    assert msgspec.json.decode(record["inputJson"]) == {"full": True}
    next_fire = raw.zscore(client.keys.cron_next, cid)
    assert next_fire is not None and before < next_fire <= before + 15 * 60_000 + 1_000
    # a second sync keeps the existing next fire time
    client.sync_registry(registry, app="etl")
    assert raw.zscore(client.keys.cron_next, cid) == next_fire
    assert [m.name for m in client.list_workflows()] == ["plain", "resize"]


def test_sync_uses_the_clients_registry_by_default(client: Client, registry: Registry) -> None:
    define_workflow("mine", registry=registry)(_handler)
    client.sync_registry(app="x")
    assert client.get_workflow_meta("mine") is not None


def test_changed_cron_replaces_old_entries(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    old = Cron("0 * * * *")
    define_workflow("job", cron=[old], registry=registry)(_handler)
    client.sync_registry(registry, app="a")
    new_reg = Registry()
    new = Cron("30 * * * *")
    define_workflow("job", cron=[new], registry=new_reg)(_handler)
    client.sync_registry(new_reg, app="a")
    ids = set(texts(raw.hkeys(client.keys.cron_def)))
    assert ids == {cron_id_for("job", new)}
    assert raw.zscore(client.keys.cron_next, cron_id_for("job", old)) is None


def test_stale_cleanup_only_for_same_app_and_older_than_30s(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    define_workflow("kept", registry=registry)(_handler)
    define_workflow("gone", cron=[Cron("* * * * *")], registry=registry)(_handler)
    client.sync_registry(registry, app="etl")
    other_app = Registry()
    define_workflow("foreign", registry=other_app)(_handler)
    client.sync_registry(other_app, app="web")
    gone_run = client.run_by_name("gone", {"x": 1})

    smaller = Registry()
    define_workflow("kept", registry=smaller)(_handler)
    # "gone" was synced moments ago: kept although it left the registry
    client.sync_registry(smaller, app="etl")
    assert client.get_workflow_meta("gone") is not None
    # 29 s old: still kept
    _age(raw, client, "gone", 29_000)
    client.sync_registry(smaller, app="etl")
    assert client.get_workflow_meta("gone") is not None
    # a sync resets the age of what it writes only, so age again past 30 s
    _age(raw, client, "gone", 2_000)
    _age(raw, client, "foreign", 3_600_000)
    client.sync_registry(smaller, app="etl")
    assert client.get_workflow_meta("gone") is None
    assert b"gone" not in raw.smembers(client.keys.workflows)
    assert not [k for k in texts(raw.hkeys(client.keys.cron_def)) if k.startswith("gone:")]
    assert not [m for m in texts(raw.zrange(client.keys.cron_next, 0, -1)) if m.startswith("gone:")]
    # other app's workflow is never removed by this app, however old
    assert client.get_workflow_meta("foreign") is not None
    assert client.get_workflow_meta("kept") is not None
    # runs are never removed
    state = client.get_run(gone_run.id)
    assert state is not None and state.workflow == "gone"


def test_a_sync_reads_the_other_apps_workflows_in_one_round_trip(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every workflow in the prefix that the syncing registry does not list was
    read with a pipeline of its own: a supervisor sharing its prefix with apps
    that register 5,000 workflows made 5,000 round trips at each start. Now one
    pipeline per shard (and 1,000 workflows); a stale one of this app still goes."""
    others = Registry()
    for i in range(50):
        define_workflow(f"other-{i}", registry=others)(_handler)
    client.sync_registry(others, app="web")
    define_workflow("old-etl", registry=registry)(_handler)
    client.sync_registry(registry, app="etl")
    _age(raw, client, "old-etl", 60_000)
    mine = Registry()
    define_workflow("etl-job", registry=mine)(_handler)
    executed = 0
    real = redis.client.Pipeline.execute

    def counted(self: Any, raise_on_error: bool = True) -> Any:
        nonlocal executed
        executed += 1
        return real(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    client.sync_registry(mine, app="etl")
    # the read of the 51 others, the withdrawal of old-etl, the write of etl-job
    assert executed <= 4, executed
    assert client.get_workflow_meta("old-etl") is None
    assert client.get_workflow_meta("other-7") is not None
    assert client.get_workflow_meta("etl-job") is not None


def test_a_sync_writes_its_workflows_in_one_round_trip(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each workflow of the registry took a read and a write of its own: 5,000
    workflows made 10,000 round trips (4.2 s) at every supervisor start and HUP.
    Now one read and one MULTI/EXEC per shard and 1,000 workflows."""
    for i in range(60):
        define_workflow(f"job-{i}", cron=[Cron(f"{i} 0 * * *")], registry=registry)(_handler)
    executed = 0
    real = redis.client.Pipeline.execute

    def counted(self: Any, raise_on_error: bool = True) -> Any:
        nonlocal executed
        executed += 1
        return real(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    client.sync_registry(registry, app="etl")
    assert executed == 2, executed
    meta = client.get_workflow_meta("job-42")
    assert meta is not None and meta.app == "etl" and meta.cron[0].expression == "42 0 * * *"
    assert len(client.list_workflows()) == 60
    assert raw.zcard(client.keys.cron_next) == 60 and raw.hlen(client.keys.cron_def) == 60
    assert raw.sismember(client.keys.queues, "default")


def _cron_ids(raw: redis.Redis, client: Client, name: str) -> set[str]:
    return {i for i in texts(raw.hkeys(client.keys.cron_def)) if i.startswith(name + ":")}


def test_a_workflow_two_apps_register_stays_until_neither_does(
    raw: redis.Redis, client: Client
) -> None:
    """Issue 10 #15: app B registered a workflow app A serves, then dropped it. B's
    later sync must not remove the metadata and cron entries A still uses."""
    nightly = Cron("30 2 * * *", timezone="Europe/Berlin")
    reg_a, reg_b = Registry(), Registry()
    define_workflow("shared", queue="q", cron=[nightly], registry=reg_a)(_handler)
    define_workflow("only-a", registry=reg_a)(_handler)
    define_workflow("shared", queue="q", cron=[nightly], registry=reg_b)(_handler)
    define_workflow("only-b", registry=reg_b)(_handler)
    client.sync_registry(reg_a, app="app-a")
    client.sync_registry(reg_b, app="app-b")
    meta = client.get_workflow_meta("shared")
    assert meta is not None and meta.app == "app-b"  # the latest sync's definition
    cron_ids = _cron_ids(raw, client, "shared")
    assert len(cron_ids) == 1

    # B drops "shared" in a new release; its registration is older than 30 s.
    reg_b2 = Registry()
    define_workflow("only-b", registry=reg_b2)(_handler)
    _age(raw, client, "shared", 3_600_000)
    client.sync_registry(reg_b2, app="app-b")
    meta = client.get_workflow_meta("shared")
    assert meta is not None, "removed although app-a still registers it"
    assert meta.app == "app-a"
    assert b"shared" in raw.smembers(client.keys.workflows)
    assert _cron_ids(raw, client, "shared") == cron_ids
    assert {text(m) for m in raw.zrange(client.keys.cron_next, 0, -1)} >= cron_ids
    assert set(texts(raw.hkeys(client.keys.wf_apps("shared")))) == {"app-a"}
    # A restarts (same registry): it keeps serving it, B's sync changed nothing of A's.
    client.sync_registry(reg_a, app="app-a")
    client.sync_registry(reg_b2, app="app-b")
    assert client.get_workflow_meta("shared") is not None

    # A drops it too: within 30 s of A's last sync it stays (A's old hosts may run it)...
    reg_a2 = Registry()
    define_workflow("only-a", registry=reg_a2)(_handler)
    client.sync_registry(reg_a2, app="app-a")
    assert client.get_workflow_meta("shared") is not None
    # ...and once that is older, the last registration goes and the metadata with it.
    _age(raw, client, "shared", 31_000)
    client.sync_registry(reg_a2, app="app-a")
    assert client.get_workflow_meta("shared") is None
    assert b"shared" not in raw.smembers(client.keys.workflows)
    assert not _cron_ids(raw, client, "shared")
    assert not raw.exists(client.keys.wf_apps("shared"))
    assert {m.name for m in client.list_workflows()} == {"only-a", "only-b"}


def test_metadata_synced_before_wf_apps_keeps_its_owner(raw: redis.Redis, client: Client) -> None:
    """A hash written by an older version (owner in ``app``, no ``wf-apps``) is that
    app's registration: another app taking the workflow over and dropping it again
    does not remove it."""
    reg = Registry()
    define_workflow("legacy", registry=reg)(_handler)
    client.sync_registry(reg, app="old-app")
    raw.delete(client.keys.wf_apps("legacy"))  # as an older version left it
    client.sync_registry(reg, app="new-app")
    _age(raw, client, "legacy", 3_600_000)
    client.sync_registry(Registry(), app="new-app")
    meta = client.get_workflow_meta("legacy")
    assert meta is not None and meta.app == "old-app"
    assert set(texts(raw.hkeys(client.keys.wf_apps("legacy")))) == {"old-app"}


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"app": ""}, ValueError),
        ({"app": "   "}, ValueError),
        ({"app": None}, TypeError),
        ({"app": 5}, TypeError),
        ({"app": "x", "registry": "reg"}, TypeError),
    ],
)
def test_sync_registry_bad_arguments(client: Client, kwargs: dict[str, Any], exc: type) -> None:
    with pytest.raises(exc):
        client.sync_registry(**kwargs)


def test_sync_registry_requires_app_keyword(client: Client, registry: Registry) -> None:
    with pytest.raises(TypeError):
        client.sync_registry(registry)  # type: ignore[call-arg]


def test_get_workflow_meta_bad_name(client: Client) -> None:
    with pytest.raises(ValueError):
        client.get_workflow_meta("")
    with pytest.raises(TypeError):
        client.get_workflow_meta(None)  # type: ignore[arg-type]


def test_run_by_name_uses_synced_metadata(
    raw: redis.Redis, client: Client, registry: Registry, make_client: Any
) -> None:
    define_workflow("remote", queue="gpu", retries=Retries(max_attempts=4), registry=registry)(
        _handler
    )
    client.sync_registry(registry, app="ml")
    # a client in another process that does not import the workflow
    caller = make_client(registry=Registry())
    h = caller.run_by_name("remote", {"img": 1})
    state = h.state()
    assert state is not None and state.queue == "gpu" and state.max_attempts == 4


def test_corrupted_metadata_of_another_workflow_does_not_break_sync(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    define_workflow("alive", registry=registry)(_handler)
    raw.sadd(client.keys.workflows, "ghost")
    raw.hset(client.keys.workflow("ghost"), mapping={"app": "etl", "updatedAt": "yesterday"})
    client.sync_registry(registry, app="etl")
    assert client.get_workflow_meta("alive") is not None
    assert client.get_workflow_meta("ghost") is not None  # age unknown: kept


def test_registry_gaps_finds_lost_metadata_and_cron_entries_only(
    raw: redis.Redis, client: Client
) -> None:
    """What a supervisor's registry check (supervisor/duties/registry.py) reads:
    a workflow whose metadata, cron definition or next fire time is gone; never a
    workflow another app synced with other crons (no ping-pong of syncs)."""
    reg_a, reg_b = Registry(), Registry()
    define_workflow("nightly", cron=[Cron("30 2 * * *")], registry=reg_a)(_handler)
    define_workflow("plain", registry=reg_a)(_handler)
    define_workflow("nightly", cron=[Cron("0 5 * * *")], registry=reg_b)(_handler)
    names = ["nightly", "plain"]
    client.sync_registry(reg_a, app="app-a")
    assert registry_gaps(client, names) == []
    client.sync_registry(reg_b, app="app-b")  # another app's definition, other crons
    assert registry_gaps(client, names) == []

    k = client.keys
    (cid,) = _cron_ids(raw, client, "nightly")
    raw.zrem(k.cron_next, cid)
    assert registry_gaps(client, names) == ["nightly"]
    client.sync_registry(reg_b, app="app-b")
    raw.hdel(k.cron_def, cid)
    assert registry_gaps(client, names) == ["nightly"]
    client.sync_registry(reg_b, app="app-b")
    raw.delete(k.workflow("plain"))
    assert registry_gaps(client, names) == ["plain"]
    client.sync_registry(reg_a, app="app-a")
    assert registry_gaps(client, names) == []


def test_registry_gaps_does_not_read_the_cron_definitions(raw: redis.Redis, client: Client) -> None:
    """The registry check runs every minute in each supervisor: it asks whether
    each cron definition exists, and reads none of them (they hold the cron
    inputs, up to max_payload_bytes each, or what a hand edit left)."""
    reg = Registry()
    define_workflow("nightly", cron=[Cron("30 2 * * *"), Cron("0 5 * * *")], registry=reg)(_handler)
    client.sync_registry(reg, app="app-a")
    k = client.keys
    for cid in _cron_ids(raw, client, "nightly"):
        raw.hset(k.cron_def, cid, "x" * 8_000_000)  # a hand edit (8 MB)
    raw.config_resetstat()
    before = int(raw.info("stats")["total_net_output_bytes"])
    assert registry_gaps(client, ["nightly"]) == []
    sent = int(raw.info("stats")["total_net_output_bytes"]) - before
    assert sent < 64 << 10, f"registry_gaps read {sent:,} bytes for 2 cron entries"
    raw.hdel(k.cron_def, sorted(_cron_ids(raw, client, "nightly"))[1])
    assert registry_gaps(client, ["nightly"]) == ["nightly"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (Cron("0 0 1 1 *", id="main"), Cron("* * * * *", id="main")),
        (Cron("* * * * *", id="main"), Cron("0 0 1 1 *", id="main")),
        (Cron("0 3 * * *", id="main"), Cron("0 3 * * *", timezone="Asia/Tokyo", id="main")),
    ],
)
def test_a_changed_schedule_under_an_explicit_id_takes_its_new_next_fire_time(
    raw: redis.Redis, client: Client, before: Cron, after: Cron
) -> None:
    """``Cron(..., id="main")`` keeps its id when its expression or timezone
    changes; the sync rewrote the definition but kept the next fire time the old
    expression gave (ZADD NX): a yearly schedule changed to every minute waited
    up to a year for its first fire, and one changed the other way fired once
    more at the old schedule's time. Now a changed schedule gets the next fire
    time of its new expression."""
    old_reg, new_reg = Registry(), Registry()
    define_workflow("job", cron=[before], registry=old_reg)(_handler)
    define_workflow("job", cron=[after], registry=new_reg)(_handler)
    client.sync_registry(old_reg, app="a")
    cid = cron_id_for("job", after)
    assert cid == cron_id_for("job", before)
    client.sync_registry(new_reg, app="a")
    now = client.server_time_ms()
    stored = raw.zscore(client.keys.cron_next, cid)
    want = next_fire_ms(after.expression, after.timezone, now)
    # the sync read the clock a little before `now`: the same or the fire before
    assert stored is not None and int(stored) in (
        want,
        next_fire_ms(after.expression, after.timezone, now - 1_000),
    ), f"next fire {stored} is the old schedule's, not {want}"
    # an unchanged schedule keeps its next fire time (a restart must not move it)
    raw.zadd(client.keys.cron_next, {cid: 12345})
    client.sync_registry(new_reg, app="a")
    assert raw.zscore(client.keys.cron_next, cid) == 12345


@pytest.mark.parametrize("which", ["cron_def", "cron_next", "cron_last", "cron_skipped"])
def test_a_cron_key_of_the_wrong_type_is_named_and_the_rest_is_synced(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
    which: str,
) -> None:
    """``cron:def``, ``cron:next``, ``cron:last`` or ``cron:skipped`` of another type (a neighbour's
    key on the same Redis): the sync raised WRONGTYPE, so no supervisor whose
    registry has a cron started (a traceback at start), and a MULTI's other
    writes applied half. Now the key is named in an ERROR line, the cron writes
    that need it are left out, and the metadata is written."""
    key = getattr(client.keys, which)
    old = Registry()
    define_workflow("job", cron=[Cron("0 0 1 1 *")], registry=old)(_handler)
    client.sync_registry(old, app="a")  # an entry to remove: the `gone` writes too
    define_workflow("job", cron=[Cron("0 0 2 1 *")], registry=registry)(_handler)
    define_workflow("plain", registry=registry)(_handler)
    raw.delete(key)
    raw.set(key, "a neighbour's value")
    client.sync_registry(registry, app="a")
    assert raw.get(key) == b"a neighbour's value"
    meta = client.get_workflow_meta("job")
    assert meta is not None and meta.cron[0].expression == "0 0 2 1 *"
    assert client.get_workflow_meta("plain") is not None
    assert any(key in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_stale_workflow_is_withdrawn_beside_a_cron_key_of_the_wrong_type(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The withdrawal of a stale workflow removes its cron entries in the same
    transaction: ``cron:next`` of another type failed it (WRONGTYPE out of the
    sync). It now leaves that key out and removes the rest."""
    define_workflow("gone", cron=[Cron("0 0 1 1 *")], registry=registry)(_handler)
    client.sync_registry(registry, app="a")
    _age(raw, client, "gone", 60_000)
    raw.delete(client.keys.cron_next)
    raw.set(client.keys.cron_next, "a neighbour's value")
    client.sync_registry(Registry(), app="a")
    assert client.get_workflow_meta("gone") is None
    assert raw.hlen(client.keys.cron_def) == 0
