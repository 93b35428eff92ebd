"""Workflows that look at and write to their process's standard descriptors."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


@define_workflow("std-fds", queue="fd", max_concurrency=10)
def std_fds(ctx: Context[Any]) -> list[str]:
    """What descriptors 0, 1 and 2 of this child are."""
    return [_describe(fd) for fd in (0, 1, 2)]


@define_workflow("scribble", queue="fd", max_concurrency=10)
def scribble(ctx: Context[Any]) -> str:
    """Writes to its stdout and stderr as a C library or a subprocess would
    (bytes that read as a Redis command: a SET of a key under the test's prefix)."""
    client = get_default_client()
    assert client is not None
    key = f"{client.keys.tag}:scribbled".encode()
    command = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(key), key)
    for fd in (1, 2):
        os.write(fd, command)
    return "written"


@define_workflow("close-std", queue="fd", max_concurrency=10)
def close_std(ctx: Context[Any]) -> str:
    """Closes its process's stdin, stdout and stderr (as ``sys.stdout.close()`` or
    a ``with open(1, "w")`` block does)."""
    for fd in (0, 1, 2):
        os.close(fd)
    return "closed"


@define_workflow("open-file", queue="fd", max_concurrency=10)
def open_file(ctx: Context[str]) -> str:
    """Opens the file named by its input and keeps it open (the descriptor's
    number is the lowest free one); returns what descriptors 0, 1 and 2 are."""
    _kept.append(open(ctx.input, "w"))  # noqa: SIM115 - kept open on purpose
    return ",".join(_describe(fd) for fd in (0, 1, 2))


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"


_kept: list[Any] = []
