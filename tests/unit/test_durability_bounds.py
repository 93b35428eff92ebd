"""The bounds of ``durability_wait_ms`` and of ``max_payload_bytes`` (client and
supervisor): an absurd value is refused in a clear error."""

from __future__ import annotations

import pytest

from redflow_mp import create_client
from redflow_mp.aio import create_async_client
from redflow_mp.connection import MAX_WAIT_MS, check_durability
from redflow_mp.errors import ConfigError
from redflow_mp.runs import MAX_PAYLOAD_BYTES as CLIENT_MAX_PAYLOAD_BYTES
from redflow_mp.runs import MIN_PAYLOAD_BYTES as CLIENT_MIN_PAYLOAD_BYTES
from redflow_mp.runs import check_max_payload_bytes
from supervisor.settings import MAX_PAYLOAD_BYTES, MIN_PAYLOAD_BYTES, load


def test_durability_wait_ms_is_bounded() -> None:
    assert check_durability("wait", MAX_WAIT_MS) == ("wait", 60_000)
    for bad in (0, MAX_WAIT_MS + 1, 10**400, True, 1.5):
        with pytest.raises(ValueError, match="from 1 to 60000"):
            check_durability("wait", bad)
    assert load({"durability_wait_ms": MAX_WAIT_MS}, environ={}).durability_wait_ms == 60_000
    with pytest.raises(ConfigError, match="at most 60000"):
        load({"durability_wait_ms": 10**400}, environ={})


def test_max_payload_bytes_is_bounded() -> None:
    assert MAX_PAYLOAD_BYTES == 512 * 1024 * 1024
    assert load({"max_payload_bytes": MAX_PAYLOAD_BYTES}, environ={}).max_payload_bytes > 0
    with pytest.raises(ConfigError, match="at most 536870912"):
        load({"max_payload_bytes": 10**400}, environ={})


def test_the_clients_max_payload_bytes_is_bounded_as_the_supervisors() -> None:
    """Before: any size was taken (``10**400`` too), sync and async: DID NOT RAISE."""
    assert CLIENT_MAX_PAYLOAD_BYTES == MAX_PAYLOAD_BYTES
    assert check_max_payload_bytes(MAX_PAYLOAD_BYTES) == MAX_PAYLOAD_BYTES
    url = "redis://127.0.0.1:9/0"  # nothing is sent: the argument is refused first
    for bad in (MAX_PAYLOAD_BYTES + 1, 10**400):
        with pytest.raises(ValueError, match=r"max_payload_bytes must be at most 536870912"):
            create_client(url, max_payload_bytes=bad, default=False)
        with pytest.raises(ValueError, match=r"max_payload_bytes must be at most 536870912"):
            create_async_client(url, max_payload_bytes=bad, default=False)


def test_the_supervisor_refuses_a_max_payload_bytes_its_children_would_refuse() -> None:
    """Before: the setting took 1..1023, and the supervisor then failed starting its
    client (the client's bound is 1024): load() returned 100 (DID NOT RAISE)."""
    assert MIN_PAYLOAD_BYTES == CLIENT_MIN_PAYLOAD_BYTES
    assert check_max_payload_bytes(MIN_PAYLOAD_BYTES) == MIN_PAYLOAD_BYTES
    assert load({"max_payload_bytes": MIN_PAYLOAD_BYTES}, environ={}).max_payload_bytes == 1024
    with pytest.raises(ConfigError, match="at least 1024"):
        load({"max_payload_bytes": 100}, environ={})
