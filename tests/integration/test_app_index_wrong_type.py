"""A hostile neighbour (or a typo) leaves ``app-wfs:<app>``, the index of the
workflows an app registers that the registry duty reads, of another type: the
index is an aid, so the app's syncs (start-up, HUP, a resync after a loss) and
withdrawals go on without it and say once which key is at fault; the duty reads
every workflow instead (its cost before the index), so a stale registration is
still withdrawn; ``redflow migrate --shards`` moves the workflows on. Before,
the first sync of the app raised ``WRONGTYPE`` out of its transaction (the
supervisor did not start; the workflows of the chunks after it were not
synced) and so did every minute's withdrawal and the reshard."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context
from redflow_mp.sync import STALE_WORKFLOW_GRACE_MS, withdraw_stale
from tests.helpers import registry_of
from tests.sharding import workflow_in

pytestmark = pytest.mark.timeout(60)


def _handler(ctx: Context[Any]) -> None:
    return None


def _age(raw: Any, keys: Any, name: str, ms: int) -> None:
    key, apps_key = keys.workflow(name), keys.wf_apps(name)
    raw.hset(key, "updatedAt", int(raw.hget(key, "updatedAt") or 0) - ms)
    for app, at in raw.hgetall(apps_key).items():
        raw.hset(apps_key, app, int(at) - ms)


def test_an_index_of_another_type_fails_no_sync_and_stale_ones_still_go(
    raw: redis.Redis, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    index = client.keys.app_wfs("etl")
    raw.set(index, "not a redflow key")
    caplog.set_level(logging.WARNING)
    client.sync_registry(registry_of("kept", "dropped"), app="etl")  # the start: no WRONGTYPE
    assert client.get_workflow_meta("kept") is not None
    assert client.get_workflow_meta("dropped") is not None
    assert index in caplog.text  # the key at fault is named
    _age(raw, client.keys, "dropped", STALE_WORKFLOW_GRACE_MS + 1)
    withdraw_stale(client, ["kept"], app="etl")  # the duty, a minute later
    assert client.get_workflow_meta("dropped") is None  # read the long way: still withdrawn
    assert not raw.sismember(client.keys.workflows, "dropped")
    assert client.get_workflow_meta("kept") is not None
    client.sync_registry(registry_of("kept"), app="etl")  # a HUP
    assert raw.get(index) == b"not a redflow key"  # a neighbour's value is not ours to drop


def test_a_withdrawal_goes_on_past_an_index_of_another_type(
    raw: redis.Redis, client: Client
) -> None:
    """The index turns bad after the sync listed the workflows in it: the
    withdrawal removes the registration, and the next workflow's too."""
    client.sync_registry(registry_of("kept", "one", "two"), app="etl")
    raw.delete(client.keys.app_wfs("etl"))
    raw.set(client.keys.app_wfs("etl"), "not a redflow key")
    for name in ("one", "two"):
        _age(raw, client.keys, name, STALE_WORKFLOW_GRACE_MS + 1)
    client.sync_registry(registry_of("kept"), app="etl")  # a start past the grace
    assert client.get_workflow_meta("one") is None
    assert client.get_workflow_meta("two") is None


def test_a_reshard_moves_on_past_an_index_of_another_type(
    make_client: Callable[..., Client],
) -> None:
    from tests.integration.test_shards_ops import _reshard

    one = make_client()
    three = make_client(shards=3)
    name = workflow_in(three, 2, "moved")
    one.sync_registry(registry_of(name), app="etl")
    src = one.shards[0]
    src.redis.delete(src.keys.app_wfs("etl"))
    src.redis.set(src.keys.app_wfs("etl"), "not a redflow key")
    _reshard(one, three)
    dst = three.shards[2]
    assert dst.redis.exists(dst.keys.workflow(name))
    assert dst.redis.sismember(dst.keys.app_wfs("etl"), name)  # listed where it is now
    apps_key = dst.keys.wf_apps(name)
    dst.redis.hset(apps_key, "etl", int(dst.redis.hget(apps_key, "etl") or 0) - 60_000)
    withdraw_stale(three, [], app="etl")
    assert not dst.redis.exists(dst.keys.workflow(name))


def test_the_sync_warns_once_per_bad_index_and_still_names_other_keys(
    raw: redis.Redis, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    index = client.keys.app_wfs("etl")
    raw.set(index, "not a redflow key")
    caplog.set_level(logging.WARNING)
    client.sync_registry(registry_of(*(f"wf-{i}" for i in range(50))), app="etl")
    assert sum(index in r.getMessage() for r in caplog.records) == 1  # not one a workflow
    # Any other key of another type in the sync's transaction raises as before,
    # named as redis-py names it ("Command # n (SADD <key> ...) of pipeline ...").
    raw.delete(client.keys.queues)
    raw.set(client.keys.queues, "a neighbour's value")
    with pytest.raises(redis.ResponseError) as caught:
        client.sync_registry(registry_of("wf-0"), app="etl")
    assert client.keys.queues in str(caught.value)
