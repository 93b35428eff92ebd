"""Where the supervisor's log lines go: standard error, without ever blocking.

Whoever reads the supervisor's stderr (a terminal, a pipe to a log shipper,
journald's socket) may stop reading. A blocking write then waits once the pipe
buffer is full (64 KiB), and a parent waiting in a log write supervised
nothing: no respawn, no drain, no timeout, no lease backstop. So lines are
written without blocking and kept in a bounded buffer (:data:`BUFFER_LIMIT`
bytes) while the reader lags; what does not fit is dropped and counted, and
the count is reported in one warning line once the lines can be written again.
:meth:`NonBlockingStderr.flush` writes the buffer: the arbiter calls it at
each turn of its loop, a child before each claim (at least once a second while
idle), so a backlog leaves once the reader is back even if nothing else is
logged.

A pipe or FIFO gets a private open file description (``/proc/self/fd/2``
opened again, with ``O_NONBLOCK``): ``O_NONBLOCK`` set on descriptor 2 itself
would be shared with every process writing there (the children's handlers,
the user's ``print``, whoever started the supervisor), whose writes would then
fail with ``EAGAIN``. A socket is written with ``MSG_DONTWAIT`` per call. Any
other target (a file, a terminal, ``/dev/null``) is written as before.
Writes to a pipe are cut at line ends into pieces of at most ``PIPE_BUF``
bytes, which the kernel writes whole: a line never interleaves with a child's.

Fork safety: a forked process keeps the handler (children log the same way, so
a child is not stalled in a log line either) but starts with an empty buffer
and no dropped count (``os.register_at_fork``): the parent's pending lines are
the parent's to write. Before each write the private descriptor is checked
(``fstat``) to still be the one opened: a handler that closed descriptors
(``os.closerange``) must not send log lines into whatever took the number
next (a Redis connection); the handler then opens descriptor 2 anew.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import time

__all__ = ["BUFFER_LIMIT", "NonBlockingStderr"]

#: Most bytes of log lines kept while stderr is not being read (then dropped).
BUFFER_LIMIT = 1 << 20

_PIPE_BUF = select.PIPE_BUF


class NonBlockingStderr(logging.Handler):
    """A handler writing formatted records to descriptor ``fd`` (2) without blocking."""

    def __init__(self, fd: int = 2, limit: int = BUFFER_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self._target = fd
        self._buf = bytearray()
        self._dropped = 0
        self._private = -1
        self._identity: tuple[int, int] | None = None
        self._sock: socket.socket | None = None
        self._open(fd)
        os.register_at_fork(after_in_child=self._forget)

    def _open(self, fd: int) -> None:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return
        if stat.S_ISFIFO(mode):
            try:
                private = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return  # no /proc: blocking writes, as before
            st = os.fstat(private)
            self._private = private
            self._identity = (st.st_dev, st.st_ino)
        elif stat.S_ISSOCK(mode):
            try:
                self._sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                return
            st = os.fstat(self._sock.fileno())
            self._identity = (st.st_dev, st.st_ino)

    def _forget(self) -> None:
        """After fork: the pending lines are the parent's to write."""
        self._buf = bytearray()
        self._dropped = 0

    @property
    def pending(self) -> int:
        """Bytes waiting to be written."""
        return len(self._buf)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        if self._buf and len(self._buf) + len(data) > self.limit:
            self._dropped += 1
        else:
            self._buf += data
        self._write()

    def flush(self) -> None:
        """Write what the buffer holds, as far as the reader takes it now."""
        if not self._buf and not self._dropped:
            return
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        if self._sock is not None and self._still_ours():
            self._sock.close()
        elif self._private >= 0 and self._still_ours():
            os.close(self._private)
        self._sock, self._private = None, -1
        super().close()

    def _write(self) -> None:
        while True:
            while self._buf:
                try:
                    n = self._send(self._piece())
                except BlockingIOError:
                    return
                except InterruptedError:
                    continue
                except OSError:
                    # The reader is gone (EPIPE) or the target failed: nothing
                    # written now will be read; count the lines instead.
                    self._dropped += max(1, self._buf.count(b"\n"))
                    self._buf.clear()
                    return
                del self._buf[:n]
            if not self._dropped:
                return
            dropped, self._dropped = self._dropped, 0
            self._buf += self._dropped_line(dropped)

    def _piece(self) -> bytes:
        """The next write: whole lines of at most PIPE_BUF bytes (a longer line in
        PIPE_BUF pieces) to a pipe, everything to anything else."""
        if self._private < 0:
            return bytes(self._buf)
        if len(self._buf) <= _PIPE_BUF:
            return bytes(self._buf)
        end = self._buf.rfind(b"\n", 0, _PIPE_BUF)
        return bytes(self._buf[: end + 1 if end >= 0 else _PIPE_BUF])

    def _send(self, data: bytes) -> int:
        if (self._sock is not None or self._private >= 0) and not self._still_ours():
            self._open(self._target)  # closed under us: a description of our own again
        if self._sock is not None:
            return self._sock.send(data, socket.MSG_DONTWAIT)
        if self._private >= 0:
            return os.write(self._private, data)
        return os.write(self._target, data)

    def _still_ours(self) -> bool:
        fd = self._sock.fileno() if self._sock is not None else self._private
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._identity:
            return True
        # closed (or the number reused) by code that closes descriptors
        self._private = -1
        if self._sock is not None:
            self._sock.detach()
            self._sock = None
        return False

    def _dropped_line(self, dropped: int) -> bytes:
        record = logging.LogRecord(
            "redflow_supervisor",
            logging.WARNING,
            __file__,
            0,
            "%d log line%s dropped: standard error was not being read",
            (dropped, "" if dropped == 1 else "s"),
            None,
        )
        record.created = time.time()
        try:
            return (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:  # pragma: no cover - the formatters never raise
            return b"log lines dropped: standard error was not being read\n"
