"""Fixtures shared by the integration tests (those of every test directory are in
``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Registry, create_client
from redflow_mp.transport import Transport


@pytest.fixture()
def packed_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The packed calls sent (the method still sends them)."""
    sent: list[bytes] = []
    real = Transport.call_packed

    def spy(self: Transport, packed: bytes, *, retry: bool = True, fresh: bool = True) -> Any:
        sent.append(packed)
        return real(self, packed, retry=retry, fresh=fresh)

    monkeypatch.setattr(Transport, "call_packed", spy)
    return sent


@pytest.fixture(params=[False, True], ids=["evalsha", "functions"])
def any_client(
    request: pytest.FixtureRequest, redis_url: str, prefix: str, registry: Registry
) -> Iterator[Client]:
    """A client on the test's prefix calling its scripts by EVALSHA, then (the second
    parameter) as a function library (FCALL)."""
    c = create_client(
        redis_url, prefix=prefix, registry=registry, default=False, redis_functions=request.param
    )
    try:
        yield c
    finally:
        c.close()
