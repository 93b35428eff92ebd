"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

What it needs is installed here, once per session: ``apt-get install -y chromium``
when /usr/bin/chromium is missing, ``pip install playwright`` when it cannot be
imported (Playwright's own browser download is never used). The xdist workers of
one run take turns (a lock file in the venv): two apt-gets at once fail on dpkg's
lock, two pips at once write over each other. Only when an install
fails (no network, no root) is a browser test skipped, with the reason.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_install_problem: list[str | None] = []


def _run(cmd: list[str], timeout: float) -> str | None:
    """Run an install command; None on success, else why it failed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)}: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"{' '.join(cmd)} exited {proc.returncode}: {' | '.join(tail)}"
    return None


def _install() -> str | None:
    """Make Chromium and Playwright available; None when ready, else the reason to skip."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None:
            return f"{CHROMIUM} is missing and apt-get is not available to install chromium"
        problem = _run(["apt-get", "update"], 900) or _run(
            ["apt-get", "install", "-y", "chromium"], 1800
        )
        if problem or not Path(CHROMIUM).exists():
            return f"cannot install Debian's chromium (no network or no root?): {problem}"
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        problem = _run([sys.executable, "-m", "pip", "install", "-q", "playwright"], 900)
        if problem:
            return f"cannot pip install playwright (no network?): {problem}"
        importlib.invalidate_caches()
        try:
            importlib.import_module("playwright.sync_api")
        except ImportError as exc:
            return f"playwright installed but cannot be imported: {exc}"
    return None


@pytest.fixture()
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright, started for each test and stopped
    after it: Playwright's sync API marks an asyncio loop running in the main
    thread for as long as it is started, so an instance kept for the session left
    every later test of the xdist worker inside a "running" loop, and one of them
    calling ``asyncio.run()`` failed ("cannot be called from a running event
    loop": test_tls_rediss_async_client, whenever it ran after a browser test in
    the same worker). tests/conftest.py fails a test that leaves such a loop."""
    if not _install_problem:
        with open(Path(sys.prefix) / ".redflow-browser-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released on close
            _install_problem.append(_install())
    if _install_problem[0]:
        pytest.skip(_install_problem[0])
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()
