"""What handlers print in a child: written without ever stalling the child on a
reader that stopped reading.

A supervisor's children write to the descriptors 1 and 2 they inherit: the
supervisor's own stdout and stderr. When that is a pipe or socket whose reader
stopped reading (a log shipper stalled, a ``| less`` left open), the pipe
fills (64 KiB) and a handler's ``print`` (or a chatty library's) blocked in
``write()`` for good: its run never finished (the parent renews the leases of
a live child, as for a handler in C code, and a run has no timeout by
default), and its child never claimed again. The log lines of the supervisor
and its children already wait in a buffer instead (``logsink.py``).

:func:`never_block` (in a child, after fork) replaces ``sys.stdout`` and
``sys.stderr``, when they are a pipe or a socket, with streams that write to a
private open file description of the same pipe (``/proc/self/fd/N`` opened
again with ``O_NONBLOCK``: descriptors 1 and 2 themselves, shared with the
parent, the other children and whoever started the supervisor, keep blocking)
or, for a socket, with ``MSG_DONTWAIT``. A write the reader does not take
waits for it up to :data:`PATIENCE` seconds, as a blocking write would for a
slow reader; past that the stream drops what does not fit, counting the bytes
(``DroppingWriter.dropped``, summed by :func:`dropped`; the child reports
them in a warning line and the ``redflow_child_output_dropped_bytes_total``
counter), and waits no more until the reader takes bytes again. A reader that
is gone (``EPIPE``: the supervisor was started as ``redflow-supervisor ... |
head -1``, a log shipper exited) has every write dropped and counted the same
way: a handler's ``print`` raised ``BrokenPipeError`` there, and its run
failed. C code and subprocesses writing to descriptor 1 or 2 directly still
block as before (C code holding the GIL while it does is
taken for stopped by ``liveness.py``). A file, a terminal or ``/dev/null`` is
left as it is. Before each write the private description is checked
(``fstat``) to still be the one opened, as in ``logsink.py``: a handler that
closed descriptors must not send its prints into whatever took the number.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import socket
import stat
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["PATIENCE", "DroppingWriter", "dropped", "never_block"]

#: How long a write waits for a reader that takes nothing before dropping.
PATIENCE = 1.0


def dropped(writers: Iterable[DroppingWriter]) -> int:
    """Bytes ``writers`` (those :func:`never_block` installed) dropped so far."""
    total = 0
    for w in writers:  # a loop: a generator made for sum() cost more (a child asks once a run)
        total += w.dropped
    return total


class DroppingWriter(io.RawIOBase):
    """A raw stream on a pipe or socket (descriptor ``target``) whose writes wait
    at most :data:`PATIENCE` for the reader, then drop what it does not take."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self._target = target
        self._fd = -1
        self._sock: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._dropping = False  # the reader took nothing for PATIENCE: do not wait
        self.dropped = 0  # bytes dropped so far
        self._open()

    def _open(self) -> None:
        """A description of our own on the target (or none: write it directly)."""
        self._fd, self._sock, self._identity = -1, None, None
        try:
            mode = os.fstat(self._target).st_mode
            if stat.S_ISFIFO(mode):
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                self._fd = os.open(f"/proc/self/fd/{self._target}", flags)
            elif stat.S_ISSOCK(mode):
                self._sock = socket.socket(fileno=os.dup(self._target))
                self._fd = self._sock.fileno()
            else:
                return
            st = os.fstat(self._fd)
        except OSError:
            return
        self._identity = (st.st_dev, st.st_ino)

    @property
    def private(self) -> bool:
        """Whether writes go through a non-blocking description of our own."""
        return self._identity is not None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._target

    def isatty(self) -> bool:
        return False

    def _still_ours(self) -> bool:
        try:
            st = os.fstat(self._fd)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._identity:
            return True
        if self._sock is not None:  # closed under us: the number is not ours
            self._sock.detach()
        self._open()
        return self._identity is not None

    def _send(self, view: memoryview) -> int:
        if self._sock is not None:
            return self._sock.send(view, socket.MSG_DONTWAIT)
        return os.write(self._fd, view)

    def write(self, b: ReadableBuffer) -> int:
        view = memoryview(b).cast("B")
        total = len(view)
        if not (self.private and self._still_ours()):
            try:
                while view:  # not a pipe or socket (or no /proc): as before
                    view = view[os.write(self._target, view) :]
            except (BrokenPipeError, ConnectionResetError):
                self.dropped += len(view)  # the reader is gone
            return total
        deadline: float | None = None
        while view:
            try:
                n = self._send(view)
            except BlockingIOError:
                n = 0
            except InterruptedError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                self.dropped += len(view)  # the reader is gone: nobody will take it
                break
            if n:
                view, deadline, self._dropping = view[n:], None, False
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + PATIENCE
            if self._dropping or now >= deadline:
                self._dropping = True
                self.dropped += len(view)
                break
            with contextlib.suppress(InterruptedError):
                _writable(self._fd, deadline - now)
        return total


def _writable(fd: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``fd`` to take bytes."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll(max(1, int(timeout * 1000)))


def _stream(raw: DroppingWriter, old: TextIO | None) -> TextIO:
    """A text stream over ``raw`` that writes as ``old`` did (encoding, buffering)."""
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=getattr(old, "encoding", None) or "utf-8",
        errors=getattr(old, "errors", None) or "backslashreplace",
        line_buffering=bool(getattr(old, "line_buffering", True)),
        write_through=bool(getattr(old, "write_through", False)),
    )


def never_block() -> list[DroppingWriter]:
    """Give this process a ``sys.stdout`` and ``sys.stderr`` that never wait
    past :data:`PATIENCE` for a pipe or socket's reader; returns the writers
    installed (for :func:`dropped`)."""
    installed: list[DroppingWriter] = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                old.flush()
        raw = DroppingWriter(fd)
        if not raw.private:
            continue
        installed.append(raw)
        new = _stream(raw, old)
        setattr(sys, name, new)
        if getattr(sys, f"__{name}__") is old:
            setattr(sys, f"__{name}__", new)
    return installed
