"""Workflows of the stray-signal process tests (``test_stray_signals.py``).

``tally`` counts its executions per run in Redis (``<tag>:tally:<run id>``),
marks its start, sleeps ``input`` seconds and returns its pid: a run executed
twice shows a count of 2. ``printer`` first prints 16 KiB to stdout and stderr
(more than a stream's buffer holds, so it reaches the descriptors in the run).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


def _tally(ctx: Context[Any]) -> None:
    client = get_default_client()
    assert client is not None
    tag = client.keys.tag
    client.redis.incr(f"{tag}:tally:{ctx.run.id}")
    client.redis.sadd(f"{tag}:tally-started", ctx.run.id)


@define_workflow("tally", queue="p", max_concurrency=100)
def tally(ctx: Context[float]) -> int:
    _tally(ctx)
    time.sleep(float(ctx.input))
    return os.getpid()


@define_workflow("printer", queue="p", max_concurrency=100)
def printer(ctx: Context[float]) -> int:
    _tally(ctx)
    line = "x" * 1023
    for stream in (sys.stdout, sys.stderr):
        for _ in range(16):
            print(line, file=stream)
    time.sleep(float(ctx.input))
    return os.getpid()


@define_workflow("held", queue="p", max_concurrency=100)
def held(ctx: Context[None]) -> int:
    """Counted as ``tally``; then runs while the key ``<tag>:hold`` exists."""
    _tally(ctx)
    client = get_default_client()
    assert client is not None
    while client.redis.exists(f"{client.keys.tag}:hold"):
        time.sleep(0.05)
    return os.getpid()


@define_workflow("timed-step", queue="p", max_concurrency=100)
def timed_step(ctx: Context[float]) -> int:
    """A step with a ``timeout`` of 60 s (armed by SIGALRM in a child) that marks
    its start, sleeps ``input`` seconds and counts its executions."""
    client = get_default_client()
    assert client is not None
    tag = client.keys.tag

    def nap() -> int:
        client.redis.incr(f"{tag}:step:{ctx.run.id}")
        client.redis.sadd(f"{tag}:tally-started", ctx.run.id)
        time.sleep(float(ctx.input))
        return os.getpid()

    return ctx.step.run("nap", nap, timeout=60)
