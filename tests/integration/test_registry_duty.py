"""The supervisor's registry check (supervisor/duties/registry.py): a quick look
at one workflow's metadata per shard at each tick (a FLUSHALL takes them all),
a full check of every entry the last sync wrote every FULL_EVERY ticks (an
eviction takes single keys); either writes the registry again."""

from __future__ import annotations

from typing import Any

import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.foreign import LOST_MARKER_MS
from supervisor.duties.registry import FULL_EVERY, RegistryDuty
from tests.helpers import texts


def _handler(ctx: Context[Any]) -> None:
    return None


def test_the_quick_check_sees_a_flush_and_the_full_one_a_single_lost_entry(
    raw: redis.Redis, client: Client
) -> None:
    reg = Registry()
    define_workflow("first", registry=reg)(_handler)
    define_workflow("nightly", cron=[Cron("30 2 * * *")], registry=reg)(_handler)
    client.sync_registry(reg, app="app")
    duty = RegistryDuty(client, lambda: reg, "app")
    k = client.keys
    (cid,) = texts(raw.hkeys(k.cron_def))

    raw.zrem(k.cron_next, cid)  # one entry lost (an eviction, a hand's ZREM)
    for _ in range(FULL_EVERY - 1):
        duty.tick(0.0)
    assert duty.resynced == 0 and raw.zscore(k.cron_next, cid) is None  # quick checks only
    duty.tick(0.0)
    assert duty.resynced == 1 and raw.zscore(k.cron_next, cid) is not None

    raw.delete(k.workflow("first"), k.workflow("nightly"), k.cron_def, k.cron_next)  # a flush
    duty.tick(0.0)
    assert duty.resynced == 2
    assert raw.exists(k.workflow("first"), k.workflow("nightly")) == 2
    assert raw.hexists(k.cron_def, cid) and raw.zscore(k.cron_next, cid) is not None


def test_a_sync_again_writes_the_registry_lost_marker_first(
    raw: redis.Redis, client: Client
) -> None:
    """Registrations found gone: the ``registry-lost`` marker (PX LOST_MARKER_MS)
    in the shard that lost them, so a worker of another app serving ``default``
    puts back the runs enqueued there in the gap (foreign.held_after_loss)."""
    reg = Registry()
    define_workflow("first", registry=reg)(_handler)
    client.sync_registry(reg, app="app")
    duty = RegistryDuty(client, lambda: reg, "app")
    k = client.keys
    duty.tick(0.0)
    assert duty.resynced == 0 and not raw.exists(k.registry_lost), "nothing lost: none"
    raw.delete(k.workflow("first"))
    duty.tick(0.0)
    assert duty.resynced == 1
    assert raw.get(k.registry_lost) == b"app"
    assert 0 < raw.pttl(k.registry_lost) <= LOST_MARKER_MS


def test_a_registry_whose_sync_was_refused_is_not_taken_for_a_lost_one(
    raw: redis.Redis, client: Client, caplog: Any
) -> None:
    """A reload (HUP) whose registry the sync refuses (a cron input past
    max_payload_bytes: startup.resync logs it, Redis keeps the last sync's
    entries) adds a workflow: the full check found it "gone from Redis", wrote the
    ``registry-lost`` marker (other apps' workers then put back runs) and failed
    with PayloadTooLargeError, every minute. Never synced is not lost."""
    import logging

    from redflow_mp.runs import DEFAULT_MAX_PAYLOAD_BYTES

    old = Registry()
    define_workflow("first", registry=old)(_handler)
    client.sync_registry(old, app="app")
    new = Registry()
    define_workflow("first", registry=new)(_handler)
    define_workflow(
        "added", registry=new, cron=[Cron("0 3 * * *", input="x" * DEFAULT_MAX_PAYLOAD_BYTES)]
    )(_handler)
    duty = RegistryDuty(client, lambda: new, "app")
    caplog.set_level(logging.WARNING)
    for _ in range(2 * FULL_EVERY):
        duty.tick(0.0)
    assert not raw.exists(client.keys.registry_lost)
    assert not [r for r in caplog.records if "gone from Redis" in r.getMessage()]
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    assert duty.resynced == 0 and not raw.exists(client.keys.workflow("added"))
