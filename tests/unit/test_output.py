"""A child's stdout/stderr streams on a pipe (``supervisor/output.py``): they wait
for a reader that reads, drop (and count) what a reader that stopped does not
take, and never write into a number a handler closed and reused."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator

import pytest

from redflow_supervisor.output import DroppingWriter


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    try:
        yield r, w
    finally:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = bytearray()
    try:
        while chunk := os.read(fd, 65536):
            out += chunk
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return bytes(out)


def test_a_reader_that_reads_gets_every_byte(pipe: tuple[int, int]) -> None:
    r, w = pipe
    raw = DroppingWriter(w)
    assert raw.private
    got = bytearray()

    def read() -> None:
        while len(got) < 200_000:
            got.extend(os.read(r, 65536))

    before = raw.dropped
    reader = threading.Thread(target=read)
    reader.start()
    assert raw.write(b"z" * 200_000) == 200_000
    reader.join(timeout=30)
    assert bytes(got) == b"z" * 200_000
    assert raw.dropped == before
    assert os.get_blocking(w)  # the shared descriptor itself still blocks


def test_a_reader_that_stopped_costs_one_wait_then_drops_and_counts(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)  # a page
    raw = DroppingWriter(w)
    before = raw.dropped
    assert raw.write(b"a" * 3 * size) == 3 * size  # a page fits; the rest waits, then drops
    assert raw.dropped - before == 2 * size
    assert raw.write(b"b" * 100) == 100  # dropped at once: no wait in between
    assert raw.dropped - before == 2 * size + 100
    assert _drain(r) == b"a" * size
    assert raw.write(b"c\n") == 2  # the reader is back: written again
    assert _drain(r) == b"c\n"


def test_a_closed_and_reused_descriptor_is_not_written_into(
    pipe: tuple[int, int], tmp_path: object
) -> None:
    """A handler's os.closerange closed the private description; the next file
    took its number: writes go to the pipe again, through a description opened anew."""
    r, w = pipe
    raw = DroppingWriter(w)
    private = raw._fd
    os.close(private)
    path = os.path.join(str(tmp_path), "taken")
    taken = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert taken == private
        raw.write(b"hello\n")
        assert os.path.getsize(path) == 0
        assert _drain(r) == b"hello\n"
    finally:
        os.close(taken)


def test_a_file_is_written_as_before(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "out")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        raw = DroppingWriter(fd)
        assert not raw.private
        raw.write(b"x" * 100_000)
        assert os.path.getsize(path) == 100_000
    finally:
        os.close(fd)
