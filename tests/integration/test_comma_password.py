"""A password holding a comma in a single-server URL (``redis://:a,b@host:port/0``,
a comma is a legal userinfo character): the URL names one server, not a cluster's
seed list. The seed-list check looked for a comma anywhere in the netloc, so the
password's comma made the client a cluster client (``cluster = true``), which a
standalone server refuses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from redflow_mp import Registry, create_client, define_workflow
from redflow_mp.connection import parse_target
from tests.redis_server import RedisServer

PASSWORD = "s3cr,et"


@pytest.fixture()
def comma_server() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_a_comma_in_the_password_names_one_server_not_a_cluster() -> None:
    t = parse_target(f"redis://user:{PASSWORD}@127.0.0.1:6390/0")
    assert (t.cluster, t.seeds) == (False, ()), t
    seeds = parse_target(f"redis://user:{PASSWORD}@n1:7000,n2:7001/0")
    assert seeds.cluster and seeds.seeds == (("n1", 7000), ("n2", 7001))


def test_a_client_reaches_a_server_whose_password_holds_a_comma(
    comma_server: RedisServer, registry: Registry
) -> None:
    @define_workflow("comma", queue="comma", registry=registry)
    def comma(ctx: object) -> int:
        return 1

    client = create_client(
        comma_server.url, prefix=f"comma-{os.getpid()}", registry=registry, default=False
    )
    try:
        handle = client.run_by_name("comma", None)
        assert handle.state() is not None
    finally:
        client.close()
