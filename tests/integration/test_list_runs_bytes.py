"""``Client.list_runs`` (and the async client's) of runs with big payloads reads
them in round trips of a few MiB, not in one reply; a huge ``limit`` is read in
bounded round trips too.

Inputs and outputs go up to ``max_payload_bytes`` (8 MiB by default) each. A
page of runs was one pipeline of HGETALLs: 50 runs with 8 MiB inputs were a
400 MB reply, which another client's PING waited 365 ms behind, and which Redis
held in its output buffer for that client. The page now reads the rows and the
sizes of the payloads first (HMGET, HSTRLEN), then the payloads in round trips
of about ``listing.PAYLOAD_TRIP_BYTES``; the states are the same as the whole
read's. ``list_runs(limit=10**9)`` read every id of ``runs:created`` in one
ZREVRANGE: it reads ``listing.RANK_TRIP`` a round trip.

Bytes are counted in the replies each round trip of the query plan brought (the
plan driver is wrapped): load-independent, and the same on a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Registry,
    aio,
    aio_connection,
    codec,
    define_workflow,
    listing,
    queries,
)
from redflow_mp.aio import create_async_client
from redflow_mp.codec import RunState

pytestmark = pytest.mark.timeout(300)

RUNS = 25
#: Each run's input: a JSON string just under max_payload_bytes (8 MiB) by default.
INPUT = "i" * ((8 << 20) - 64)
#: The most bytes one round trip may bring: two payloads of 8 MiB.
PER_TRIP = 2 * (8 << 20)


def _size(reply: Any) -> int:
    """Bytes of data in a parsed reply (strings, keys and values)."""
    if isinstance(reply, bytes | str):
        return len(reply)
    if isinstance(reply, dict):
        return sum(_size(k) + _size(v) for k, v in reply.items())
    if isinstance(reply, list | tuple):
        return sum(_size(x) for x in reply)
    return 8


class Trips:
    """Every round trip of the plans driven while installed: its batch and the
    bytes of its replies."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.batches: list[list[tuple[str, tuple[Any, ...]]]] = []
        self.replies: list[list[Any]] = []

    def watch(self, plan: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        try:
            batch = next(plan)
            while True:
                replies = yield batch
                self.batches.append(batch)
                self.replies.append(replies)
                self.sizes.append(_size(replies))
                batch = plan.send(replies)
        except StopIteration as stop:
            return stop.value

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        drive = queries.drive
        adrive: Callable[[Any, Any], Awaitable[Any]] = aio_connection.drive_query

        async def adriven(r: Any, plan: Any) -> Any:
            return await adrive(r, self.watch(plan))

        monkeypatch.setattr(queries, "drive", lambda r, plan: drive(r, self.watch(plan)))
        monkeypatch.setattr(aio, "_drive_query", adriven)

    def clear(self) -> None:
        self.sizes.clear()
        self.batches.clear()
        self.replies.clear()


def _whole(raw: redis.Redis, client: Client, ids: list[str]) -> list[RunState]:
    """The runs ``ids`` as a whole read (HGETALL) makes them: the states before."""
    out = []
    for run_id in ids:
        got = raw.hgetall(client.keys.run(run_id))
        if got:
            state = codec.run_state_from_hash(got)
            state.id = state.id or run_id
            out.append(state)
    return out


def _list_async(redis_url: str, prefix: str, registry: Registry, **kw: Any) -> list[RunState]:
    async def read() -> list[RunState]:
        ac = create_async_client(url=redis_url, prefix=prefix, registry=registry, default=False)
        try:
            return await ac.list_runs(**kw)
        finally:
            await ac.aclose()

    return asyncio.run(read())


def test_a_page_of_runs_with_8_mib_inputs_is_read_in_bounded_round_trips(
    client: Client,
    registry: Registry,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @define_workflow("big-input", registry=registry, queue="nobody-claims")
    def big_input(ctx: Any) -> None:  # never executed: the runs stay queued
        return None

    client.sync_registry(registry, app="list-bytes")
    ids = [big_input.run(INPUT, client=client).id for _ in range(RUNS)]
    # one of them holds an output and an error record as well (set by hand)
    done = client.keys.run(ids[3])
    raw.hset(done, "outputJson", '{"out": [1, 2]}')
    raw.hset(done, "errorJson", '{"type": "E", "message": "m", "retryable": true}')
    expected = _whole(raw, client, ids[::-1])  # newest first
    assert len(expected) == RUNS

    trips = Trips()
    trips.install(monkeypatch)
    got = client.list_runs(limit=RUNS)
    assert got == expected  # the same states as the whole read
    assert got[0].input == INPUT and got[-4].output == {"out": [1, 2]}
    assert sum(trips.sizes) >= RUNS * len(INPUT)  # every input came
    assert max(trips.sizes) <= PER_TRIP, (
        f"list_runs of {RUNS} runs with {len(INPUT):,}-byte inputs read "
        f"{max(trips.sizes):,} bytes in one round trip ({len(trips.sizes)} round trips)"
    )

    trips.clear()
    got = _list_async(redis_url, prefix, registry, limit=RUNS)
    assert got == expected
    assert sum(trips.sizes) >= RUNS * len(INPUT)
    assert max(trips.sizes) <= PER_TRIP, (
        f"AsyncClient.list_runs of {RUNS} runs read {max(trips.sizes):,} bytes in one "
        f"round trip ({len(trips.sizes)} round trips)"
    )

    # a status filter, and a cursor, read the same way
    trips.clear()
    assert client.list_runs(status="queued", limit=RUNS) == expected
    assert client.list_runs(after=ids[-1], limit=RUNS) == expected[1:]
    assert max(trips.sizes) <= PER_TRIP


def test_odd_run_hashes_read_by_rows_and_sizes_are_the_whole_read(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """A hash left only a payload, only a field no run reads, an empty payload, a
    wait record, a run removed: the states are the whole read's."""

    @define_workflow("odd", registry=registry, queue="nobody-claims")
    def odd(ctx: Any) -> None:
        return None

    client.sync_registry(registry, app="list-bytes")
    ids = [odd.run({"n": n}, client=client).id for n in range(6)]
    keys = [client.keys.run(run_id) for run_id in ids]
    raw.hdel(keys[0], *listing.ROW_FIELDS)  # only its input left
    raw.delete(keys[1])
    raw.hset(keys[1], "stepBytes", "12")  # a field no RunState reads
    raw.hset(keys[2], mapping={"inputJson": "", "outputJson": "not json", "wait": "{bad"})
    raw.hset(keys[3], "wait", raw.hget(keys[3], "inputJson") or b"")
    raw.delete(keys[4])  # removed since its id was read
    expected = _whole(raw, client, ids)
    assert [s.id for s in expected] == [ids[0], ids[1], ids[2], ids[3], ids[5]]
    got = queries.drive(client.redis, listing.run_states(client.keys, ids))
    assert got == expected
    rows = queries.drive(client.redis, listing.run_states(client.keys, ids, payloads=False))
    assert [s.id for s in rows] == [s.id for s in expected]


def test_a_run_removed_between_its_row_and_its_payloads_is_gone(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """Rows and payloads are read in different round trips: a run removed in
    between (retention) is left out, as a read after it leaves it out, not listed
    without its input; a wait record removed in between (the wait ended) is absent."""

    @define_workflow("racy", registry=registry, queue="nobody-claims")
    def racy(ctx: Any) -> None:
        return None

    client.sync_registry(registry, app="list-bytes")
    ids = [racy.run({"n": n}, client=client).id for n in range(3)]
    raw.hset(client.keys.run(ids[2]), "wait", '{"kind": "event"}')
    plan = listing.run_states(client.keys, ids)
    batch = next(plan)
    assert all(name in ("hmget", "hstrlen") for name, _ in batch)
    batch = plan.send([getattr(raw, name)(*args) for name, args in batch])
    raw.delete(client.keys.run(ids[0]))  # between the rows and the payloads
    raw.hdel(client.keys.run(ids[2]), "wait")
    try:
        while True:
            batch = plan.send([getattr(raw, name)(*args) for name, args in batch])
    except StopIteration as stop:
        got: list[RunState] = stop.value
    assert [s.id for s in got] == ids[1:]
    assert got == _whole(raw, client, ids)


def test_payload_trips_cut_by_bytes_and_a_big_field_goes_alone() -> None:
    assert (listing.RANK_TRIP, listing.ROWS_TRIP * 5) == (REPLY_ITEMS, TRIP_COMMANDS)
    mib = 1 << 20
    sizes = [("a", mib), ("b", 2 * mib), ("c", mib), ("d", 9 * mib), ("e", 0), ("f", 1)]
    assert listing.payload_trips(sizes) == [["a", "b", "c"], ["d"], ["f"]]
    assert listing.payload_trips([]) == []


#: Ids in runs:created: more than one reply may bring.
MANY = 25_000
#: The most entries one reply may bring (listing.RANK_TRIP ids, listing.ROWS_TRIP rows),
#: and the most commands one round trip may send (ROWS_TRIP runs of 5 each).
REPLY_ITEMS = 10_000
TRIP_COMMANDS = 5_000


def test_a_huge_limit_is_read_in_bounded_round_trips(
    client: Client,
    registry: Registry,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``list_runs(limit=10**9)`` lists every run, newest first, reading the index
    ``listing.RANK_TRIP`` ids and the rows ``listing.ROWS_TRIP`` runs a round
    trip (it read every id in one ZREVRANGE, and every run in one pipeline)."""

    @define_workflow("many", registry=registry, queue="nobody-claims")
    def many(ctx: Any) -> None:
        return None

    client.sync_registry(registry, app="list-bytes")
    real = [many.run(n, client=client).id for n in range(3)]
    # Older members of runs:created without a hash (removed runs retention has not
    # reached yet): listed by no read, but walked through.
    created = client.keys.runs_created
    raw.zadd(created, {f"{real[0]}~gone{n:05d}": n + 1 for n in range(MANY)})
    trips = Trips()
    trips.install(monkeypatch)
    reads: list[Callable[[], list[RunState]]] = [
        lambda: client.list_runs(limit=10**9),
        lambda: _list_async(redis_url, prefix, registry, limit=10**9),
    ]
    for read in reads:
        got = read()
        assert [s.id for s in got] == real[::-1]
        assert [s.input for s in got] == [2, 1, 0]
        most = max(len(r) for replies in trips.replies for r in replies if isinstance(r, list))
        assert most <= REPLY_ITEMS, (
            f"list_runs(limit=10**9) over {MANY + 3:,} ids brought {most:,} in one reply "
            f"({len(trips.sizes)} round trips)"
        )
        sent = max(len(batch) for batch in trips.batches)
        assert sent <= TRIP_COMMANDS, f"list_runs(limit=10**9) sent {sent:,} commands at once"
        trips.clear()
