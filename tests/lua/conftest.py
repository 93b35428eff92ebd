"""Helpers for the script tests: call scripts through ``client.scripts``."""

from __future__ import annotations

from collections.abc import Callable

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
