"""``outage.Outage``: the log lines of a loop riding out Redis trouble (fake clock)."""

from __future__ import annotations

import logging

import pytest
import redis

from redflow_mp.errors import RedisBusyError, RedisOutOfMemoryError
from redflow_mp.outage import Outage, trouble


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_failure_then_one_line_per_repeat_then_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    outage = Outage(logging.getLogger("t.outage"), "finishing run r1", clock=clock)
    with caplog.at_level(logging.WARNING, "t.outage"):
        for _ in range(300):  # a minute of retries every 200 ms
            outage.failed(RedisOutOfMemoryError("OOM"))
            clock.now += 0.2
        outage.recovered()
        outage.recovered()  # nothing more to say
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 + 5 + 1, lines  # the first, one per 10 s, the recovery
    assert lines[0].startswith("Redis out of memory while finishing run r1 (OOM)")
    assert lines[1].startswith("Redis still out of memory while finishing run r1: 51 failures")
    assert lines[-1] == (
        "Redis answers again while finishing run r1: recovered after 60.0 s (300 failures)"
    )


def test_the_trouble_is_named() -> None:
    assert trouble(RedisOutOfMemoryError("x")) == "out of memory"
    assert trouble(RedisBusyError("BUSY x")) == "busy"
    assert trouble(redis.ResponseError("BUSY Redis is busy running a script")) == "busy"
    assert trouble(redis.ConnectionError("refused")) == "out of reach"
    assert trouble(redis.TimeoutError("timed out")) == "not answering"
