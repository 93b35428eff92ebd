"""A cancel cascade cut by its bound and resumed after its Redis restarted (or
failed over to a replica): the SSCAN cursor it recorded (``cascadeAt``) was the
old server's, whose hash seed (chosen per process) placed the children set's
members elsewhere; the resumed walk read from that cursor to the end, skipped
the children the new layout puts before it, and ended the cascade with them
still queued."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, create_client, define_workflow
from tests.helpers import status_of
from tests.integration.test_cascade_resume import _family as queued_family
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)

N = 3_000


def test_a_cascade_resumed_after_a_restart_cancels_every_child() -> None:
    server = RedisServer().start()
    registry = Registry()

    @define_workflow("fan", registry=registry)
    def fan(ctx: Context[Any]) -> None:
        return None

    client = create_client(server.url, prefix="cascade-restart", registry=registry, default=False)
    raw = server.client()
    try:
        parent, children = queued_family(raw, client, fan, N)
        assert client.scripts.cancel(parent, "") == "canceled"
        assert client.cancel_children(parent, None, 1_200) == 1_200  # cut: cascadeAt
        raw.save()
        raw.close()
        server.stop()
        server.start()  # same port and data dir: the dump loaded, a new hash seed
        raw = server.client()
        for _ in range(10):
            if raw.zscore(client.keys.cascades, parent) is None:
                break
            try:
                client.cancel_children(parent, None, 1_200)
            except redis.ConnectionError:  # the connection the restart cut
                continue
        assert raw.zscore(client.keys.cascades, parent) is None
        left = [c for c in children if status_of(raw, client, c) != "canceled"]
        assert left == []
    finally:
        client.close()
        raw.close()
        server.cleanup()
