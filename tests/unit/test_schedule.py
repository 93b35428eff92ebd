"""The arbiter's duty schedule (``supervisor/duties``): a pass stops early for a
waiting signal and after a duty's network failure, and the next pass starts
after the duty it stopped at (no duty starves behind a failing one)."""

from __future__ import annotations

import logging

import pytest
import redis

from redflow_supervisor.duties import Schedule


class _Duty:
    def __init__(self, name: str, calls: list[str], error: Exception | None = None) -> None:
        self.name = name
        self.calls = calls
        self.error = error

    def tick(self, now: float) -> float:
        self.calls.append(self.name)
        if self.error is not None:
            raise self.error
        return now  # due again at once


def test_a_network_failure_ends_the_pass_and_the_next_starts_after_it() -> None:
    calls: list[str] = []
    down = redis.TimeoutError("Timeout reading from 127.0.0.1:1")
    schedule = Schedule([_Duty("a", calls, down), _Duty("b", calls), _Duty("c", calls, down)])
    schedule.run(0.0)
    assert calls == ["a"]  # b and c stay due: each call would block as long
    schedule.run(0.0)
    assert calls == ["a", "b", "c"]
    schedule.run(2.0)
    assert calls == ["a", "b", "c", "a"]  # after c: a (due again), not b first
    schedule.run(2.0)
    assert calls == ["a", "b", "c", "a", "b", "c"]


def test_other_failures_do_not_end_the_pass() -> None:
    calls: list[str] = []
    refused = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    schedule = Schedule([_Duty("a", calls, refused), _Duty("b", calls)])
    schedule.run(0.0)
    assert calls == ["a", "b"]


def test_a_waiting_signal_ends_the_pass_after_its_first_duty() -> None:
    calls: list[str] = []
    schedule = Schedule([_Duty("a", calls), _Duty("b", calls), _Duty("c", calls)])

    def always() -> bool:  # a steady stream of signals (child exits)
        return True

    schedule.run(0.0, always)
    assert calls == ["a"]  # the first due duty runs whatever waits: none starves
    schedule.run(0.0, always)
    assert calls == ["a", "b"]
    schedule.run(0.0, always)
    assert calls == ["a", "b", "c"]
    schedule.run(0.0, lambda: False)
    assert calls == ["a", "b", "c", "a", "b", "c"]


def test_after_a_network_failure_a_waiting_signal_comes_before_any_duty() -> None:
    calls: list[str] = []
    down = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1")
    schedule = Schedule([_Duty("a", calls, down), _Duty("b", calls)])
    schedule.run(0.0)
    assert calls == ["a"]
    schedule.run(0.0, lambda: True)
    assert calls == ["a"]  # b would block as long: the signal first
    schedule.run(0.0, lambda: False)
    assert calls == ["a", "b"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_once_then_once_a_minute_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis outage logged one line per duty per pass (about 14 lines every 10 s
    with the arbiter's duties); now one for its start, at most one a minute, and
    one for its end, naming the error's class and the duties."""
    clock = _Clock()
    calls: list[str] = []
    down = redis.ConnectionError("Error 111 connecting to 10.0.0.1:6379. Connection refused.")
    duties = [_Duty(name, calls, down) for name in ("reaper", "promoter", "cron", "status")]
    schedule = Schedule(list(duties), clock=clock)
    with caplog.at_level(logging.WARNING, "redflow_supervisor"):
        for _ in range(150):  # 150 s of an outage, a pass a second
            schedule.run(clock.now)
            schedule.run(clock.now)  # the rest of the pass (it stops at a network failure)
            clock.now += 1.0
        for d in duties:
            d.error = None
        for _ in range(4):
            schedule.run(clock.now)
        clock.now += 1.0
        schedule.run(clock.now)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 + 2 + 1, "\n".join(lines)  # first, at 60 s and 120 s, recovery
    assert lines[0].startswith("Redis out of reach while running duty reaper (ConnectionError: ")
    assert "still out of reach while running duties reaper, promoter, cron, status" in lines[1]
    assert lines[-1].startswith(
        "Redis answers again while running duties reaper, promoter, cron, status: "
        "recovered after 150.0 s"
    ), lines[-1]


def test_a_refused_duty_is_still_logged_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    calls: list[str] = []
    refused = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    schedule = Schedule([_Duty("reaper", calls, refused)], clock=clock)
    with caplog.at_level(logging.WARNING, "redflow_supervisor"):
        for _ in range(25):
            schedule.run(clock.now)
            clock.now += 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"reaper duty failed: {refused}"] * 3, lines  # every 10 s


def _down(schedule: Schedule) -> bool:
    return schedule.down


def test_while_redis_is_down_no_duty_is_called_until_the_probe_finds_it() -> None:
    calls: list[str] = []
    probes: list[bool] = []
    errors: list[str] = []
    answers = {"now": False}
    down = redis.TimeoutError("Timeout reading from 127.0.0.1:1")
    a = _Duty("a", calls, down)

    def probe() -> bool:
        probes.append(answers["now"])
        return answers["now"]

    schedule = Schedule([a, _Duty("b", calls)], on_error=lambda: errors.append("e"), probe=probe)
    schedule.run(0.0)
    assert calls == ["a"] and probes == []  # not down yet: no probe
    schedule.run(0.5)
    assert calls == ["a"] and probes == [False]  # b would block: not called
    assert schedule.next_due() == 1.0 and len(errors) == 2  # b due again in 1 s, a at 1
    assert _down(schedule)
    answers["now"] = True
    a.error = None
    schedule.run(1.5)
    assert calls == ["a", "b", "a"] and probes == [False, True]
    assert not _down(schedule)
    schedule.run(1.5)
    assert probes == [False, True]  # Redis answers duties again: no probe
