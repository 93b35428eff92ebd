"""Workflows that stop their process (the supervisor's child) from serving in
ways an operator meets: a handler that prints more than the reader of the
supervisor's output takes, and one that leaks descriptors until none is left."""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client

_LEAKED: list[int] = []  # the descriptors leak-fds keeps open, for good


@define_workflow("print-a-lot", queue="p", max_concurrency=10)
def print_a_lot(ctx: Context[int]) -> int:
    """Prints ``ctx.input`` lines of 100 bytes to stdout and to stderr (its own
    ``print``, a chatty library's), then returns its pid."""
    line = "x" * 99
    for _ in range(ctx.input):
        print(line)
        print(line, file=sys.stderr)
    return os.getpid()


@define_workflow("leak-descriptors", queue="p", max_concurrency=10)
def leak_fds(ctx: Context[Any]) -> int:
    """Opens ``/dev/null`` until the process has no descriptor left (EMFILE) and
    keeps them all open, as a handler leaking a file or socket per call does in
    the end (on its first execution only); returns its pid."""
    client = get_default_client()
    assert client is not None
    if client.redis.incr(f"{client.keys.tag}:leaks") > 1:
        return os.getpid()  # leaks on its first execution only
    try:
        while True:
            _LEAKED.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
    return os.getpid()


@define_workflow("open-file", queue="p", max_concurrency=10)
def open_file(ctx: Context[Any]) -> int:
    """Opens (and closes) ``/dev/null``, as most handlers open something; returns its pid."""
    os.close(os.open(os.devnull, os.O_RDONLY))
    return os.getpid()
