"""A table of runs (the dashboard's runs page, ``redflow runs list``) does not read
the runs' payloads, which it never shows.

Inputs and outputs go up to ``max_payload_bytes`` (8 MiB by default) each. The
runs page read every listed run whole (HGETALL): 25 runs with 8 MiB inputs were
a 400 MB pipeline at every refresh (5 s by default), which held another client
365 ms and doubled the server's memory for the reply; ``redflow runs list``
read its pages of 1,000 runs the same way. ``--json`` prints whole records and
still reads them. ``redflow runs watch`` read the run whole at every look (every
0.5 s): it reads it whole once, when the run has ended.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, define_workflow, listing, queries
from redflow_supervisor.ops.dashboard import make_app
from tests.ops.conftest import Result

pytestmark = pytest.mark.timeout(120)

RUNS = 6
#: Each run's input: 2 MiB of JSON text.
INPUT = "i" * (2 << 20)
#: What a table of RUNS runs may cost in bytes sent by Redis: a few KiB a run,
#: with headroom, far below one input.
TABLE_BYTES = 1 << 20


def _sent(raw: redis.Redis, action: Callable[[], Any]) -> tuple[Any, int]:
    before = int(raw.info("stats")["total_net_output_bytes"])
    got = action()
    return got, int(raw.info("stats")["total_net_output_bytes"]) - before


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


@pytest.fixture()
def big_runs(client: Client, registry: Registry) -> list[str]:
    @define_workflow("big-input", registry=registry, queue="nobody-claims")
    def big_input(ctx: Any) -> None:  # never executed: the runs stay queued
        return None

    client.sync_registry(registry, app="table-payloads")
    return [big_input.run(INPUT, client=client).id for _ in range(RUNS)]


def test_the_dashboard_runs_page_reads_no_payload(
    client: Client, raw: redis.Redis, big_runs: list[str]
) -> None:
    app = make_app(client, read_only=True)
    (status, body), sent = _sent(raw, lambda: _get(app, "/runs", ""))
    assert status.startswith("200")
    assert all(run_id in body for run_id in big_runs)
    assert sent <= TABLE_BYTES, (
        f"the runs page of {RUNS} runs read {sent:,} bytes from Redis "
        f"(their inputs: {RUNS * len(INPUT):,})"
    )


def test_redflow_runs_list_reads_no_payload_but_json_does(
    raw: redis.Redis, big_runs: list[str], redflow: Callable[..., Result]
) -> None:
    result, sent = _sent(raw, lambda: redflow("runs", "list"))
    assert result.code == 0, str(result)
    assert all(run_id in result.out for run_id in big_runs)
    assert "queued" in result.out
    assert sent <= TABLE_BYTES, (
        f"redflow runs list of {RUNS} runs read {sent:,} bytes from Redis "
        f"(their inputs: {RUNS * len(INPUT):,})"
    )
    # --json prints the whole records: the inputs are read and printed
    result = redflow("runs", "list", "--limit", "1", "--json")
    assert result.code == 0, str(result)
    (record,) = json.loads(result.out)
    assert record["id"] == big_runs[-1] and record["input"] == INPUT


def test_redflow_runs_watch_reads_no_payload_while_the_run_goes_on(
    raw: redis.Redis, big_runs: list[str], redflow: Callable[..., Result]
) -> None:
    run_id = big_runs[0]  # queued for good: nobody claims its queue
    result, sent = _sent(
        raw, lambda: redflow("runs", "watch", run_id, "--interval", "0.05", "--timeout", "1")
    )
    assert result.code == 3, str(result)  # still queued when the timeout ran out
    assert "queued" in result.out
    assert sent < len(INPUT), (
        f"redflow runs watch of a queued run read {sent:,} bytes from Redis in 1 s "
        f"(its input: {len(INPUT):,})"
    )


def test_a_run_hash_holding_no_table_field_is_listed_and_watched_as_before(
    client: Client, registry: Registry, raw: redis.Redis, redflow: Callable[..., Result]
) -> None:
    """A run hash left with none of ``listing.ROW_FIELDS`` (a hand edit kept only its
    input) is a run for a whole read (HGETALL): the tables listed it, ``runs
    watch`` watched it. Read by HMGET of those fields it came back empty, as an
    unknown run does: the tables dropped it, and ``runs watch`` said "not found"
    (exit 1, not 3)."""

    @define_workflow("bare-hash", registry=registry, queue="nobody-claims")
    def bare_hash(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="table-payloads")
    kept = bare_hash.run({"kept": 1}, client=client).id
    bare = bare_hash.run({"bare": 1}, client=client).id
    raw.hdel(client.keys.run(bare), *listing.ROW_FIELDS)
    assert raw.exists(client.keys.run(bare)) and raw.hget(client.keys.run(bare), "inputJson")
    whole = [r.id for r in client.list_runs()]
    assert bare in whole and kept in whole  # the public API (whole records) lists it

    rows = [r.id for r in queries.list_runs_all(client, payloads=False)]
    assert rows == whole, f"a table lists {rows}, a whole read {whole}"
    listed = redflow("runs", "list")
    assert listed.code == 0, str(listed)
    assert bare in listed.out, f"redflow runs list left out the run {bare}:\n{listed.out}"
    status, body = _get(make_app(client, read_only=True), "/runs", "")
    assert status.startswith("200") and kept in body
    assert bare in body, f"the dashboard's runs page left out the run {bare}"

    watched = redflow("runs", "watch", bare, "--timeout", "1")
    assert watched.code == 3, f"redflow runs watch of the run exited {watched.code}: {watched}"
    assert "still queued" in watched.err, str(watched)
    assert queries.get_run_row_any(client, "01" + "0" * 24) is None  # unknown: still None
