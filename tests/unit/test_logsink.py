"""The supervisor's log handler on a pipe nobody reads: it never blocks, keeps a
bounded backlog, and says how many lines it dropped once it can write again."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterator

import pytest

from redflow_supervisor.logsink import NonBlockingStderr


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 0, msg, (), None)


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = bytearray()
    try:
        while chunk := os.read(fd, 65536):
            out += chunk
    except BlockingIOError:
        pass
    return bytes(out)


@pytest.fixture()
def full_pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"f")
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def test_a_full_pipe_never_blocks_and_the_dropped_lines_are_counted(
    full_pipe: tuple[int, int],
) -> None:
    r, w = full_pipe
    handler = NonBlockingStderr(w, limit=1000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for n in range(100):  # each line would block a plain StreamHandler
        handler.emit(_record(f"line {n:03d} " + "y" * 80))
    assert 0 < handler.pending <= 1000
    assert os.get_blocking(w)  # descriptor 2's own description is left blocking
    kept = handler.pending // 90
    assert set(_drain(r)) == {ord("f")}  # the reader is back
    handler.flush()
    out = _drain(r).decode()
    lines = [x for x in out.splitlines() if x.startswith("line ")]
    assert [x[:8] for x in lines] == [f"line {n:03d}" for n in range(kept)]
    assert f"{100 - kept} log lines dropped: standard error was not being read" in out
    assert handler.pending == 0
    handler.emit(_record("after"))
    assert _drain(r) == b"after\n"
    handler.close()


def test_a_socket_is_written_without_blocking() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    handler = NonBlockingStderr(a.fileno(), limit=10_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for n in range(2000):
        handler.emit(_record(f"line {n} " + "z" * 100))
    assert handler.pending > 0
    assert a.getblocking()
    received = bytearray()
    b.setblocking(False)
    while b"log lines dropped" not in received:
        try:
            received += b.recv(65536)
        except BlockingIOError:
            handler.flush()
    assert handler.pending == 0
    handler.close()
    a.close()
    b.close()


def test_a_descriptor_closed_under_the_handler_is_never_written_again() -> None:
    """Code that closes descriptors (os.closerange) frees the handler's own: the
    next file or connection opened takes its number and must not get log lines."""
    r, w = os.pipe()
    handler = NonBlockingStderr(w)
    handler.setFormatter(logging.Formatter("%(message)s"))
    private = handler._private
    assert private >= 0
    other_r, other_w = os.pipe()
    os.close(private)
    os.dup2(other_w, private)  # what took the number
    handler.emit(_record("to the target"))
    assert _drain(other_r) == b""
    assert _drain(r) == b"to the target\n"
    assert handler._private >= 0 and handler._private != private  # opened anew
    handler.close()
    for fd in (r, w, other_r, other_w, private):
        os.close(fd)
