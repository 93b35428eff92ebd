"""The arbiter's one wait: the signal pipe and the metrics hub's descriptors on one
selector, so the loop sleeps until a signal, a child's metric delta, a scrape or
its next deadline, whichever comes first (no thread, SPEC §5).

The metrics endpoint registers its listener and connections on this selector
itself (``MetricsHub.listen``); every event that is not the signal pipe or the
delta pipe is the hub's (``on_event``), and ``tick`` closes its connections past
their deadline after each wait (``next_due`` says when that is). The scrapes read
in one wait share one rendering (``new_batch``): a wait costs at most one,
however many clients scrape.

Each wait first writes the log lines that waited for stderr's reader
(``logs.flush_logs``), and while some still wait it lasts at most 0.1 s: a
reader that lags never blocks the loop, and its backlog (with the count of
lines dropped) leaves once it reads again, even if nothing else is logged.
"""

from __future__ import annotations

import logging
import selectors
import time

from .logs import flush_logs
from .metrics import MetricsHub
from .signals import SignalPipe

__all__ = ["Wakeup"]

log = logging.getLogger("redflow_supervisor")


class Wakeup:
    """Owns the selector over ``pipe`` and ``hub``; :meth:`wait` returns the signals."""

    def __init__(self, pipe: SignalPipe, hub: MetricsHub) -> None:
        self.pipe = pipe
        self.hub = hub
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe.read_fd, selectors.EVENT_READ, "signals")
        self.selector.register(hub.read_fd, selectors.EVENT_READ, "metrics-pipe")

    def serve_metrics(self, host: str, port: int) -> None:
        """Answer ``GET /metrics`` on ``host:port`` (SystemExit if it cannot bind)."""
        try:
            bound_host, bound = self.hub.listen(host, port, self.selector)
        except OSError as exc:
            raise SystemExit(
                f"redflow-supervisor: cannot serve metrics on {host}:{port}: {exc}"
            ) from None
        log.info("metrics on http://%s:%d/metrics", bound_host, bound)

    def wait(self, timeout: float) -> list[int]:
        """Wait for signals, metric deltas and scrapes; return the signals received."""
        signals: list[int] = []
        if flush_logs():
            timeout = min(timeout, 0.1)
        self.hub.new_batch()
        for key, mask in self.selector.select(max(0.0, timeout)):
            if key.data == "signals":
                signals.extend(self.pipe.drain())
            elif key.data == "metrics-pipe":
                self.hub.read_pipe()
            else:
                self.hub.on_event(key, mask)  # the endpoint's own errors never get here
        self.hub.tick(time.monotonic())
        return signals

    def close(self) -> None:
        self.selector.close()
