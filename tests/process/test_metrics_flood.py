"""The supervisor's parent still reacts while clients scrape ``/metrics`` as fast
as they can. Each rendering reads the gauges of the served queues from Redis in
the parent's loop (about 40 ms at 5,000 queues); ``MAX_CONNS`` clients sending
``GET /metrics`` over and over made each wait of the loop render the page once
per client (32 renderings, 1.3-1.8 s) before it looked at a signal again: a
TTIN took up to 1.85 s to add a child, a run's timeout and a dead child waited
as long. The scrapes read in one wait now share one rendering."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable

from redflow_supervisor.metrics import MAX_CONNS
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import free_port

QUEUES = 5_000


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def _calibrate(sup: Supervisor, port: int, to: int) -> tuple[float, float]:
    """What this machine takes now, with nobody flooding: seconds from a TTIN
    to the new child (``to`` children), and a scrape's rendering (the median of
    five). The bounds below scale with both, so a loaded machine (CI at a load
    of 12) raises them as much as it slows the parent, and the defect (a wait
    rendering once per client: 32 renderings before a signal) still fails."""
    started = time.monotonic()
    sup.send(signal.SIGTTIN)
    sup.wait_workers(to, timeout=30)
    fork = time.monotonic() - started
    renders: list[float] = []
    for _ in range(5):
        t0 = time.monotonic()
        assert _scrape(port) is not None
        renders.append(time.monotonic() - t0)
    return fork, sorted(renders)[2]


def _bound(fork: float, render: float) -> float:
    """A signal waits at most a couple of renderings (the one under way and the
    shared one) besides the fork itself: 8 renderings of margin, where the
    defect took 32, plus a floor of 0.75 s for a quiet machine."""
    return max(0.75, 2 * fork + 8 * render)


def _flood(port: int, stop: threading.Event, answered: list[int]) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                while s.recv(65536):
                    pass
            answered.append(1)
        except OSError:
            time.sleep(0.01)


def test_the_parent_handles_signals_at_once_while_clients_scrape_without_pause(
    supervisor: Callable[..., Supervisor],
) -> None:
    port = free_port()
    queues = ",".join(["p", *(f"idle{i}" for i in range(QUEUES - 1))])
    sup = supervisor(procs=1, args=["--metrics-port", str(port), "--queues", queues])
    wait_until(lambda: _scrape(port), 30, message="the metrics endpoint")
    sup.wait_workers(1)
    fork, render = _calibrate(sup, port, 2)
    stop = threading.Event()
    answered: list[int] = []
    flooders = [
        threading.Thread(target=_flood, args=(port, stop, answered), daemon=True)
        for _ in range(MAX_CONNS)
    ]
    for t in flooders:
        t.start()
    took: list[float] = []
    try:
        time.sleep(1.0)  # the flood going on
        for n in range(3, 7):
            started = time.monotonic()
            sup.send(signal.SIGTTIN)
            sup.wait_workers(n, timeout=30)
            took.append(time.monotonic() - started)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in flooders:
            t.join(10)
    assert answered, "no scrape was answered during the flood"
    assert max(took) < _bound(fork, render), (
        f"seconds from TTIN to the new child while {MAX_CONNS} clients scraped: "
        f"{[round(x, 2) for x in took]} ({len(answered)} scrapes answered); "
        f"unflooded: fork {fork:.2f} s, rendering {render:.3f} s"
    )
    with contextlib.suppress(AssertionError):
        sup.wait_workers(6, timeout=1)
    assert "Traceback" not in sup.log(), sup.log()[-3000:]


def _trickle(port: int, stop: threading.Event) -> None:
    """Slowloris: a request a byte at a time, never finished."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
                while not stop.is_set():
                    s.sendall(b"X")
                    time.sleep(0.2)
        except OSError:
            time.sleep(0.01)


def _huge_header(port: int, stop: threading.Event) -> None:
    """A header that never ends, as fast as the endpoint takes it."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: ")
                while not stop.is_set():
                    s.sendall(b"a" * 65536)
        except OSError:
            time.sleep(0.01)


def test_slow_idle_and_endless_clients_stall_neither_the_parent_nor_a_scrape(
    supervisor: Callable[..., Supervisor],
) -> None:
    """Held (no change needed): clients trickling a byte at a time, hundreds of idle
    connections and a header that never ends cost the parent neither its signals
    nor a scrape's answer (each connection has 5 s, the oldest waiting one makes
    room, a request stops being read at 8 KiB)."""
    port = free_port()
    sup = supervisor(procs=1, args=["--metrics-port", str(port)])
    wait_until(lambda: _scrape(port), 30, message="the metrics endpoint")
    sup.wait_workers(1)
    fork, render = _calibrate(sup, port, 2)
    stop = threading.Event()
    attackers = [
        *(threading.Thread(target=_trickle, args=(port, stop), daemon=True) for _ in range(40)),
        threading.Thread(target=_huge_header, args=(port, stop), daemon=True),
    ]
    idle: list[socket.socket] = []
    took: list[float] = []
    scrapes: list[bool] = []
    try:
        for t in attackers:
            t.start()
        for _ in range(300):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1.0)
        for n in range(3, 6):
            started = time.monotonic()
            sup.send(signal.SIGTTIN)
            sup.wait_workers(n, timeout=30)
            took.append(time.monotonic() - started)
            scrapes.append(_scrape(port) is not None)
    finally:
        stop.set()
        for t in attackers:
            t.join(10)
        for s in idle:
            s.close()
    assert max(took) < _bound(fork, render), (
        f"seconds from TTIN to the new child: {[round(x, 2) for x in took]}; "
        f"unattacked: fork {fork:.2f} s, rendering {render:.3f} s"
    )
    assert all(scrapes), f"scrapes answered under attack: {scrapes}"
    assert "Traceback" not in sup.log(), sup.log()[-3000:]
