"""A malformed run id (``<ulid>~x``: after '~' a run id carries its shard number)
is refused the same way whatever the prefix's shard count: a ``ValueError``
naming the id. With one shard the lookups used to answer as for an unknown run
(None, False), with several they raised. A well-formed id no run has is still
an unknown run (None, False) with any count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from redflow_mp import Client, create_client
from redflow_mp.aio import create_async_client

pytestmark = pytest.mark.timeout(60)

BAD = ("01M977JRVEBW27D7FAPQ2JGN0M~x", "01M977JRVEBW27D7FAPQ2JGN0M~01", "01M977JRVEBW27D7~")
UNKNOWN = ("01M977JRVEBW27D7FAPQ2JGN0M", "01M977JRVEBW27D7FAPQ2JGN0M~1")


def _lookups(client: Client) -> dict[str, Callable[[str], Any]]:
    return {
        "get_run": client.get_run,
        "get_run_steps": client.get_run_steps,
        "cancel_run": client.cancel_run,
        "send_event": lambda rid: client.send_event(rid, "e"),
        "handle.state": lambda rid: client.handle(rid).state(),
    }


@pytest.mark.parametrize("shards", [1, 2])
def test_a_malformed_run_id_is_a_value_error_naming_it_with_any_shard_count(
    redis_url: str, prefix: str, shards: int
) -> None:
    client = create_client(redis_url, prefix=prefix, default=False, shards=shards)
    try:
        for name, lookup in _lookups(client).items():
            for bad in BAD:
                with pytest.raises(ValueError, match="malformed run id") as info:
                    lookup(bad)
                assert repr(bad) in str(info.value), name
            for unknown in UNKNOWN:
                assert lookup(unknown) in (None, False), (name, unknown)
    finally:
        client.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_the_asyncio_client_refuses_a_malformed_run_id_alike(
    redis_url: str, prefix: str, shards: int
) -> None:
    async def check() -> None:
        client = create_async_client(redis_url, prefix=prefix, shards=shards)
        try:
            lookups: dict[str, Callable[[str], Awaitable[Any]]] = {
                "get_run": client.get_run,
                "get_run_steps": client.get_run_steps,
                "cancel_run": client.cancel_run,
                "send_event": lambda rid: client.send_event(rid, "e"),
            }
            for name, lookup in lookups.items():
                for bad in BAD:
                    with pytest.raises(ValueError, match="malformed run id"):
                        await lookup(bad)
                for unknown in UNKNOWN:
                    assert await lookup(unknown) in (None, False), (name, unknown)
        finally:
            await client.aclose()

    asyncio.run(check())


@pytest.mark.parametrize("shards", [1, 2])
def test_a_malformed_cursor_is_refused_by_every_listing_with_any_shard_count(
    redis_url: str, prefix: str, shards: int
) -> None:
    """``list_runs(after=<malformed>)`` with one shard answered the first page (the
    id read as a run that is gone), while ``iter_runs`` and any listing with
    several shards raised: the same ValueError now, sync and asyncio."""
    client = create_client(redis_url, prefix=prefix, default=False, shards=shards)
    try:
        client.run_by_name("w", {}, queue_override="q")
        for bad in BAD:
            listings: dict[str, Callable[[str], Any]] = {
                "list_runs": lambda after: client.list_runs(after=after),
                "iter_runs": lambda after: list(client.iter_runs(after=after)),
            }
            for name, listing in listings.items():
                with pytest.raises(ValueError, match="malformed run id"):
                    listing(bad)  # before: list_runs, one shard: [RunState(...)]
                assert name
        for unknown in UNKNOWN:  # a run that is gone: a page as before
            assert len(client.list_runs(after=unknown)) == 1
    finally:
        client.close()

    async def check() -> None:
        aclient = create_async_client(redis_url, prefix=prefix, shards=shards)
        try:
            for bad in BAD:
                with pytest.raises(ValueError, match="malformed run id"):
                    await aclient.list_runs(after=bad)
            for unknown in UNKNOWN:
                assert len(await aclient.list_runs(after=unknown)) == 1
        finally:
            await aclient.aclose()

    asyncio.run(check())
