"""Keys evicted while the supervisor runs are named in an ERROR line at the next
key check (every minute), and a policy turned evicting since start in a WARNING:
the start-up warning alone said nothing when the policy was changed later or
keys went under load (runs lost or run twice, silently)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from redflow_mp import Client, create_client
from supervisor.duties.keycheck import KeyCheckDuty
from tests.redis_server import RedisServer


@pytest.fixture()
def own_client(server: RedisServer, prefix: str) -> Iterator[Client]:
    c = create_client(server.url, prefix=prefix, default=False)
    yield c
    c.close()


def test_keys_evicted_after_start_are_named_at_the_next_check(
    server: RedisServer, own_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    duty = KeyCheckDuty(own_client, ["wf"], lambda: ("q",))
    caplog.set_level(logging.WARNING, logger="redflow_supervisor")
    duty.tick(0.0)  # at start: noeviction, nothing said
    assert "maxmemory-policy" not in caplog.text

    raw = server.client()
    try:
        raw.config_set("maxmemory-policy", "allkeys-random")  # someone's CONFIG SET
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory", str(used + 2 * 1024 * 1024))
        blob = b"x" * 10_000
        for i in range(0, 1000, 100):  # 10 MB into a server with 2 MB to spare
            with raw.pipeline(transaction=False) as pipe:
                for j in range(i, i + 100):
                    pipe.set(f"junk:{j}", blob)
                pipe.execute()
        assert int(raw.info("stats")["evicted_keys"]) > 0
        duty.tick(60.0)
    finally:
        raw.config_set("maxmemory", "0")
        raw.close()
    assert "now has maxmemory-policy allkeys-random (it had noeviction)" in caplog.text
    assert "evicted" in caplog.text and "keys in the last minute" in caplog.text
    assert duty.evictions.reported == 1
