"""The worker's read of a run's step records (``Execution.load_steps``, when the
claim sends only their count) and ``redflow runs show``'s
(``previews.get_run_steps_ends``) page their HSCAN by the bytes that come, not
by the run's ``stepBytes`` alone, which is a hint: absent on runs recorded
before it existed, or edited by hand.

By ``stepBytes`` alone, a run of 1,500 small steps whose ``stepBytes`` read
10**15 was read a record a call (1,500 HSCAN calls; a million for a million
steps), and a run of 48 steps of 8 MiB without it came in one reply of 384 MB
(the claim's HGETALL, taking a missing ``stepBytes`` for 0; the worker's and
``runs show``'s HSCAN of 1,000 records). The big-step cases here use 64 steps of
250 KB (16 MB): what one call may bring (``hscan_bound``, 4 MiB) is under a
third of the one call that brought them all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    NonRetriableError,
    Registry,
    Retries,
    Worker,
    define_workflow,
    previews,
)
from redflow_mp.maintenance import promote_due
from redflow_mp.queries import drive
from tests.helpers import HscanPages, command_counts, hscan_bound, monitor, wait_until

pytestmark = pytest.mark.timeout(120)

SMALL = 1_500  # past the 1,000 step records a claim's reply carries
BIG = 64
#: A big step's output: 250 KB of JSON. The defect is the number of records in
#: one call, not their size: 64 of them (16 MB) in one reply is four times what
#: one call of a paged read may bring (``hscan_bound``: 4 MiB, or the biggest
#: hash-table bucket of the hash on Valkey 8.1+), and the tests take seconds,
#: not minutes (48 steps of 8 MB wrote 384 MB a test and took 30-180 s under load).
BIG_OUTPUT = "x" * 250_000
#: HSCAN calls a read of SMALL records may take: pages grow twofold from one
#: record to 1,000 (1 + 2 + ... + 512, then 1,000s: 11 calls), with headroom.
MOST_CALLS = 20


def _recorded_run(
    client: Client,
    registry: Registry,
    rows: int,
    output: Any,
    *,
    retry: bool = True,
    ran: Counter[str] | None = None,
) -> str:
    """A run that recorded ``rows`` steps returning ``output``, failed its first
    attempt after them and waits (due) for its retry, which replays them all
    (``retry=False``: failed for good, every step record kept by a resume).
    ``ran`` counts the executions of each step."""
    ran = Counter() if ran is None else ran

    def body(name: str) -> Any:
        ran[name] += 1
        return output

    @define_workflow(
        "stepped",
        retries=Retries(max_attempts=2, initial_delay=0.001, jitter=0),
        registry=registry,
    )
    def flow(ctx: Context[Any]) -> int:
        for i in range(rows):
            ctx.step.run(f"s{i:04d}", body, f"s{i:04d}")
        if ctx.run.attempt == 1:
            raise ConnectionError("flaky after the loop") if retry else NonRetriableError("no")
        return rows

    handle = flow.run(client=client)
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=120) == 1  # attempt 1: records, then fails
    finally:
        worker.close()
    state = client.get_run(handle.id)
    assert state is not None and state.status == ("scheduled" if retry else "failed"), state
    return handle.id


def _retry(client: Client, run_id: str) -> None:
    """Run the retry of ``run_id``: its claim leaves the steps to the worker's pages."""
    wait_until(lambda: promote_due(client)[0] == 1, message="the retry promoted")
    worker = Worker(client, block_timeout=0.1, maintenance=False)
    try:
        assert worker.run_until_idle(timeout=120) == 1
    finally:
        worker.close()


def _replayed(raw: redis.Redis, steps_key: str, lines: list[str]) -> list[int]:
    """Bytes of each HSCAN call of ``steps_key`` in the MONITOR ``lines``, made
    again from here (the hash unchanged since: each brings what it brought then)."""
    scans = [
        ln.split('"')[1::2] for ln in lines if f'"{steps_key}"' in ln and '"hscan"' in ln.lower()
    ]
    sizes = []
    for args in scans:
        _, found = cast(
            tuple[int, dict[bytes, bytes]], raw.hscan(steps_key, int(args[2]), count=int(args[4]))
        )
        sizes.append(sum(len(k) + len(v) for k, v in found.items()))
    return sizes


def _ends_pages(client: Client, run_id: str) -> list[int]:
    """Bytes of each HSCAN reply of ``get_run_steps_ends`` (3 first, 3 last)."""
    reader = HscanPages(client.redis)
    ends = drive(cast(redis.Redis, reader), previews.get_run_steps_ends(client.keys, run_id, 3, 3))
    assert ends is not None
    assert [s.name for s in ends.first] == ["s0000", "s0001", "s0002"]
    assert ends.omitted == ends.total - 6
    return reader.pages


def test_a_step_bytes_far_too_big_does_not_read_a_record_a_call(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    run_id = _recorded_run(client, registry, SMALL, 7)
    raw.hset(client.keys.run(run_id), "stepBytes", str(10**15))

    counts = command_counts(raw, lambda: _retry(client, run_id))
    assert client.handle(run_id).result(timeout=5) == SMALL
    assert counts.get("hgetall", 0) == 0, counts
    assert counts.get("hscan", 0) <= MOST_CALLS, (
        f"the worker read {SMALL} step records in {counts.get('hscan')} HSCAN calls"
    )

    got = _ends_pages(client, run_id)
    assert len(got) <= MOST_CALLS, (
        f"get_run_steps_ends read {SMALL} step records in {len(got)} HSCAN calls"
    )


def test_big_steps_without_step_bytes_come_in_bounded_replies(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str
) -> None:
    run_id = _recorded_run(client, registry, BIG, BIG_OUTPUT)
    raw.hdel(client.keys.run(run_id), "stepBytes")
    steps_key = client.keys.run_steps(run_id)
    bound = hscan_bound(raw, steps_key)
    assert bound < BIG * len(BIG_OUTPUT) // 3  # (one call for all: the defect)

    with monitor(redis_url) as mon:
        counts = command_counts(raw, lambda: _retry(client, run_id))
        lines = mon.snapshot()
    assert client.handle(run_id).result(timeout=5) == BIG
    assert counts.get("hgetall", 0) == 0, (
        f"the claim read {BIG} step records of {BIG * len(BIG_OUTPUT):,} bytes in one "
        f"HGETALL ({counts})"
    )
    sizes = _replayed(raw, steps_key, lines)
    assert sizes, "the worker did not read the steps by HSCAN"
    assert sum(sizes) >= BIG * len(BIG_OUTPUT)  # every record came
    assert max(sizes) <= bound, (
        f"the worker read {max(sizes):,} bytes of step records in one HSCAN call "
        f"({len(sizes)} call(s)), over {bound:,}"
    )

    got = _ends_pages(client, run_id)
    assert sum(got) >= BIG * len(BIG_OUTPUT)
    assert max(got) <= bound, (
        f"get_run_steps_ends read {max(got):,} bytes in one HSCAN call "
        f"({len(got)} call(s)), over {bound:,}"
    )


def test_a_resume_with_a_step_bytes_far_too_big_does_not_read_a_record_a_call(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """resume_run reads the records by HSCAN pages inside the script (it drops
    those not succeeded), their COUNT set by the client from the bytes that came."""
    run_id = _recorded_run(client, registry, SMALL, 7, retry=False)
    raw.hset(client.keys.run(run_id), "stepBytes", str(10**15))
    counts = command_counts(raw, lambda: client.resume_run(run_id))
    assert counts.get("hgetall", 0) == 0, counts
    assert counts.get("hscan", 0) <= MOST_CALLS, (
        f"resume_run read {SMALL} step records in {counts.get('hscan')} HSCAN calls"
    )
    assert raw.hlen(client.keys.run_steps(run_id)) == SMALL  # every one kept


def test_a_resume_of_big_steps_without_step_bytes_reads_bounded_pages(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str
) -> None:
    run_id = _recorded_run(client, registry, BIG, BIG_OUTPUT, retry=False)
    raw.hdel(client.keys.run(run_id), "stepBytes")
    steps_key = client.keys.run_steps(run_id)
    bound = hscan_bound(raw, steps_key)
    assert bound < BIG * len(BIG_OUTPUT) // 3  # (one call for all: the defect)
    with monitor(redis_url) as mon:
        counts = command_counts(raw, lambda: client.resume_run(run_id))
        lines = mon.snapshot()
    assert counts.get("hgetall", 0) == 0, (
        f"resume_run read {BIG} step records of {BIG * len(BIG_OUTPUT):,} bytes in one "
        f"HGETALL ({counts})"
    )
    sizes = _replayed(raw, steps_key, lines)
    assert sum(sizes) >= BIG * len(BIG_OUTPUT)  # every record read
    assert max(sizes) <= bound, (
        f"resume_run read {max(sizes):,} bytes of step records in one HSCAN call "
        f"({len(sizes)} call(s)), over {bound:,}"
    )
    assert raw.hlen(steps_key) == BIG  # every one kept


@pytest.mark.parametrize(("rows", "hint"), [(2, False), (1000, False), (1000, True)])
def test_a_retry_of_small_steps_replays_them_with_or_without_step_bytes(
    client: Client, registry: Registry, raw: redis.Redis, rows: int, hint: bool
) -> None:
    """A run recorded before ``stepBytes`` existed (none in its hash) with 2 to
    1,000 small steps: its claim no longer carries the records (their size is
    unknown), the worker reads them by pages from one record up (1 + 2 + ... +
    512: 10 calls for 1,000) and replays every one, running none again. With
    ``stepBytes`` (every run recorded since) the claim carries them in its reply
    as before: one HGETALL, no HSCAN."""
    ran: Counter[str] = Counter()
    run_id = _recorded_run(client, registry, rows, 7, ran=ran)
    assert len(ran) == rows
    size = raw.hget(client.keys.run(run_id), "stepBytes")
    assert size is not None and 0 < int(size) < 1 << 20
    if not hint:
        raw.hdel(client.keys.run(run_id), "stepBytes")

    counts = command_counts(raw, lambda: _retry(client, run_id))
    assert client.handle(run_id).result(timeout=5) == rows
    assert set(ran.values()) == {1}, "a recorded step ran again"
    if hint:
        assert counts.get("hgetall", 0) == 1 and counts.get("hscan", 0) == 0, counts
    else:
        assert counts.get("hgetall", 0) == 0, counts
        assert 1 <= counts.get("hscan", 0) <= MOST_CALLS, counts
