"""The dashboard's auto-refresh must not undo a click: a link clicked while the
page it leads to is slow to answer (a loaded host, a big listing) was cancelled
by the refresh timer's ``location.reload()``, which fired meanwhile and reloaded
the page the user was leaving. Seen as a flake of the mounted-dashboard browser
test under load (``wait_for_url`` of the Workflows page timing out while the run
page reloaded again and again)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from redflow_mp import Client


@pytest.mark.browser
@pytest.mark.timeout(3600)  # the first run may install chromium; the flow itself takes seconds
def test_a_link_clicked_while_its_page_is_slow_is_not_undone_by_the_refresh(
    chromium: Any, dashboard: Callable[..., str], synced: Client
) -> None:
    base = dashboard(refresh=1)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}runs")

        def slow(route: Any) -> None:
            time.sleep(3.0)  # three refresh periods pass while the next page loads
            with contextlib.suppress(Exception):  # the navigation was cancelled meanwhile
                route.continue_()

        page.route("**/workflows*", slow)
        page.click("header a:has-text('Workflows')")
        page.wait_for_url(f"{base}workflows", timeout=15_000)
        page.wait_for_selector("table.workflows")
    finally:
        context.close()
