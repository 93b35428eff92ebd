"""The supervisor's /metrics endpoint while clients hold every connection it keeps
(``MAX_CONNS``, 32): a scrape must still be answered. Each held connection is
closed after 5 s, but a client reconnects at once, so refusing new connections
while full let 32 idle sockets (no token, no request: nothing to send) keep
Prometheus out for as long as they liked."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from redflow_supervisor.metrics import MAX_CONNS
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import free_port


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def test_a_scrape_is_answered_while_idle_clients_hold_every_connection(
    supervisor: Callable[..., Supervisor],
) -> None:
    """MAX_CONNS idle connections, held: a new one closes the oldest of those still
    waiting for their request and is answered (before: closed at accept, and the
    three scrapes within the 5 s the idle ones are kept all failed)."""
    port = free_port()
    sup = supervisor(procs=1, args=["--metrics-port", str(port)])
    wait_until(lambda: _scrape(port), 20, message="the metrics endpoint")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNS)]
    try:
        time.sleep(0.5)  # every one of them accepted by the arbiter
        # answered by closing the oldest idle connection, not after the idle ones'
        # 5 s timeout: tests/unit/test_metrics_room.py proves that without a clock
        # (a bound in seconds here failed on a loaded machine)
        pages = [_scrape(port) for _ in range(3)]
        assert all(p is not None and "redflow_children_alive" in p for p in pages), (
            f"scrapes while {MAX_CONNS} idle connections were held: "
            f"{[None if p is None else 'answered' for p in pages]}"
        )
    finally:
        for s in idle:
            with contextlib.suppress(OSError):
                s.close()
    assert "Traceback" not in sup.log(), sup.log()
