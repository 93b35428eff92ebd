"""Retake ``docs/dashboard.png`` on the demo's data.

    .venv/bin/python docs/screenshot.py

Starts a private ``redis-server`` on a free loopback port (never the machine's
own Redis), runs ``examples/demo.py --keep`` against it (the demo's app, prefix
and runs), serves ``redflow dashboard`` on that prefix, and photographs its
runs page in headless Chromium (Debian's ``/usr/bin/chromium`` driven by
Playwright, as the browser tests do). Everything it started is stopped and its
temporary directory removed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(pattern: str, log: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        m = re.search(pattern, log.read_text())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {pattern!r}: {log.read_text()}")


def main() -> int:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="redflow-shot-"))
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    dashboard: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(0.3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--url", url, "--keep"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        log = work / "dashboard.log"
        with open(log, "wb") as out:
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "redflow_supervisor.ops", "dashboard", "--port", "0",
                 "--url", url, "--prefix", "redflow-demo"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = _wait_for(r"serving (http://\S+)", log, dashboard, 20)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "runs")
            page.wait_for_selector("table.runs tbody tr")
            page.screenshot(path=str(OUT), full_page=True)
            browser.close()
        print(f"wrote {OUT.relative_to(ROOT)} from {base}runs")
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
