"""Durable waits in the operator's tools: ``redflow runs list --status suspended``,
``runs show`` saying what a run waits for, ``redflow send-event``, the dashboard's
run page."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, wait_until
from tests.ops.conftest import Result

Redflow = Callable[..., Result]


def _suspended_listener(client: Client, registry: Registry, workers: WorkerPool) -> str:
    @define_workflow("ops-listener", registry=registry)
    def listener(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("ev", "approve", timeout=3600)

    workers.start()
    handle = listener.run()
    wait_until(lambda: (s := handle.state()) is not None and s.status == "suspended", 15)
    return handle.id


def test_cli_lists_shows_and_wakes_a_suspended_run(
    redflow: Redflow, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    run_id = _suspended_listener(client, registry, workers)
    listed = redflow("runs", "list", "--status", "suspended", "--json")
    assert listed.code == 0, listed
    assert [r["id"] for r in json.loads(listed.out)] == [run_id]
    shown = redflow("runs", "show", run_id)
    assert shown.code == 0, shown
    line = next(x for x in shown.out.splitlines() if x.startswith("waits for"))
    assert "event 'approve'" in line and "at most until" in line and "'ev'" in line
    data = json.loads(redflow("runs", "show", run_id, "--json").out)
    assert data["run"]["wait"]["events"] == ["approve"]

    # a repeated command with one --idempotency-key stores one event
    for _ in range(2):
        keyed = redflow("send-event", run_id, "other", "--idempotency-key", "k1", "--json")
        assert keyed.code == 0 and json.loads(keyed.out)["stored"] is True, keyed
    assert client.redis.llen(client.keys.run_events(run_id, "other")) == 1
    bad = redflow("send-event", run_id, "approve", "--payload", "{nope")
    assert bad.code == 2 and "not valid JSON" in bad.err, bad
    sent = redflow("send-event", run_id, "approve", "--payload", '{"ok": true}')
    assert sent.code == 0 and "sent event approve" in sent.out, sent
    assert client.handle(run_id).result(timeout=15) == {"ok": True}
    again = redflow("send-event", run_id, "approve")
    assert again.code == 1 and "unknown or finished" in again.err, again
    missing = redflow("send-event", "no-such-run", "approve", "--json")
    assert missing.code == 1 and json.loads(missing.out)["stored"] is False


def test_dashboard_run_page_shows_the_wait(
    dashboard: Callable[..., str], client: Client, registry: Registry, workers: WorkerPool
) -> None:
    run_id = _suspended_listener(client, registry, workers)
    base = dashboard()
    with urllib.request.urlopen(f"{base}/run?id={run_id}", timeout=10) as resp:
        page = resp.read().decode()
    assert "waits for" in page and "approve" in page and "suspended" in page
