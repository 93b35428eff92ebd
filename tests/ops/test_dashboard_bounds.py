"""Every dashboard page is bounded in Redis work and response size, whatever one run
holds: a run with thousands of steps (a loop of ``ctx.step.run(f"item-{i}")``), each
with a sizeable output, shows a bounded page that says how many steps it has, and
auto-refreshing it does not read the whole steps hash every few seconds."""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import msgspec

from redflow_mp import Client, Registry, define_workflow
from redflow_mp.codec import StoredStep, encode_step
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
    assert "<h2>Input</h2><pre>[\n  0,\n  1,\n  2," in body, body[:3000]
    assert "bytes in all)" in body
    assert len(body) < 200_000
    # The raw JSON (8 MB) and its indented text are held, not a million Python ints.
    assert peak < 40_000_000, f"peak {peak / 1e6:.0f} MB to show one run"


def test_a_large_payload_that_is_not_json_or_nested_too_deeply_shows_its_raw_text() -> None:
    from redflow_mp.queries import _json_preview

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
