"""Shared fixtures: one private redis-server per test session (per xdist worker),
a unique key prefix per test, a fresh registry per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import redis

from redflow_mp import Client, Registry, create_client
from redflow_mp.client import set_default_client
from tests.redis_server import RedisServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name[:40])
    return f"t{next(_counter)}-{worker}-{name}"


@pytest.fixture()
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis_server.client()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture()
def registry() -> Registry:
    return Registry()


@pytest.fixture()
def client(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    c = create_client(redis_url, prefix=prefix, registry=registry)
    try:
        yield c
    finally:
        c.close()
        set_default_client(None)
