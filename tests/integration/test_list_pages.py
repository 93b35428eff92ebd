"""Deep pages of ``list_runs`` / ``iter_runs``: the same runs in the same order
as the listing read whole, no run repeated or skipped across pages while runs
are enqueued, and a deep page that does not cost the runs before it.

Sizes: 20,000 runs (the index sizes cross the listing's thresholds: a status
read whole below 10,000 runs, walked above), built with ``run_many``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, create_client, define_workflow, listing, queries
from redflow_mp.aio import create_async_client
from redflow_mp.codec import text
from redflow_mp.ids import new_token

pytestmark = pytest.mark.timeout(300)

RUNS = 20_000


def _noop(ctx: Any) -> None:  # never executed
    return None


def _calls(raw: redis.Redis, *names: str) -> int:
    stats = raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names)


@pytest.fixture()
def loaded(client: Client, registry: Registry) -> Iterator[Client]:
    """RUNS queued runs, in turn of workflows ``a`` and ``b``; one in 8 of ``a``'s
    canceled (a sparse status, read whole), the rest queued (walked)."""
    for name in ("a", "b"):
        define_workflow(name, registry=registry)(_noop)
    client.sync_registry(registry, app="pages")
    handles = []
    for _ in range(RUNS // 2000):
        handles += client.run_many_by_name("a", [{}] * 1000)
        client.run_many_by_name("b", [{}] * 1000)
    for h in handles[::8]:
        client.cancel_run(h.id)
    yield client


def _reference(
    raw: redis.Redis, client: Client, workflow: str | None, status: str | None
) -> list[str]:
    """The listing by definition: runs:created newest first (ZREVRANGE order),
    kept when in the workflow's and the status's index."""
    keys = client.keys
    ids = [text(m) for m in raw.zrevrange(keys.runs_created, 0, -1)]
    if workflow is not None:
        ids = [
            i
            for i, s in zip(ids, raw.zmscore(keys.workflow_runs(workflow), ids), strict=True)
            if s is not None
        ]
    if status is not None:
        ids = [
            i
            for i, s in zip(ids, raw.zmscore(keys.runs_status(status), ids), strict=True)
            if s is not None
        ]
    return ids


FILTERS = [
    (None, None),
    ("a", None),
    (None, "canceled"),
    (None, "queued"),
    ("a", "queued"),
    ("a", "canceled"),
]


@pytest.mark.parametrize(("workflow", "status"), FILTERS)
def test_pages_by_offset_and_by_cursor_are_the_listing(
    raw: redis.Redis, loaded: Client, workflow: str | None, status: str | None
) -> None:
    want = _reference(raw, loaded, workflow, status)
    assert len(want) >= 1000
    for offset in (0, 37, len(want) // 2, len(want) - 10):
        got = [r.id for r in loaded.list_runs(workflow, status, limit=25, offset=offset)]
        assert got == want[offset : offset + 25], offset
        after = want[offset - 1] if offset else None
        by_cursor = [r.id for r in loaded.list_runs(workflow, status, limit=25, after=after)]
        assert by_cursor == want[offset : offset + 25], offset


def test_a_deep_page_of_a_workflow_reads_one_rank_range(raw: redis.Redis, loaded: Client) -> None:
    """``list_runs(workflow=...)`` at offset 9,000 of 10,000 walked the workflow's
    index from the top, checking each run in runs:created (at a million runs of
    one workflow, offset 500,000: 1.3 s of Redis). It is one ZREVRANGE now."""
    want = _reference(raw, loaded, "a", None)
    raw.config_resetstat()
    got = [r.id for r in loaded.list_runs("a", limit=50, offset=9000)]
    read = _calls(raw, "zrevrange", "zrange", "zmscore")
    assert got == want[9000:9050]
    assert read == 1, f"{read} index reads for one page at offset 9000"


def test_a_deep_page_of_a_large_status_is_placed_from_the_other_statuses(
    raw: redis.Redis, loaded: Client
) -> None:
    """``list_runs(status=...)`` by offset walked (or read whole) every run before
    the page: at a million finished runs, ``--status succeeded`` at offset 979,950
    cost 1.2 s of Redis and 590 commands. The runs NOT of that status (the other
    status indexes: 1,250 canceled here) now place the page; the walk starts at it."""
    want = _reference(raw, loaded, None, "queued")
    assert len(want) == RUNS - RUNS // 16
    for offset in (8000, 12_345, len(want) - 30):
        raw.config_resetstat()
        got = [r.id for r in loaded.list_runs(status="queued", limit=50, offset=offset)]
        checked = _calls(raw, "zmscore")
        read = _calls(raw, "zrange")
        assert got == want[offset : offset + 50], offset
        assert checked <= 2, f"{checked} ZMSCOREs of 2,000 runs for one page at offset {offset}"
        assert read <= 1, f"{read} ZRANGE chunks for one page at offset {offset}"


def test_a_deep_page_is_walked_when_the_status_indexes_disagree(
    raw: redis.Redis, loaded: Client
) -> None:
    """A run of runs:created in no status index (written by hand, a newer
    version's status): the other statuses cannot place the page; it is walked,
    and is the listing still."""
    keys = loaded.keys
    stray = text(raw.zrevrange(keys.runs_created, 100, 100)[0])
    raw.zrem(keys.runs_status("queued"), stray)
    raw.zadd(keys.runs_status("someday"), {stray: 1})
    want = _reference(raw, loaded, None, "queued")
    for offset in (9000, len(want) - 30):
        got = [r.id for r in loaded.list_runs(status="queued", limit=50, offset=offset)]
        assert got == want[offset : offset + 50], offset


def test_a_deep_page_is_walked_when_another_status_index_is_of_another_type(
    raw: redis.Redis, loaded: Client, redis_url: str, prefix: str, registry: Registry
) -> None:
    """A status index the listing does not filter by is a key of another type (a
    neighbour's, written by hand): placing the page from the other statuses read
    it, and ``list_runs(status="queued", offset=9000)``, which walks runs:created
    and the queued index alone, failed with WRONGTYPE. The page is walked, as
    before the other statuses placed it; the sync and async listings alike."""
    keys = loaded.keys
    raw.set(keys.runs_status("failed"), "a neighbour's string")
    want = _reference(raw, loaded, None, "queued")
    for offset in (9000, len(want) - 30):
        got = [r.id for r in loaded.list_runs(status="queued", limit=50, offset=offset)]
        assert got == want[offset : offset + 50], offset

    async def listed() -> list[str]:
        aclient = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            runs = await aclient.list_runs(status="queued", limit=50, offset=9000)
        finally:
            await aclient.aclose()
        return [r.id for r in runs]

    assert asyncio.run(listed()) == want[9000:9050]


def test_a_run_that_finishes_while_the_page_is_placed_is_counted_once(
    raw: redis.Redis, loaded: Client
) -> None:
    """The other statuses' indexes are read one after the other: a run that moves
    from one to the next meanwhile (running, then succeeded: a worker's finish)
    was read in both and counted twice among the runs before the page, which
    then started a run too late (a run of the status skipped: the listing
    neither as it was nor as it is)."""
    keys = loaded.keys
    loaded.run_by_name("a", {}, queue_override="late")
    _, done = loaded.scripts.claim(("late",), 60_000, new_token())
    assert done is not None
    assert loaded.scripts.finalize(done.id, done.token, "succeeded", b'"ok"')  # one succeeded
    handle = loaded.run_by_name("a", {}, queue_override="late")  # the newest run
    _, run = loaded.scripts.claim(("late",), 60_000, new_token())
    assert run is not None and run.id == handle.id
    want = _reference(raw, loaded, None, "queued")  # the same before and after its finish
    plan = listing.select_run_ids(keys, None, "queued", 50, 9000)
    batch = next(plan)
    finished = False
    try:
        while True:
            replies = [getattr(raw, name)(*args) for name, args in batch]
            reads_running = any(
                name == "zrange" and args[0] == keys.runs_status("running") for name, args in batch
            )
            if not finished and reads_running:  # the finish lands right after that read
                assert loaded.scripts.finalize(run.id, run.token, "succeeded", b'"ok"')
                finished = True
            batch = plan.send(replies)
    except StopIteration as stop:
        got = stop.value
    assert finished
    assert got == want[9000:9050]


@pytest.mark.parametrize(("workflow", "status"), FILTERS)
def test_paging_by_cursor_while_runs_are_enqueued_repeats_and_skips_nothing(
    raw: redis.Redis, loaded: Client, workflow: str | None, status: str | None
) -> None:
    """Runs enqueued between pages are newer than the cursor: the pages are the
    listing as it was at the first page. A status read whole (canceled: 1,250
    runs) placed the page by ``offset`` despite the cursor, so a page after new
    runs of that status repeated the previous page's runs."""
    want = _reference(raw, loaded, workflow, status)[:1000]
    seen: list[str] = []
    after: str | None = None
    while len(seen) < len(want):
        page = queries.list_runs_all(
            loaded, workflow, status, limit=100, offset=len(seen), after=after
        )
        seen += [r.id for r in page]
        after = seen[-1]
        more = loaded.run_many_by_name(workflow or "b", [{}] * 60)
        if status == "canceled":
            for h in more:
                loaded.cancel_run(h.id)
    assert len(seen) == len(set(seen)), "a run repeated across pages"
    assert seen == want


def test_iter_runs_and_the_async_client_take_the_cursor(
    raw: redis.Redis, loaded: Client, redis_url: str, prefix: str, registry: Registry
) -> None:
    want = _reference(raw, loaded, None, "queued")
    after = want[4999]
    assert [r.id for r in loaded.iter_runs(status="queued", limit=3000, after=after)] == want[
        5000:8000
    ]

    async def listed() -> list[str]:
        aclient = create_async_client(redis_url, prefix=prefix, registry=registry)
        try:
            runs = await aclient.list_runs(status="queued", limit=30, after=after)
        finally:
            await aclient.aclose()
        return [r.id for r in runs]

    assert asyncio.run(listed()) == want[5000:5030]
    with pytest.raises(TypeError, match="after must be a run id"):
        loaded.list_runs(after=5)  # type: ignore[arg-type]


def test_a_cursor_outside_the_walked_index_places_the_page_by_its_time(
    raw: redis.Redis, loaded: Client
) -> None:
    """A run of another workflow (or one gone from the workflow's index) still
    places the page: the runs older than it, by createdAt and id."""
    want_all = _reference(raw, loaded, None, None)
    of_a = set(_reference(raw, loaded, "a", None))
    cursor = next(i for i in want_all[7000:] if i not in of_a)  # a run of b
    older_a = [i for i in want_all[want_all.index(cursor) + 1 :] if i in of_a]
    queued_a = set(_reference(raw, loaded, "a", "queued"))
    for status in (None, "queued"):
        got = [r.id for r in loaded.list_runs("a", status, limit=40, after=cursor)]
        want = older_a if status is None else [i for i in older_a if i in queued_a]
        assert got == want[:40], status


def test_a_cursor_pages_across_shards(
    redis_url: str, prefix: str, registry: Registry, make_client: Callable[..., Client]
) -> None:
    """With several shards, ``after`` was not used (``offset`` placed the page)."""
    sharded = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=3)
    try:
        for i in range(6):
            name = f"s{i}"
            define_workflow(name, registry=registry)(_noop)
        sharded.sync_registry(registry, app="pages")
        for i in range(6):
            sharded.run_many_by_name(f"s{i}", [{}] * 200)
        want = [r.id for r in sharded.list_runs(limit=1200)]
        seen: list[str] = []
        after: str | None = None
        while len(seen) < len(want):
            page = sharded.list_runs(limit=90, offset=len(seen), after=after)
            assert page, len(seen)
            seen += [r.id for r in page]
            after = seen[-1]
            sharded.run_many_by_name("s0", [{}] * 30)
        assert seen == want
    finally:
        sharded.close()


def test_a_sparse_status_is_read_newest_first_not_whole(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A status of 12,000 runs under 9,000 newer runs of other statuses: the walk
    of runs:created finds none of it in 8,000 runs and read the status's index
    whole (20,000 failed runs under the newest: 82 ms of Redis per dashboard
    refresh at a million runs). It reads the index newest first now, until the
    runs left cannot be on the page; the pages are the same. The runs here were
    created a minute apart and failed 0-90 s later in shuffled order, some up to
    30 s before (a failed-over server's clock)."""
    for name in ("a", "b"):
        define_workflow(name, registry=registry)(_noop)
    client.sync_registry(registry, app="pages")
    old = [h.id for _ in range(12) for h in client.run_many_by_name("a", [{}] * 1000)]
    for _ in range(9):
        client.run_many_by_name("b", [{}] * 1000)
    keys = client.keys
    (last,) = raw.zmscore(keys.runs_created, old[-1:])
    assert last is not None
    with raw.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.runs_status("queued"), *old)
        for i, run_id in enumerate(old):
            at = last - (len(old) - 1 - i) * 60_000  # created a minute apart
            pipe.zadd(keys.runs_created, {run_id: at})
            pipe.zadd(keys.workflow_runs("a"), {run_id: at})
            delay = (i * 7919) % 90_000 - (30_000 if i % 97 == 0 else 0)
            pipe.zadd(keys.runs_status("failed"), {run_id: at + delay})
        pipe.execute()
    for workflow in (None, "a"):
        want = _reference(raw, client, workflow, "failed")
        assert len(want) == 12_000
        for offset in (0, 25, 4000, 11_990):
            got = [r.id for r in client.list_runs(workflow, "failed", limit=25, offset=offset)]
            assert got == want[offset : offset + 25], (workflow, offset)
            if offset:
                after = want[offset - 1]
                by_cursor = [
                    r.id for r in client.list_runs(workflow, "failed", limit=25, after=after)
                ]
                assert by_cursor == want[offset : offset + 25], (workflow, offset)
    raw.config_resetstat()
    assert [r.id for r in client.list_runs(status="failed", limit=25)] == want[:25]
    whole = _calls(raw, "zrange")
    checked = _calls(raw, "zmscore")
    assert whole == 0, f"the failed index read whole ({whole} ZRANGE chunks)"
    assert checked <= 10, f"{checked} ZMSCOREs for the first page"
