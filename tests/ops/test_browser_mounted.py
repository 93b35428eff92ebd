"""The dashboard mounted in a Flask app and in a FastAPI app, driven in headless Chromium.

Each host (``tests/ops/hosts.py``) mounts ``make_app(client, token=...)`` at
``/admin/redflow`` behind its own HTTP Basic auth and serves it on a real server
(werkzeug's threaded server; uvicorn with ``a2wsgi``). The browser signs in to the
host, not to the dashboard; the dashboard's pages render, every link and form
stays under the prefix, and cancel and retry work with the token typed into their
forms and are refused without it.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_supervisor.ops.dashboard import make_app
from tests.helpers import WorkerPool, status_of, text, wait_until
from tests.ops.conftest import TOKEN
from tests.ops.hosts import (
    HOST_HOME,
    MOUNT,
    PASSWORD,
    USER,
    fastapi_host,
    flask_host,
    serve_asgi,
    serve_wsgi,
)

HOSTS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], AbstractContextManager[str]]]] = {
    "flask": (flask_host, serve_wsgi),
    "fastapi": (fastapi_host, serve_asgi),
}


@pytest.fixture(params=sorted(HOSTS))
def mounted(request: pytest.FixtureRequest, synced: Client) -> Iterator[str]:
    """The host app serving, with the dashboard at /admin/redflow; yields the host's URL."""
    build, serve = HOSTS[request.param]
    with serve(build(make_app(synced, token=TOKEN, refresh=2))) as url:
        yield url


def _urls(page: Any) -> list[str]:
    """Every link and form action of the page, as written in its HTML."""
    got: list[str] = page.eval_on_selector_all(
        "a[href], form[action]",
        "els => els.map(e => e.getAttribute(e.tagName === 'FORM' ? 'action' : 'href'))",
    )
    return got


def _assert_under_prefix(page: Any) -> None:
    assert page.url.split("/", 3)[3].startswith(MOUNT.lstrip("/") + "/"), page.url
    urls = _urls(page)
    assert urls and [u for u in urls if not u.startswith(f"{MOUNT}/")] == [], urls


@pytest.mark.browser
@pytest.mark.timeout(3600)  # the first run may install chromium; the flow itself takes seconds
def test_mounted_dashboard_in_chromium(
    chromium: Any, mounted: str, synced: Client, ops_workers: WorkerPool, raw: redis.Redis
) -> None:
    client = synced
    bad = client.run_by_name("ops-fail", {"why": "mounted"})
    first = client.run_by_name("ops-parked", {"batch": 1})
    second = client.run_by_name("ops-parked", {"batch": 2})
    wait_until(lambda: status_of(raw, client, bad.id) == "failed", 15)

    # the host's auth sits in front of the dashboard; the host's own page is its own
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{mounted}{MOUNT}/runs", timeout=10)
    assert refused.value.code == 401 and refused.value.read() == b"host login required\n"
    refused.value.close()
    with urllib.request.urlopen(f"{mounted}/", timeout=10) as home:
        assert home.read().decode() == HOST_HOME

    context = chromium.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

        # the mount's root redirects to its runs page; every link stays under the prefix
        page.goto(f"{mounted}{MOUNT}/")
        page.wait_for_url(f"{mounted}{MOUNT}/runs")
        ids = page.locator("table.runs tbody tr td:first-child").all_inner_texts()
        assert ids == [second.id, first.id, bad.id]
        _assert_under_prefix(page)

        # the filter form and the run links
        page.fill("input[name=workflow]", "ops-parked")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(rf"{MOUNT}/runs\?workflow=ops-parked&status=$"))
        page.click(f"text={first.id}")
        page.wait_for_url(f"{mounted}{MOUNT}/run?id={first.id}")
        assert page.inner_text("h1") == f"Run {first.id} queued"
        _assert_under_prefix(page)

        # cancel without the token: refused by the dashboard, nothing changes
        page.fill("form.cancel input[name=token]", "not-the-token")
        page.click("form.cancel button")
        page.wait_for_url(f"{mounted}{MOUNT}/actions/cancel")
        assert "wrong or missing token" in page.inner_text("main")
        _assert_under_prefix(page)
        assert status_of(raw, client, first.id) == "queued"

        # cancel with the token
        page.goto(f"{mounted}{MOUNT}/run?id={first.id}")
        page.fill("form.cancel input[name=reason]", "cancelled under a prefix")
        page.fill("form.cancel input[name=token]", TOKEN)
        page.click("form.cancel button")
        page.wait_for_url(f"{mounted}{MOUNT}/run?id={first.id}&notice=canceled")
        assert page.inner_text(".notice") == "Run canceled."
        assert status_of(raw, client, first.id) == "canceled"
        assert text(raw.hget(client.keys.run(first.id), "cancelReason")) == (
            "cancelled under a prefix"
        )

        # retry without the token: refused; with it: a new run linked to the old one
        page.goto(f"{mounted}{MOUNT}/run?id={bad.id}")
        page.fill("form.retry input[name=token]", "not-the-token")
        page.click("form.retry button")
        page.wait_for_url(f"{mounted}{MOUNT}/actions/retry")
        assert "wrong or missing token" in page.inner_text("main")
        page.goto(f"{mounted}{MOUNT}/run?id={bad.id}")
        page.fill("form.retry input[name=token]", TOKEN)
        page.click("form.retry button")
        page.wait_for_url(re.compile(rf"{MOUNT}/run\?id=\w+&notice=retried$"))
        new_id = re.search(r"\?id=(\w+)", page.url).group(1)  # type: ignore[union-attr]
        assert new_id != bad.id
        assert text(raw.hget(client.keys.run(new_id), "retryOf")) == bad.id
        _assert_under_prefix(page)

        # the other pages, by their navigation links
        for name, selector in (
            ("workflows", "table.workflows"),
            ("queues", "table.queues"),
            ("supervisors", "main h1"),
        ):
            page.click(f"header a:has-text('{name.capitalize()}')")
            page.wait_for_url(f"{mounted}{MOUNT}/{name}")
            page.wait_for_selector(selector)
            _assert_under_prefix(page)

        # the page refreshes itself under the prefix too
        page.goto(f"{mounted}{MOUNT}/run?id={second.id}")
        assert page.inner_text("h1 .badge") == "queued"
        client.cancel_run(second.id, "changed behind the page")
        page.wait_for_selector("h1 .badge.s-canceled", timeout=10_000)
        assert [m for m in console_errors if "Content Security Policy" in m] == []
    finally:
        context.close()
