"""The stand-alone dashboard end to end in headless Chromium (the ``chromium``
fixture of ``tests/ops/browser.py``: Debian's chromium driven by Playwright).

Set ``UPDATE_DOCS_SCREENSHOT=1`` to also write ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redflow_mp import Client
from tests.helpers import WorkerPool, status_of, text, wait_until
from tests.ops.conftest import ROOT, TOKEN, cli_env


@pytest.fixture()
def dashboard_process(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[str]:
    """The real ``redflow dashboard`` (token from RF_DASHBOARD_TOKEN, 2 s auto-refresh)."""
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redflow_supervisor.ops", "dashboard", "--port", "0",
             "--refresh", "2", "--url", redis_url, "--prefix", prefix],
            cwd=ROOT,
            env=cli_env({"RF_DASHBOARD_TOKEN": TOKEN}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def serving() -> str:
            assert proc.poll() is None, log.read_text()
            m = re.search(r"serving (http://\S+)", log.read_text())
            return m.group(1) if m else ""  # "" (falsy): not listening yet

        yield wait_until(serving, 20, 0.05, "the dashboard to listen")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.browser
@pytest.mark.timeout(3600)  # the first run may install chromium; the flow itself takes seconds
def test_dashboard_in_chromium(
    chromium: Any,
    dashboard_process: str,
    synced: Client,
    ops_workers: WorkerPool,
    raw: redis.Redis,
    tmp_path: Path,
) -> None:
    client = synced
    ok = client.run_by_name("ops-steps", {"pause": 0.05})
    bad = client.run_by_name("ops-fail", {"why": "2024-13-45"})
    first = client.run_by_name("ops-parked", {"batch": 1})
    second = client.run_by_name("ops-parked", {"batch": 2})
    slow = client.run_by_name("ops-slow", {"steps": 200, "pause": 0.1})
    ok.result(timeout=15)
    wait_until(lambda: status_of(raw, client, bad.id) == "failed", 15)
    wait_until(lambda: status_of(raw, client, slow.id) == "running", 15)

    base = dashboard_process
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(15_000)
    # The pages reload themselves every 2 s (--refresh 2): on a loaded machine a reload
    # came in the middle of the reads after a goto ("Execution context was destroyed,
    # most likely because of a navigation"). The page's clock is paused: timers (the
    # reload's) fire only when the test runs it (the refresh check below).
    page.clock.install()
    page.clock.pause_at(time.time() * 1000 + 1000)
    dialogs: list[str] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        # the runs page: every run, newest first
        page.goto(base + "runs")
        ids = page.locator("table.runs tbody tr td:first-child").all_inner_texts()
        assert ids == [slow.id, second.id, first.id, bad.id, ok.id]
        assert page.locator("table.runs .badge").all_inner_texts() == [
            "running", "queued", "queued", "failed", "succeeded",
        ]  # fmt: skip
        page.screenshot(path=str(tmp_path / "dashboard-runs.png"), full_page=True)
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(tmp_path / "dashboard-runs.png", ROOT / "docs" / "dashboard.png")

        # filter by workflow and status
        page.fill("input[name=workflow]", "ops-parked")
        page.select_option("select[name=status]", "queued")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"/runs\?workflow=ops-parked&status=queued$"))
        links = page.locator("table.runs tbody tr td:first-child a")
        assert links.all_inner_texts() == [second.id, first.id]

        # open a run
        page.click(f"text={first.id}")
        page.wait_for_url(re.compile(rf"/run\?id={first.id}$"))
        assert page.inner_text("h1") == f"Run {first.id} queued"

        # cancel without the right token: refused, nothing changes
        page.fill("form.cancel input[name=token]", "not-the-token")
        page.click("form.cancel button")
        page.wait_for_url(re.compile(r"/actions/cancel$"))
        assert "wrong or missing token" in page.inner_text("main")
        assert status_of(raw, client, first.id) == "queued"

        # cancel with the token
        page.goto(f"{base}run?id={first.id}")
        page.fill("form.cancel input[name=reason]", "cancelled in the browser")
        page.fill("form.cancel input[name=token]", TOKEN)
        page.click("form.cancel button")
        page.wait_for_selector("h1 .badge.s-canceled")
        assert page.inner_text(".notice") == "Run canceled."
        assert status_of(raw, client, first.id) == "canceled"
        assert text(raw.hget(client.keys.run(first.id), "cancelReason")) == (
            "cancelled in the browser"
        )

        # retry the canceled run: a new run linked to the old one
        page.fill("form.retry input[name=token]", TOKEN)
        page.click("form.retry button")
        page.wait_for_url(re.compile(r"&notice=retried$"))
        new_id = re.search(r"\?id=(\w+)", page.url).group(1)  # type: ignore[union-attr]
        assert new_id != first.id
        assert text(raw.hget(client.keys.run(new_id), "retryOf")) == first.id
        assert page.locator(f"table.facts a:has-text('{first.id}')").count() == 1

        # a failed run: step timeline, error and traceback
        page.goto(f"{base}run?id={bad.id}")
        steps = page.locator("table.steps tr.step td:nth-child(2)").all_inner_texts()
        assert steps == ["ok", "parse"]
        assert page.locator("table.steps .bar span").count() == 2
        assert "ValueError: cannot parse '2024-13-45'" in page.inner_text("div.error")
        assert "in _explode" in page.inner_text("pre.tb")
        page.screenshot(path=str(tmp_path / "dashboard-run.png"), full_page=True)

        # the page refreshes itself: a change in Redis shows up without reloading
        page.goto(f"{base}run?id={second.id}")
        assert page.inner_text("h1 .badge") == "queued"
        client.cancel_run(second.id, "changed behind the page")
        page.clock.run_for(2_500)  # past the page's 2 s refresh: it reloads itself
        page.wait_for_selector("h1 .badge.s-canceled", timeout=10_000)

        # workflows, queues, supervisors
        page.click("header a:has-text('Workflows')")
        assert "0 3 * * *" in page.inner_text("table.workflows")
        page.click("header a:has-text('Queues')")
        assert "ops-idle" in page.inner_text("table.queues")
        page.click("header a:has-text('Supervisors')")
        assert "No live supervisors" in page.inner_text("main")

        # hostile names render as text, run nothing
        evil = '<script>alert("x")</script><img src=x onerror=alert(1)>{{1}}'
        client.run_by_name(evil, {"k": "</pre><script>alert(2)</script>"}, queue_override="nobody")
        page.goto(base + "runs")
        assert evil in page.inner_text("table.runs")
        page.click("table.runs tbody tr:first-child td:first-child a")
        page.wait_for_selector("h1")
        assert "</pre><script>alert(2)</script>" in page.inner_text("main")
        time.sleep(0.2)
        assert dialogs == []
        assert [m for m in console_errors if "Content Security Policy" in m] == []
    finally:
        page.close()
        client.cancel_run(slow.id)
