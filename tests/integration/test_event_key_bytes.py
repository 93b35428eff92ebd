"""The idempotency keys a run remembers for send_event are bounded in bytes too.

The window held the keys of the last ``max_events_per_run`` (10,000) keyed events
whatever their length: with keys of 4,096 characters and 1-byte payloads one run
held 103 MB (the set and the order list), past ``max_event_bytes_per_run`` (64 MiB,
counted on payloads only), and consuming the events freed none of it. The window
now also drops its oldest keys past 4 MiB of keys (short keys: still the last
10,000)."""

from __future__ import annotations

import pytest
import redis

from redflow_mp import Client
from tests.helpers import texts

pytestmark = pytest.mark.timeout(120)

BUDGET = 4 * 1024 * 1024


def test_the_key_window_holds_at_most_its_byte_budget(raw: redis.Redis, client: Client) -> None:
    handle = client.run_by_name("ev-keys", None, queue_override="nowhere")
    keys = [f"{i:06d}" + "k" * 4090 for i in range(1_500)]  # 6 MB of keys
    for key in keys:
        assert client.send_event(handle.id, "go", 1, idempotency_key=key) is True
    order = texts(raw.lrange(client.keys.run_event_key_order(handle.id), 0, -1))
    assert sum(len(k) for k in order) <= BUDGET
    assert order == keys[-len(order) :]  # the newest, in the order sent
    assert raw.scard(client.keys.run_event_keys(handle.id)) == len(order)
    assert len(order) >= BUDGET // 4096 - 1
    # the newest keys still dedupe; a forgotten one is stored again
    pending = int(raw.hget(client.keys.run(handle.id), "eventsPending") or 0)
    assert client.send_event(handle.id, "go", 1, idempotency_key=keys[-1]) is True
    assert int(raw.hget(client.keys.run(handle.id), "eventsPending") or 0) == pending
    assert client.send_event(handle.id, "go", 1, idempotency_key=keys[0]) is True
    assert int(raw.hget(client.keys.run(handle.id), "eventsPending") or 0) == pending + 1


def test_short_keys_keep_the_whole_count_window(raw: redis.Redis, client: Client) -> None:
    handle = client.run_by_name("ev-keys-short", None, queue_override="nowhere")
    for i in range(3_000):
        client.send_event(handle.id, "go", 1, idempotency_key=f"order-{i:06d}:paid")
    assert raw.llen(client.keys.run_event_key_order(handle.id)) == 3_000
