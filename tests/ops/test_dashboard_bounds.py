"""Every dashboard page is bounded in Redis work and response size, whatever one run
holds: a run with thousands of steps (a loop of ``ctx.step.run(f"item-{i}")``), each
with a sizeable output, shows a bounded page that says how many steps it has, and
auto-refreshing it does not read the whole steps hash every few seconds."""

from __future__ import annotations

import html
import io
import re
import tracemalloc
from typing import Any

import msgspec
import pytest

from redflow_mp import Client, Registry, define_workflow, listing, queries
from redflow_mp.codec import StoredStep, encode_step
from redflow_supervisor.ops import pages
from redflow_supervisor.ops.dashboard import make_app
from redflow_supervisor.ops.pages import MAX_STEPS_SHOWN

STEPS = 3000
OUTPUT = "o" * 2000


def _get(app: Any, path: str, query: str) -> tuple[str, str]:
    got: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"] = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1",
    }
    body = b"".join(app(environ, start_response)).decode()
    return got["status"], body


def _hscan_entries(client: Client) -> tuple[int, int]:
    stats = client.redis.info("commandstats")
    hscan = stats.get("cmdstat_hscan", {"calls": 0})
    hgetall = stats.get("cmdstat_hgetall", {"calls": 0})
    return int(hscan["calls"]), int(hgetall["calls"])


def test_a_run_with_thousands_of_steps_gives_a_bounded_page(
    client: Client, registry: Registry
) -> None:
    @define_workflow("many-steps", registry=registry)
    def many(ctx: Any) -> None:  # never executed: the steps are written below
        return None

    client.sync_registry(registry, app="bounds")
    run_id = many.run({}, client=client).id
    steps_key = client.keys.run_steps(run_id)
    output = msgspec.json.encode(OUTPUT).decode()
    with client.redis.pipeline(transaction=False) as pipe:
        for i in range(1, STEPS + 1):
            record = StoredStep(
                seq=i,
                status="succeeded",
                started_at=1_000 + i,
                finished_at=1_001 + i,
                attempt=1,
                output_json=output,
            )
            pipe.hset(steps_key, f"item-{i}", encode_step(record))
        pipe.execute()

    app = make_app(client, read_only=True)
    calls_before, hgetall_before = _hscan_entries(client)
    status, body = _get(app, "/run", f"id={run_id}")
    calls_after, hgetall_after = _hscan_entries(client)

    assert status.startswith("200"), body[:500]
    rows = body.count("<tr class='step'>")
    assert rows <= MAX_STEPS_SHOWN, f"{rows} step rows rendered"
    assert len(body) < 2_000_000, f"a {len(body):,}-byte page for one run"
    # The page says the run has more steps than it shows.
    assert f"This run has {STEPS:,} steps; shown are {rows}" in body, body[:3000]
    # Bounded Redis work: a few HSCAN pages, no HGETALL of the steps.
    assert calls_after - calls_before <= 3, calls_after - calls_before
    assert hgetall_after - hgetall_before <= 1  # the run hash itself


def test_a_run_with_few_steps_shows_them_all_in_order(client: Client, registry: Registry) -> None:
    @define_workflow("few-steps", registry=registry)
    def few(ctx: Any) -> None:  # never executed: the steps are written below
        return None

    client.sync_registry(registry, app="bounds")
    run_id = few.run({}, client=client).id
    for i in (3, 1, 2):
        record = StoredStep(seq=i, status="succeeded", started_at=i, finished_at=i, attempt=1)
        client.redis.hset(client.keys.run_steps(run_id), f"s{i}", encode_step(record))
    status, body = _get(make_app(client, read_only=True), "/run", f"id={run_id}")
    assert status.startswith("200")
    assert "This run has" not in body
    assert body.index("<td>s1</td>") < body.index("<td>s2</td>") < body.index("<td>s3</td>")


def test_a_run_with_an_8_mb_input_is_shown_without_decoding_it(
    client: Client, registry: Registry
) -> None:
    @define_workflow("big-input", registry=registry)
    def big(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="bounds")
    data = list(range(1_150_000))  # 8 MB of JSON: the default max_payload_bytes
    run_id = big.run(data, client=client).id
    size = int(client.redis.hstrlen(client.keys.run(run_id), "inputJson"))
    assert 7_000_000 < size <= 8 * 1024 * 1024
    del data
    app = make_app(client, read_only=True)
    tracemalloc.start()
    try:
        status, body = _get(app, "/run", f"id={run_id}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.startswith("200"), body[:500]
    # Over previews.PREVIEW_READ_BYTES it is not even read: the page names its size
    # (a payload under it shows its head: tests/ops/test_run_page_bytes.py).
    assert f"<h2>Input</h2><pre>({size:,} bytes of JSON, more than this page reads" in body
    assert len(body) < 200_000
    # The raw JSON (8 MB) and its indented text are held, not a million Python ints.
    assert peak < 40_000_000, f"peak {peak / 1e6:.0f} MB to show one run"


def test_a_large_payload_that_is_not_json_or_nested_too_deeply_shows_its_raw_text() -> None:
    from redflow_mp.previews import _json_preview

    assert _json_preview(b"{not json" * 10, 20) == "{not json{not json{n\n… (90 bytes in all)"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _json_preview(deep, 5) == "[[[[[\n… (200,000 bytes in all)"
    # A cut through a multi-byte character does not raise.
    assert _json_preview('"ééé"'.encode(), 2).startswith('"é')


def test_the_runs_page_costs_a_few_commands_whatever_the_number_of_workflows(
    client: Client, registry: Registry
) -> None:
    for i in range(300):
        define_workflow(f"wf-{i:03d}", registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="bounds")
    app = make_app(client, read_only=True)

    def calls() -> int:
        stats = client.redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    before = calls()
    status, body = _get(app, "/runs", "")
    used = calls() - before
    assert status.startswith("200")
    # The workflow filter still offers every workflow's name.
    assert "<option value='wf-000'>" in body and "<option value='wf-299'>" in body
    assert used <= 10, f"{used} Redis commands for one runs page (300 workflows)"


def test_a_deep_page_of_a_filtered_listing_does_not_walk_the_runs_before_it(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million runs of one status: the last page of that status walked the whole
    creation index (2 s per view, 0.9 s of Redis, every 5 s with auto-refresh).
    The "older" link carries the last run shown, so the next page starts there.
    The index sizes are scaled down here (the same code paths, 6,000 runs)."""
    monkeypatch.setattr(listing, "_SCAN_LIMIT", 100)
    monkeypatch.setattr(listing, "_READ_LIMIT", 1000)
    monkeypatch.setattr(listing, "_CHUNK_MIN", 100)
    monkeypatch.setattr(listing, "_CHUNK_MAX", 100)

    @define_workflow("deep", registry=registry)
    def deep(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="bounds")
    for _ in range(6):
        client.run_many_by_name("deep", [{}] * 1000)
    app = make_app(client, read_only=True)

    status, first = _get(app, "/runs", "status=queued")
    assert status.startswith("200")
    older = re.search(r"<a href='(/runs\?[^']*page=2[^']*)'>older", first)
    assert older is not None, first[-1500:]
    newest = client.list_runs(status="queued", limit=25)
    assert f"after={newest[-1].id}" in html.unescape(older.group(1))

    # Page 200 (offset 4,975), reached by its "older" link from page 199.
    previous = client.list_runs(status="queued", limit=25, offset=198 * 25)
    want = [r.id for r in client.list_runs(status="queued", limit=25, offset=199 * 25)]
    before = int(client.redis.info("commandstats")["cmdstat_zrevrange"]["calls"])
    status, body = _get(app, "/runs", f"status=queued&page=200&after={previous[-1].id}")
    walked = int(client.redis.info("commandstats")["cmdstat_zrevrange"]["calls"]) - before
    assert status.startswith("200")
    assert re.findall(r"<a href='/run\?id=([0-9A-Z]+)'>", body) == want
    assert walked <= 2, f"{walked} chunks of 100 walked for page 200"


@pytest.mark.parametrize(
    "limits",
    [(100, 1000, 100, 100), (100, 5000, 100, 400), (10_000, 200_000, 1000, 32_000)],
    ids=["walk", "walk-then-read-whole", "defaults"],
)
def test_a_page_after_a_cursor_is_the_page_at_its_offset(
    client: Client,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    limits: tuple[int, int, int, int],
) -> None:
    names = ("_SCAN_LIMIT", "_READ_LIMIT", "_CHUNK_MIN", "_CHUNK_MAX")
    for name, value in zip(names, limits, strict=True):
        monkeypatch.setattr(listing, name, value)
    for name in ("cur-a", "cur-b"):
        define_workflow(name, registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="bounds")
    handles = client.run_many_by_name("cur-a", [{}] * 1500)
    client.run_many_by_name("cur-b", [{}] * 1500)
    for h in handles[::3]:  # some canceled: a sparse status within one workflow
        client.cancel_run(h.id)
    size = 40
    for workflow, status in [
        (None, None),
        (None, "queued"),
        ("cur-a", None),
        ("cur-a", "canceled"),
    ]:
        prev: str | None = None
        for page in range(0, 60, 7):
            want = client.list_runs(workflow, status, limit=size, offset=page * size)
            if page:
                last = client.list_runs(workflow, status, limit=1, offset=page * size - 1)
                if not last:
                    break
                prev = last[0].id
            got = queries.list_runs_all(
                client, workflow, status, limit=size, offset=page * size, after=prev
            )
            assert [r.id for r in got] == [r.id for r in want], (workflow, status, page)


def test_the_queues_page_does_not_read_every_queue_name_when_there_are_too_many(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue names are the callers' (``queue_override`` with user data): a million
    of them made every load of the queues page one SMEMBERS of a million (Redis
    blocked about a quarter of a second, every 5 s). Past QUEUES_SORTED_LIMIT
    (50,000) the page scans them, a page at a time. Scaled down: a limit of 50,
    300 queues."""
    monkeypatch.setattr(pages, "QUEUES_SORTED_LIMIT", 50)

    @define_workflow("qs", registry=registry)
    def qs(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="bounds")
    for i in range(300):
        client.run_by_name("qs", {}, queue_override=f"user-{i:03d}")
    app = make_app(client, read_only=True, page_size=25)

    def smembers_calls() -> int:
        stats = client.redis.info("commandstats")
        return int(stats.get("cmdstat_smembers", {"calls": 0})["calls"])

    seen: set[str] = set()
    query = ""
    for _ in range(100):
        before = smembers_calls()
        status, body = _get(app, "/queues", query)
        assert status.startswith("200"), body[:500]
        assert smembers_calls() == before, "the queues page read every queue name"
        shown = re.findall(r"<tr><td>(user-\d{3})</td>", body)
        assert len(shown) <= 60, len(shown)
        seen.update(shown)
        nxt = re.search(r"<a href='/queues\?([^']*)'>next", body)
        if nxt is None:
            break
        query = html.unescape(nxt.group(1))
    assert seen == {f"user-{i:03d}" for i in range(300)}


def test_the_workflows_page_shows_one_page_of_workflows(client: Client, registry: Registry) -> None:
    """1,000 workflows: every load of the workflows page (every 5 s) read every
    workflow's metadata and counts (3,005 commands, 290 KB, 0.1-0.7 s). It shows
    one page of them by name, with a pager."""
    for i in range(300):
        define_workflow(f"flow-{i:03d}", registry=registry)(lambda ctx: None)
    client.sync_registry(registry, app="bounds")
    app = make_app(client, read_only=True, page_size=25)

    def hgetall_calls() -> int:
        stats = client.redis.info("commandstats")
        return int(stats.get("cmdstat_hgetall", {"calls": 0})["calls"])

    before = hgetall_calls()
    status, body = _get(app, "/workflows", "")
    read = hgetall_calls() - before
    assert status.startswith("200")
    shown = re.findall(r">(flow-\d{3})</a></td>", body)
    assert shown == [f"flow-{i:03d}" for i in range(25)], shown[:30]
    assert read <= 26, f"{read} workflow hashes read for one page of 25"
    total = len(queries.workflow_names_all(client))  # 300 and the ops fixtures' few
    assert f"page 1 of {total} workflows" in body
    status, second = _get(app, "/workflows", "page=12")
    assert re.findall(r">(flow-\d{3})</a></td>", second) == [
        f"flow-{i:03d}" for i in range(275, 300)
    ]
    assert "← previous" in second and ("next →" in second) == (total > 300)


def test_large_step_outputs_are_shown_without_decoding_them(
    client: Client, registry: Registry
) -> None:
    """50 steps with 1 MB outputs: the page decoded each into Python objects and
    pretty-printed it whole to show 4,000 characters (6 s and 322 MB a view)."""

    @define_workflow("big-steps", registry=registry)
    def big(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="bounds")
    run_id = big.run({}, client=client).id
    output = msgspec.json.encode(list(range(150_000))).decode()  # about 1 MB
    for i in range(20):
        record = StoredStep(
            seq=i + 1,
            status="succeeded",
            started_at=1_000 + i,
            finished_at=1_001 + i,
            attempt=1,
            output_json=output,
        )
        client.redis.hset(client.keys.run_steps(run_id), f"s{i}", encode_step(record))
    app = make_app(client, read_only=True)
    tracemalloc.start()
    try:
        status, body = _get(app, "/run", f"id={run_id}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.startswith("200"), body[:500]
    assert body.count("<tr class='step'>") == 20
    assert body.count("<pre>[\n  0,\n  1,\n  2,") == 20, body[:3000]
    raw = 20 * len(output)
    assert peak < 4 * raw, f"peak {peak / 1e6:.0f} MB for {raw / 1e6:.0f} MB of step outputs"
