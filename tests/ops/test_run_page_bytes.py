"""The dashboard's run page, which reloads itself every few seconds, reads what it
shows, not the whole run hash.

It read the run by HGETALL: a run with an 8 MiB input and an 8 MiB output
(``max_payload_bytes``, the default) was 16 MB read at every reload, for a page
that shows 100,000 characters of each. It reads the fields it shows (HMGET), the
payloads' sizes (HSTRLEN), and an input or output only up to
``previews.PREVIEW_READ_BYTES``: a larger one is named by its size.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, define_workflow
from redflow_supervisor.ops.dashboard import make_app
from tests.ops.test_dashboard_bounds import _get

pytestmark = pytest.mark.timeout(120)

#: 8 MiB of JSON: a string just under max_payload_bytes.
BIG = '"' + "p" * ((8 << 20) - 64) + '"'
#: What one reload of the run page may read: the payloads it shows (at most
#: 1 MiB each) and the rest, with headroom; far below one 8 MiB payload.
RELOAD_BYTES = 3 << 20


def _sent(raw: redis.Redis) -> int:
    return int(raw.info("stats")["total_net_output_bytes"])


def test_reloading_the_run_page_of_a_run_with_8_mib_payloads_reads_bounded_bytes(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow("big-payloads", registry=registry, queue="nobody-claims")
    def big(ctx: Any) -> None:  # never executed: the output is written below
        return None

    client.sync_registry(registry, app="run-page")
    run_id = big.run("p" * ((8 << 20) - 64), client=client).id
    key = client.keys.run(run_id)
    raw.hset(key, mapping={"outputJson": BIG, "finishedAt": "1", "finalAttempt": "1"})
    assert int(raw.hstrlen(key, "inputJson")) > 8_000_000
    app = make_app(client, read_only=True)
    for _ in range(3):  # the page reloading itself
        before = _sent(raw)
        status, body = _get(app, "/run", f"id={run_id}")
        sent = _sent(raw) - before
        assert status.startswith("200"), body[:500]
        assert sent <= RELOAD_BYTES, (
            f"a reload of the run page read {sent:,} bytes from Redis "
            f"(its input and output: {2 * len(BIG):,})"
        )
    assert body.count("bytes of JSON, more than this page reads") == 2, body[:3000]
    assert f"{len(BIG):,} bytes of JSON" in body  # the output's size
    assert len(body) < 200_000


def test_a_payload_under_the_read_bound_is_shown_as_before(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """Up to the read bound the page reads it and shows it (its head, indented,
    past 100,000 characters); the error and the wait record too."""

    @define_workflow("mid-payloads", registry=registry, queue="nobody-claims")
    def mid(ctx: Any) -> None:  # never executed
        return None

    client.sync_registry(registry, app="run-page")
    data = list(range(100_000))  # ~590 KB of JSON
    run_id = mid.run(data, client=client).id
    key = client.keys.run(run_id)
    raw.hset(key, mapping={"outputJson": '{"small": "out"}', "status": "failed"})
    raw.hset(key, "errorJson", '{"type": "Boom", "message": "it broke", "retryable": false}')
    status, body = _get(make_app(client, read_only=True), "/run", f"id={run_id}")
    assert status.startswith("200"), body[:500]
    assert "<h2>Input</h2><pre>[\n  0,\n  1,\n  2," in body, body[:3000]
    assert "bytes in all)" in body
    assert "&quot;small&quot;: &quot;out&quot;" in body or '"small": "out"' in body
    assert "Boom" in body and "it broke" in body
