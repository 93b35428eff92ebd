"""A cron trigger's input is the input of every run it creates: it is held to the
client's ``max_payload_bytes`` as ``run()``'s input is, when the registry is
synced (default settings: 8 MiB)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.cron import cron_id_for
from redflow_mp.errors import PayloadTooLargeError
from redflow_mp.maintenance import LeaderLock, cron_tick
from redflow_mp.runs import DEFAULT_MAX_PAYLOAD_BYTES
from redflow_supervisor.settings import load
from redflow_supervisor.startup import resync

pytestmark = pytest.mark.timeout(60)


def _handler(ctx: Context[Any]) -> None:
    return None


def test_a_cron_input_past_max_payload_bytes_is_refused_by_the_sync(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A cron input of 20 MiB was synced and every fire enqueued a run holding it,
    past the 8 MiB ``run()`` refuses (a once-a-second cron: 339 MB of Redis after
    12 s); now the sync refuses it, naming the workflow, and writes nothing."""
    blob = "x" * DEFAULT_MAX_PAYLOAD_BYTES  # its JSON text is 2 bytes longer
    define_workflow("small", registry=registry, cron=[Cron("0 3 * * *", input=1)])(_handler)
    define_workflow(
        "bulky", registry=registry, cron=[Cron("* * * * * *", input=blob, id="every-second")]
    )(_handler)
    with pytest.raises(PayloadTooLargeError) as info:
        client.sync_registry(registry, app="etl")
    assert str(info.value) == (
        "input of cron 'bulky:every-second' (workflow 'bulky', '* * * * * *') is "
        f"{DEFAULT_MAX_PAYLOAD_BYTES + 2} bytes encoded; the limit is "
        f"{DEFAULT_MAX_PAYLOAD_BYTES} bytes (max_payload_bytes)"
    )
    assert raw.hlen(client.keys.cron_def) == 0
    assert raw.zcard(client.keys.cron_next) == 0
    assert not raw.exists(client.keys.workflow("bulky"))
    assert not raw.exists(client.keys.workflow("small"))


def test_a_cron_input_within_max_payload_bytes_is_synced(
    raw: redis.Redis, make_client: Any, registry: Registry
) -> None:
    """The limit is the syncing client's: one with a larger ``max_payload_bytes``
    syncs the same cron (its runs are read by workers with that limit)."""
    client = make_client(max_payload_bytes=2 * DEFAULT_MAX_PAYLOAD_BYTES)
    blob = "x" * DEFAULT_MAX_PAYLOAD_BYTES
    define_workflow("bulky", registry=registry, cron=[Cron("0 3 * * *", input=blob, id="nightly")])(
        _handler
    )
    client.sync_registry(registry, app="etl")
    assert raw.hexists(client.keys.cron_def, "bulky:nightly")


def test_a_reload_whose_cron_input_is_too_large_logs_and_keeps_the_last_sync(
    raw: redis.Redis, client: Client, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A HUP whose modules now give a cron an input past ``max_payload_bytes``: the
    supervisor's re-sync (``resync``) logs the refusal and keeps running with the
    cron entry the last sync wrote, as for a sync Redis refused."""
    define_workflow("bulky", registry=registry, cron=[Cron("0 3 * * *", input=1, id="n")])(_handler)
    settings = load({"app": "etl"}, environ={})
    assert resync(client, settings, registry) == ("default",)
    stored = raw.hget(client.keys.cron_def, "bulky:n")
    reloaded = Registry()
    blob = "x" * DEFAULT_MAX_PAYLOAD_BYTES
    define_workflow("bulky", registry=reloaded, cron=[Cron("0 3 * * *", input=blob, id="n")])(
        _handler
    )
    with caplog.at_level(logging.ERROR, logger="redflow_supervisor"):
        assert resync(client, settings, reloaded) == ("default",)
    assert any(
        "registry sync after reload refused: input of cron 'bulky:n'" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    assert raw.hget(client.keys.cron_def, "bulky:n") == stored


def test_due_crons_with_large_inputs_are_read_a_few_at_a_time_and_all_fire(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Four crons with an input of 3 MiB each (within ``max_payload_bytes``) due at
    once: the leader's read of the due entries held every definition (a batch of
    100 at the 8 MiB limit: 800 MiB in one reply). Now each read holds 4 MiB of
    definitions at most (at least one), the tick says ``more`` while entries are
    left due, and all of them fire."""
    blob = "x" * (3 << 20)
    yearly = [Cron("0 0 1 1 *", input=blob)]
    names = [f"big{i}" for i in range(4)]
    for name in names:
        define_workflow(name, cron=yearly, registry=registry)(_handler)
    client.sync_registry(registry, app="etl")
    lock = LeaderLock(client, 60_000)
    assert lock.tick()
    due = client.server_time_ms() - 1_000
    raw.zadd(client.keys.cron_next, {cron_id_for(n, yearly[0]): due for n in names})
    ticks = [cron_tick(client, lock.token, budget_s=60.0) for _ in range(4)]
    assert [len(t.fired) for t in ticks] == [1, 1, 1, 1]
    assert [t.more for t in ticks] == [True, True, True, False]
    assert raw.zcount(client.keys.cron_next, "-inf", due) == 0
    runs = [client.get_run(rid) for t in ticks for rid in t.fired]
    assert sorted(r.workflow for r in runs if r is not None) == names
