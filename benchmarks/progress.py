"""The live progress line on stderr (done/total, rate, elapsed) while a case runs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Rewrites one line on a terminal at most every ``interval`` seconds.

    On a non-terminal stderr (CI logs) nothing is drawn while the case runs;
    :meth:`done` prints one summary line instead.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.enabled = enabled
        self.label = ""
        self.total = 0
        self.start = 0.0
        self.last_draw = 0.0
        self.interval = 0.1
        self._drawn = False

    def begin(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.start = time.monotonic()
        self.last_draw = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"  {self.label}  {done:,}/{self.total:,}  {rate:,.0f}/s  {elapsed:5.1f}s"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def done(self, summary: str) -> None:
        self.clear()
        if self.enabled:
            self.stream.write(f"  {summary}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
