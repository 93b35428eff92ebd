"""``result()`` under ``durability = "wait"``: a finish is published as soon as the
master applied it, before its worker's WAIT confirmed it; the outcome handed to
the caller must be one a failover cannot undo (a replica has it)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import (
    Client,
    Context,
    Registry,
    RunStatus,
    create_client,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from redflow_mp.errors import ResultTimeoutError
from tests.helpers import WorkerPool, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def master() -> Iterator[RedisServer]:
    s = RedisServer().start()
    try:
        yield s
    finally:
        s.stop()
        s.cleanup()


@pytest.fixture()
def replica(master: RedisServer) -> Iterator[RedisServer]:
    s = RedisServer(["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        r = s.client()
        wait_until(
            lambda: r.info("replication").get("master_link_status") == "up", 20, message="sync"
        )
        r.close()
        yield s
    finally:
        assert s.proc is not None
        os.kill(s.proc.pid, signal.SIGCONT)
        s.stop()
        s.cleanup()


@pytest.fixture()
def clients(
    master: RedisServer, prefix: str, registry: Registry
) -> Iterator[tuple[Client, Client]]:
    plain = create_client(master.url, prefix=prefix, registry=registry, default=False)
    durable = create_client(
        master.url, prefix=prefix, registry=registry, default=False, durability="wait"
    )
    try:
        yield plain, durable
    finally:
        plain.close()
        durable.close()


def test_result_under_durability_wait_returns_no_outcome_a_replica_does_not_have(
    replica: RedisServer, clients: tuple[Client, Client], registry: Registry
) -> None:
    plain, durable = clients

    @define_workflow("confirmed", queue="confirmed", registry=registry)
    def confirmed(ctx: Context[Any]) -> str:
        return "done"

    handle = confirmed.run(None, client=plain)
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica gets nothing more
    pool = WorkerPool(plain)  # durability "none": the finish is applied on the master
    try:
        pool.start(block_timeout=1.0)

        def ended() -> bool:
            state = plain.get_run(handle.id)
            return state is not None and state.status is RunStatus.SUCCEEDED

        wait_until(ended, 20, message="the run to end on the master")
        with pytest.raises(ResultTimeoutError):
            durable.wait_result(handle.id, timeout=2.5)
        os.kill(replica.proc.pid, signal.SIGCONT)
        assert durable.wait_result(handle.id, timeout=20) == "done"
    finally:
        pool.stop_all()


def test_the_async_result_under_durability_wait_returns_no_outcome_a_replica_does_not_have(
    master: RedisServer,
    replica: RedisServer,
    clients: tuple[Client, Client],
    registry: Registry,
    prefix: str,
) -> None:
    plain, _ = clients

    @define_workflow("confirmed-aio", queue="confirmed-aio", registry=registry)
    def confirmed_aio(ctx: Context[Any]) -> str:
        return "done"

    handle = confirmed_aio.run(None, client=plain)
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    pool = WorkerPool(plain)

    async def main() -> None:
        ac = create_async_client(
            master.url, prefix=prefix, registry=registry, default=False, durability="wait"
        )
        try:
            with pytest.raises(ResultTimeoutError):
                await ac.wait_result(handle.id, timeout=2.5)
            assert replica.proc is not None
            os.kill(replica.proc.pid, signal.SIGCONT)
            assert await ac.wait_result(handle.id, timeout=20) == "done"
        finally:
            await ac.aclose()

    try:
        pool.start(block_timeout=1.0)

        def ended() -> bool:
            state = plain.get_run(handle.id)
            return state is not None and state.status is RunStatus.SUCCEEDED

        wait_until(ended, 20, message="the run to end on the master")
        asyncio.run(main())
    finally:
        pool.stop_all()
