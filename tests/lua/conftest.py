"""Helpers for the script tests: call scripts through ``client.scripts``, as one
shard of several (``sharded``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redflow_mp import Client
from redflow_mp.ids import new_run_id


class Enq:
    """Enqueue through ``scripts.enqueue`` with sensible defaults."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(
        self,
        workflow: str = "wf",
        queue: str = "q",
        input_json: bytes = b"{}",
        *,
        run_id: str | None = None,
        max_attempts: int = 1,
        run_at_ms: int = 0,
        key: str = "",
        ttl_ms: int = 60_000,
        parent: str = "",
        cron_id: str = "",
        max_concurrency: int | None = None,
        timeout_ms: int | None = None,
    ) -> str:
        rid, _created = self.client.scripts.enqueue(
            run_id or new_run_id(),
            workflow,
            queue,
            input_json,
            max_attempts,
            run_at_ms,
            key,
            ttl_ms,
            parent,
            cron_id,
            max_concurrency,
            timeout_ms,
        )
        return rid


@pytest.fixture()
def enq(client: Client) -> Callable[..., str]:
    return Enq(client)


@pytest.fixture()
def sharded(client: Client) -> Iterator[Client]:
    """``client``'s scripts as shard 0 of 2."""
    s = client.scripts
    s.shard_count, s.shard_index = 2, 0
    try:
        yield client
    finally:
        s.shard_count, s.shard_index = 1, 0


@pytest.fixture(params=["evalsha", "fcall"])
def cl(
    request: pytest.FixtureRequest, client: Client, make_client: Callable[..., Client]
) -> Client:
    """``client`` (EVALSHA), then a client of the function library (FCALL; Redis
    7 and later)."""
    if request.param == "evalsha":
        return client
    raw: Any = request.getfixturevalue("raw")
    if int(str(raw.info("server")["redis_version"]).split(".")[0]) < 7:
        pytest.skip("function libraries need Redis >= 7")
    return make_client(redis_functions=True)
