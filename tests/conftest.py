"""Shared fixtures: one private redis-server per test session (per xdist worker),
a unique key prefix per test, a fresh registry per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, create_client
from redflow_mp.client import set_default_client
from tests.helpers import WorkerPool
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


@pytest.fixture()
def make_client(redis_url: str, prefix: str, registry: Registry) -> Iterator[Callable[..., Client]]:
    """Factory for extra clients on the test's prefix (another "host"); closed at teardown."""
    made: list[Client] = []

    def factory(**kwargs: Any) -> Client:
        kwargs.setdefault("prefix", prefix)
        kwargs.setdefault("registry", registry)
        kwargs.setdefault("default", False)
        c = create_client(redis_url, **kwargs)
        made.append(c)
        return c

    try:
        yield factory
    finally:
        for c in made:
            c.close()


@pytest.fixture()
def workers(client: Client, make_client: Callable[..., Client]) -> Iterator[WorkerPool]:
    """Worker loops in threads (maintenance on, block_timeout 0.1 s); stopped at teardown,
    before any client (also those from ``make_client``) is closed."""
    pool = WorkerPool(client)
    try:
        yield pool
    finally:
        pool.stop_all()
