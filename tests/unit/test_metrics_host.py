"""The metrics endpoint on a loopback bind answers only requests that name a
loopback host (or this machine), as the dashboard does: a web page on a DNS name
rebound to 127.0.0.1 must not read the workflow and queue names, run counts and
versions from an operator's browser (DNS rebinding)."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from redflow_supervisor.metrics import MetricsHub


@pytest.fixture()
def hub() -> Iterator[MetricsHub]:
    made = MetricsHub(lambda: [("redflow_children_alive", (), 1.0)])
    selector = selectors.DefaultSelector()
    made.listen("127.0.0.1", 0, selector)
    try:
        yield made
    finally:
        made.shutdown()
        selector.close()


def _get(hub: MetricsHub, host: str | None) -> bytes:
    head = "GET /metrics HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    return hub._response((head + "\r\n").encode())


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:9464", "localhost:9464", "LOCALHOST", "[::1]:9464", "127.0.0.2", None],
)
def test_a_scrape_naming_a_loopback_host_is_answered(hub: MetricsHub, host: str | None) -> None:
    reply = _get(hub, host)
    assert reply.startswith(b"HTTP/1.0 200 OK"), reply[:200]
    assert b"redflow_children_alive 1" in reply


def test_a_scrape_naming_this_machine_is_answered(hub: MetricsHub) -> None:
    assert _get(hub, f"{socket.gethostname()}:9464").startswith(b"HTTP/1.0 200 OK")


@pytest.mark.parametrize("host", ["rebind.attacker.example:9464", "10.0.0.5:9464", "evil"])
def test_a_request_naming_another_host_is_refused(hub: MetricsHub, host: str) -> None:
    reply = _get(hub, host)
    assert reply.startswith(b"HTTP/1.0 421"), reply[:300]
    assert b"redflow_" not in reply


def test_a_non_loopback_bind_does_not_check_the_host() -> None:
    made = MetricsHub(lambda: [])
    selector = selectors.DefaultSelector()
    made.listen("0.0.0.0", 0, selector)
    try:
        assert _get(made, "metrics.internal:9464").startswith(b"HTTP/1.0 200 OK")
    finally:
        made.shutdown()
        selector.close()
