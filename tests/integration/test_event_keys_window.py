"""The idempotency keys a run remembers for send_event (``run:<id>:event-keys``)
are the last ``max_events_per_run`` keyed events stored, in the order sent
(``run:<id>:event-key-order``), not every key of the run's life. A resend
within that window stores nothing; a key older than the window is not known
any more and its event is stored again (documented: README, docs/guide.md)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry, define_workflow
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_token
from redflow_mp.runs import DEFAULT_MAX_EVENTS_PER_RUN
from redflow_mp.scripts import Claimed
from tests.helpers import claim_one
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(120)

_RECORD = (b'{"seq":0,"status":"succeeded","outputJson":', b"}")


def _consume(client: Client, run: Claimed, step: str) -> None:
    reply = client.scripts.consume_event(run.id, run.token, step, "go", _RECORD, 60_000)
    assert reply[0] == 1


def test_a_run_remembers_the_last_max_events_per_run_event_keys(
    raw: redis.Redis, client: Client
) -> None:
    run_id = Enq(client)(workflow="e", queue="q")
    run = claim_one(client, "q")
    k = client.keys
    for i in range(10):
        assert client.scripts.send_event(run_id, "go", b"%d" % i, 3, f"k{i}") is True
        _consume(client, run, f"s{i}")
    # Before: all ten keys, for the run's whole life.
    assert raw.smembers(k.run_event_keys(run_id)) == {b"k7", b"k8", b"k9"}
    order = k.run_event_key_order(run_id)
    assert raw.lrange(order, 0, -1) == [b"k7", b"k8", b"k9"]
    # a resend within the window stores nothing
    assert client.scripts.send_event(run_id, "go", b"9", 3, "k9") is True
    assert raw.llen(k.run_events(run_id, "go")) == 0
    # past it the key is not known: the event is stored again (documented)
    assert client.scripts.send_event(run_id, "go", b"0", 3, "k0") is True
    assert raw.lrange(k.run_events(run_id, "go"), 0, -1) == [b"0"]
    assert raw.smembers(k.run_event_keys(run_id)) == {b"k8", b"k9", b"k0"}
    assert client.scripts.finalize(run_id, run.token, "succeeded", b"1") == "succeeded"


def test_at_the_default_limit_the_event_keys_stay_at_max_events_per_run(
    raw: redis.Redis, client: Client
) -> None:
    cap = DEFAULT_MAX_EVENTS_PER_RUN
    run_id = Enq(client)(workflow="e", queue="q")
    run = claim_one(client, "q")
    k = client.keys
    for i in range(cap):
        assert client.scripts.send_event(run_id, "go", b"1", cap, f"key-{i}") is True
    for i in range(100):
        _consume(client, run, f"s{i}")
    for i in range(cap, cap + 100):
        assert client.scripts.send_event(run_id, "go", b"1", cap, f"key-{i}") is True
    assert raw.scard(k.run_event_keys(run_id)) == cap
    assert not any(raw.smismember(k.run_event_keys(run_id), [f"key-{i}" for i in range(100)]))
    # the newest is known: a resend is acknowledged (not refused by the full run)
    assert client.scripts.send_event(run_id, "go", b"1", cap, f"key-{cap + 99}") is True
    assert raw.llen(k.run_events(run_id, "go")) == cap


def test_keys_remembered_before_the_window_are_kept_and_new_ones_windowed(
    raw: redis.Redis, client: Client
) -> None:
    """A run's event-keys set written before the window existed (no order list)
    keeps its keys (they still deduplicate); keys sent since are windowed."""
    run_id = Enq(client)(workflow="e", queue="q")
    run = claim_one(client, "q")
    k = client.keys
    raw.sadd(k.run_event_keys(run_id), "old-1", "old-2")
    for i in range(5):
        assert client.scripts.send_event(run_id, "go", b"1", 2, f"k{i}") is True
        _consume(client, run, f"s{i}")
    assert raw.smembers(k.run_event_keys(run_id)) == {b"old-1", b"old-2", b"k3", b"k4"}
    assert client.scripts.send_event(run_id, "go", b"1", 2, "old-1") is True
    assert raw.llen(k.run_events(run_id, "go")) == 0


def test_an_event_key_order_list_of_the_wrong_type_is_refused_naming_it(
    raw: redis.Redis, client: Client
) -> None:
    run_id = Enq(client)(workflow="e", queue="q")
    k = client.keys
    order = k.run_event_key_order(run_id)
    raw.set(order, "not a redflow key")
    with pytest.raises(WrongTypeError, match=re.escape(order)):
        client.scripts.send_event(run_id, "go", b"1", 10, "k")
    assert raw.exists(k.run_events(run_id, "go"), k.run_event_keys(run_id)) == 0
    assert raw.hget(k.run(run_id), "eventsPending") in (None, b"0")
    raw.delete(order)
    assert client.scripts.send_event(run_id, "go", b"1", 10, "k") is True
    assert raw.lrange(order, 0, -1) == [b"k"]


def test_redflow_migrate_shards_moves_the_order_of_the_event_keys(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    from redflow_mp.reshard import reshard
    from tests.sharding import put, workflow_in

    two = make_client(shards=2)
    one = make_client()
    name = workflow_in(two, 1, "mv")
    define_workflow(name, queue="q", registry=registry)(lambda ctx: None)
    two.sync_registry(registry, app="t")
    src = two.shards[1]
    run_id = put(src, name)  # its id names shard 1
    assert two.send_event(run_id, "go", 1, idempotency_key="a") is True
    _, run = src.scripts.claim(("q",), 60_000, new_token())
    assert run is not None and run.id == run_id
    assert src.scripts.finalize(run_id, run.token, "succeeded", b"1") == "succeeded"
    reshard(two, one)  # 2 -> 1: the finished run moves to shard 0
    dst = one.shards[0]
    assert dst.redis.lrange(dst.keys.run_event_key_order(run_id), 0, -1) == [b"a"]
    assert dst.redis.smembers(dst.keys.run_event_keys(run_id)) == {b"a"}
    assert not src.redis.exists(src.keys.run_event_key_order(run_id))
