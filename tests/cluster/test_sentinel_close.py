"""Closing a client that reaches its master through Sentinel closes the
connections it opened to the sentinels too (not only those to the master)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import traceback
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import RedflowError
from tests.helpers import wait_until
from tests.servers import SentinelSet

pytestmark = pytest.mark.timeout(120)


def _asked(sentinels: list[redis.Redis]) -> list[int]:
    """Per sentinel, its clients whose last command asked it where the master is
    (``SENTINEL MASTERS`` or ``GET-MASTER-ADDR-BY-NAME``), the sentinels' own links
    to each other (named ``sentinel-<id>-cmd``) left out."""
    return [
        sum(
            str(c.get("cmd", "")).startswith("sentinel")
            and not str(c.get("name", "")).startswith("sentinel-")
            for c in s.client_list()
        )
        for s in sentinels
    ]


def _sentinels(sentinel_set: SentinelSet) -> list[redis.Redis]:
    return [redis.Redis(host=h, port=p) for h, p in sentinel_set.sentinel_addresses]


def test_close_leaves_no_sentinel_connection_open(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    """Before, the sentinel connection that found the master stayed open for as long
    as the closed client object lived, and a call after close() opened it again."""

    @define_workflow("sentinel-close", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)
    c = create_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
    handle = parked.run(None, client=c)
    assert c.get_run(handle.id) is not None
    assert sum(_asked(sentinels)) > sum(before)  # the client asked a sentinel
    c.close()
    wait_until(lambda: _asked(sentinels) == before, timeout=10)
    with pytest.raises(RedflowError, match="is closed"):
        c.get_run(handle.id)
    assert _asked(sentinels) == before  # the call after close asked no sentinel


def test_aclose_leaves_no_sentinel_connection_open(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    @define_workflow("sentinel-aclose", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)

    async def main() -> None:
        ac = create_async_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
        handle = await parked.arun(None, client=ac)
        assert await ac.get_run(handle.id) is not None
        assert sum(_asked(sentinels)) > sum(before)
        await ac.aclose()

    asyncio.run(main())
    wait_until(lambda: _asked(sentinels) == before, timeout=10)


def test_a_master_lookup_cut_by_close_opens_no_sentinel_connection_after_it(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    """A call's master lookup (``_recheck_master``, once a second) asks the
    sentinels in turn. Before, when close() cut the lookup's connection to the one
    it was waiting on (a stalled sentinel), the lookup went on to the next sentinel
    and opened a connection there after close() had returned: left open for as
    long as the closed client object lived (the sentinels' connections were not
    gated as the master's are)."""

    @define_workflow("sentinel-close-race", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)
    c = create_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
    handle = parked.run(None, client=c)
    assert c.get_run(handle.id) is not None
    transport: Any = c.transport
    order = [n.connection_pool.connection_kwargs["port"] for n in _sentinel_nodes(transport)]
    stalled = next(s for s in sentinel_set.sentinels if s.port == order[0])
    assert stalled.proc is not None
    failures: list[BaseException] = []

    def lookup() -> None:
        transport._recheck_at = 0.0  # the next call asks the sentinels
        try:
            transport.call("PING")
        except BaseException as exc:
            failures.append(exc)

    os.kill(stalled.proc.pid, signal.SIGSTOP)
    try:
        thread = threading.Thread(target=lookup, name="lookup")
        thread.start()
        ident = thread.ident
        assert ident is not None
        wait_until(
            lambda: "discover_master" in _stack(ident), timeout=10, message="the lookup's wait"
        )
        c.close()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)
    assert failures and isinstance(failures[0], RedflowError), failures
    assert "is closed" in str(failures[0])
    wait_until(lambda: _asked(sentinels) == before, timeout=10, message="no sentinel connection")


def _sentinel_nodes(transport: Any) -> list[Any]:
    return list(transport._redis.connection_pool.sentinel_manager.sentinels)


def _stack(ident: int) -> str:
    frame = sys._current_frames().get(ident)
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


def test_an_async_master_lookup_cut_by_aclose_opens_no_sentinel_connection_after_it(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    """The asyncio client's recheck, as the sync one's above."""

    @define_workflow("sentinel-aclose-race", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)

    async def main() -> list[BaseException]:
        ac = create_async_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
        handle = await parked.arun(None, client=ac)
        assert await ac.get_run(handle.id) is not None
        transport: Any = ac.transport
        nodes = transport._sentinel.sentinels
        first = nodes[0].connection_pool.connection_kwargs["port"]
        stalled = next(s for s in sentinel_set.sentinels if s.port == first)
        assert stalled.proc is not None
        failures: list[BaseException] = []

        async def lookup() -> None:
            transport._recheck_at = 0.0  # the next call asks the sentinels
            try:
                await transport.call("PING")
            except BaseException as exc:
                failures.append(exc)

        os.kill(stalled.proc.pid, signal.SIGSTOP)
        try:
            task = asyncio.create_task(lookup())
            deadline = asyncio.get_running_loop().time() + 10
            while "discover_master" not in _awaiting(task.get_coro()):  # waits on it
                assert asyncio.get_running_loop().time() < deadline, "the lookup's wait"
                await asyncio.sleep(0.01)
            await ac.aclose()
            await asyncio.wait_for(task, 30)
        finally:
            os.kill(stalled.proc.pid, signal.SIGCONT)
        return failures

    failures = asyncio.run(main())
    assert failures and isinstance(failures[0], RedflowError), failures
    wait_until(lambda: _asked(sentinels) == before, timeout=10, message="no sentinel connection")


def _awaiting(coro: Any) -> list[str]:
    """The names of the coroutines ``coro`` awaits, outermost first."""
    names: list[str] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            names.append(frame.f_code.co_name)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return names
