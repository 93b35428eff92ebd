"""The arbiter's one wait: the signal pipe and the metrics hub's descriptors on one
selector, so the loop sleeps until a signal, a child's metric delta, a scrape or
its next deadline, whichever comes first (no thread, SPEC §5).
"""

from __future__ import annotations

import logging
import selectors

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
            bound_host, bound = self.hub.listen(host, port)
        except OSError as exc:
            raise SystemExit(
                f"redflow-supervisor: cannot serve metrics on {host}:{port}: {exc}"
            ) from None
        assert self.hub.listener is not None
        self.selector.register(self.hub.listener, selectors.EVENT_READ, "metrics-listen")
        log.info("metrics on http://%s:%d/metrics", bound_host, bound)

    def wait(self, timeout: float) -> list[int]:
        """Wait for signals, metric deltas and scrapes; return the signals received."""
        signals: list[int] = []
        for key, _ in self.selector.select(max(0.0, timeout)):
            if key.data == "signals":
                signals.extend(self.pipe.drain())
            elif key.data == "metrics-pipe":
                self.hub.read_pipe()
            elif key.data == "metrics-listen":
                for sock in self.hub.accept():
                    self.selector.register(sock, selectors.EVENT_READ, "metrics-conn")
            elif key.data == "metrics-conn" and self.hub.on_readable(key.fd):
                self.selector.unregister(key.fd)
        return signals

    def close(self) -> None:
        self.selector.close()
