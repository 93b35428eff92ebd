"""Scrapes that wait together are answered from one rendering: each rendering
reads the gauges from Redis in the arbiter's loop (40-90 ms at 5,000 queues), so
MAX_CONNS clients sending ``GET /metrics`` over and over held the loop for
MAX_CONNS renderings in a row before it looked at a signal, a child's exit or a
run's timeout again. Every request answered by a rendering had fully arrived
before it started, so the body is as fresh as one of its own."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import cast

import pytest

from redflow_supervisor.metrics import MAX_CONNS, MetricsHub
from redflow_supervisor.signals import SignalPipe
from redflow_supervisor.wakeup import Wakeup

RENDER_S = 0.05


class _Pipe:
    """The wake-up pipe's two members the loop's wait uses (no signal handlers)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def drain(self) -> list[int]:
        with contextlib.suppress(BlockingIOError):
            return list(os.read(self.read_fd, 512))
        return []


class _Gauges:
    def __init__(self) -> None:
        self.calls = 0
        self.value = 1.0

    def __call__(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        self.calls += 1
        time.sleep(RENDER_S)  # the Redis reads of a large deployment
        return [("redflow_children_alive", (), self.value)]


@pytest.fixture()
def loop() -> Iterator[tuple[Wakeup, _Gauges, tuple[str, int]]]:
    gauges = _Gauges()
    hub = MetricsHub(gauges)
    pipe = _Pipe()
    wakeup = Wakeup(cast(SignalPipe, pipe), hub)
    wakeup.serve_metrics("127.0.0.1", 0)
    assert hub.listener is not None
    addr = hub.listener.getsockname()
    try:
        yield wakeup, gauges, (str(addr[0]), int(addr[1]))
    finally:
        hub.shutdown()
        wakeup.close()
        os.close(pipe.read_fd)
        os.close(pipe.write_fd)


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_scrapes_waiting_together_are_rendered_once(
    loop: tuple[Wakeup, _Gauges, tuple[str, int]],
) -> None:
    wakeup, gauges, addr = loop
    clients = [socket.create_connection(addr) for _ in range(MAX_CONNS)]
    try:
        deadline = time.monotonic() + 5
        while len(wakeup.hub.conns) < MAX_CONNS and time.monotonic() < deadline:
            wakeup.wait(0.05)
        assert len(wakeup.hub.conns) == MAX_CONNS
        for c in clients:
            c.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)  # every request in the kernel's buffers
        started = time.monotonic()
        wakeup.wait(1.0)
        took = time.monotonic() - started
        assert gauges.calls == 1, (
            f"{gauges.calls} renderings for {MAX_CONNS} scrapes waiting together "
            f"(one wait of the loop took {took:.2f} s)"
        )
        while wakeup.hub.conns and time.monotonic() < deadline:
            wakeup.wait(0.05)
        replies = [_read_all(c) for c in clients]
        assert all(r.startswith(b"HTTP/1.0 200 OK") for r in replies), replies[:2]
        assert all(b"redflow_children_alive 1" in r for r in replies), replies[0]
    finally:
        for c in clients:
            c.close()


def test_a_scrape_after_another_is_rendered_anew(
    loop: tuple[Wakeup, _Gauges, tuple[str, int]],
) -> None:
    """One rendering per wait, not a cache: the next scrape sees what changed."""
    wakeup, gauges, addr = loop
    for expected in (1.0, 2.0, 3.0):
        gauges.value = expected
        with socket.create_connection(addr) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            deadline = time.monotonic() + 5
            while gauges.calls < expected and time.monotonic() < deadline:
                wakeup.wait(0.05)
            while wakeup.hub.conns and time.monotonic() < deadline:
                wakeup.wait(0.05)
            assert f"redflow_children_alive {expected:g}".encode() in _read_all(c)
    assert gauges.calls == 3
