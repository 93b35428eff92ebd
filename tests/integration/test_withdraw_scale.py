"""The registry duty's withdrawal (``withdraw_stale``, once a minute per running
supervisor) with 10,000 workflows of other apps on the same Redis: it read
every workflow name and each one's ``wf-apps`` and metadata owner, 20,001
commands (35 ms of Redis CPU) per supervisor per minute, to find its own app's
few stale registrations. It now reads the app's own index (``app-wfs:<app>``):
its cost is what the app registers. Stale registrations are still withdrawn,
those written before the index existed too (the start-up sync lists them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.sync import STALE_WORKFLOW_GRACE_MS, withdraw_stale
from tests.helpers import command_counts, registry_of, texts

pytestmark = pytest.mark.timeout(120)

FOREIGN = 10_000

# Workflows registered by other apps, as their syncs leave them.
_FOREIGN = """
local prefix, first, count, at = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i = first, first + count - 1 do
  local name = string.format('foreign-%05d', i)
  local app = 'other-' .. (i % 10)
  redis.call('HSET', prefix .. 'workflow:' .. name, 'name', name, 'queue', 'default',
    'app', app, 'updatedAt', at)
  redis.call('HSET', prefix .. 'wf-apps:' .. name, app, at)
  redis.call('SADD', KEYS[1], name)
end
return count
"""


def _handler(ctx: Context[Any]) -> None:
    return None


def _foreign(raw: Any, client: Client) -> None:
    k = client.keys
    prefix = k.workflows[: -len("workflows")]
    for first in range(0, FOREIGN, 2_500):  # synced long ago
        raw.eval(_FOREIGN, 1, k.workflows, prefix, first, 2_500, 1_000)


def _age(raw: redis.Redis, client: Client, name: str, ms: int) -> None:
    key, apps_key = client.keys.workflow(name), client.keys.wf_apps(name)
    raw.hset(key, "updatedAt", int(raw.hget(key, "updatedAt") or 0) - ms)
    for app, at in raw.hgetall(apps_key).items():
        raw.hset(apps_key, app, int(at) - ms)


def test_the_withdrawal_costs_what_the_app_registers_not_every_workflow(
    raw: redis.Redis, client: Client
) -> None:
    _foreign(raw, client)
    client.sync_registry(registry_of("kept", "dropped"), app="etl")
    _age(raw, client, "dropped", STALE_WORKFLOW_GRACE_MS + 1)
    counts = command_counts(raw, lambda: withdraw_stale(client, ["kept"], app="etl"))
    # Before: SMEMBERS of 10,001 names, then an HGETALL and an HMGET of each.
    assert sum(counts.values()) <= 30, counts
    assert not raw.exists(client.keys.workflow("dropped"))  # still withdrawn
    assert not raw.sismember(client.keys.workflows, "dropped")
    assert raw.exists(client.keys.workflow("kept"))
    assert raw.scard(client.keys.workflows) == FOREIGN + 1  # no other app's touched
    assert set(texts(raw.smembers(client.keys.app_wfs("etl")))) == {"kept"}
    # Nothing stale: a page of the index, nothing else.
    counts = command_counts(raw, lambda: withdraw_stale(client, ["kept"], app="etl"))
    assert sum(counts.values()) <= 2, counts


def test_registrations_from_before_the_index_are_listed_by_the_start_up_sync(
    raw: redis.Redis, client: Client
) -> None:
    """A registration written before ``app-wfs`` existed (or with the index lost):
    the start-up sync reads every workflow and lists the app's in its index, so
    the duty withdraws it once stale; an index entry no registration backs
    (withdrawn by hand) leaves the index."""
    client.sync_registry(registry_of("kept", "legacy"), app="etl")
    raw.delete(client.keys.app_wfs("etl"))  # as an older version left it
    raw.sadd(client.keys.app_wfs("etl"), "gone-by-hand")
    client.sync_registry(registry_of("kept"), app="etl")  # a restart: within the grace
    assert set(texts(raw.smembers(client.keys.app_wfs("etl")))) >= {"kept", "legacy"}
    _age(raw, client, "legacy", STALE_WORKFLOW_GRACE_MS + 1)
    withdraw_stale(client, ["kept"], app="etl")
    assert not raw.exists(client.keys.workflow("legacy"))
    assert set(texts(raw.smembers(client.keys.app_wfs("etl")))) == {"kept"}


def test_a_workflow_another_app_still_registers_is_kept_for_it(
    raw: redis.Redis, client: Client
) -> None:
    client.sync_registry(registry_of("shared"), app="etl")
    client.sync_registry(registry_of("shared"), app="billing")
    _age(raw, client, "shared", STALE_WORKFLOW_GRACE_MS + 1)
    withdraw_stale(client, [], app="etl")
    assert set(texts(raw.hkeys(client.keys.wf_apps("shared")))) == {"billing"}
    assert set(texts(raw.smembers(client.keys.app_wfs("etl")))) == set()
    assert set(texts(raw.smembers(client.keys.app_wfs("billing")))) == {"shared"}


def test_the_index_follows_its_workflows_to_their_shard(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    """``redflow migrate --shards`` moves a workflow's ``wf-apps`` to its new
    shard: its name moves to that shard's index, where the duty finds it."""
    from tests.integration.test_shards_ops import _reshard
    from tests.sharding import workflow_in

    one = make_client()
    three = make_client(shards=3)
    name = workflow_in(three, 2, "moved")
    define_workflow(name, queue="q", registry=registry)(_handler)
    one.sync_registry(registry, app="etl")
    _reshard(one, three)
    src, dst = three.shards[0], three.shards[2]
    assert not src.redis.sismember(src.keys.app_wfs("etl"), name)
    assert dst.redis.sismember(dst.keys.app_wfs("etl"), name)
    apps_key = dst.keys.wf_apps(name)
    dst.redis.hset(apps_key, "etl", int(dst.redis.hget(apps_key, "etl") or 0) - 60_000)
    withdraw_stale(three, [], app="etl")
    assert not dst.redis.exists(dst.keys.workflow(name))
