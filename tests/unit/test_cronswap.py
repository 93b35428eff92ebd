"""The first fire time of a cron entry that replaces others (cronswap.first_fire):
never a fire time a replaced entry fired or passed, a due one it had not fired
taken over when the new schedule has it, and never held back by a replaced
entry's next fire time far ahead past what its runs fired."""

from __future__ import annotations

from redflow_mp.cron import CronDef, next_fire_ms
from redflow_mp.cronswap import first_fire

NOW = 1_796_645_832_400  # 2026-12-07, 0.4 s into a second
SECOND = NOW - NOW % 1000  # the whole second just passed


def _def(expression: str) -> CronDef:
    return CronDef(
        id="x", workflow="w", queue="q", expression=expression, timezone="UTC", input_json="null"
    )


def test_with_the_old_entry_up_to_date_the_next_fire_time_after_now() -> None:
    olds = [(_def("* * * * * *"), float(SECOND + 1000), SECOND)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 1000


def test_a_fire_time_the_old_entry_was_due_at_and_did_not_fire_is_taken_over() -> None:
    olds = [(_def("* * * * * *"), float(SECOND - 3000), SECOND - 4000)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND - 3000
    # not when the new schedule does not have it
    assert first_fire("* * * * * */10", "UTC", NOW, olds) == SECOND - SECOND % 10_000 + 10_000


def test_a_fire_time_another_replaced_entry_fired_is_not_taken_over() -> None:
    due = (_def("* * * * * *"), float(SECOND), SECOND - 1000)
    fired = (_def("* * * * * *"), float(SECOND + 1000), SECOND)
    assert first_fire("* * * * * *", "UTC", NOW, [due, fired]) == SECOND + 1000


def test_a_fire_time_a_replaced_entry_fired_after_the_read_is_passed() -> None:
    # its latest run fired the first fire time after now (at a clock ahead), and
    # its next fire time lies a second past it
    olds = [(_def("* * * * * *"), float(SECOND + 2000), SECOND + 1000)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 2000
    # a replaced entry of another schedule (even seconds) passed only its own fire times
    even = SECOND + 4000 + SECOND % 2000
    olds = [(_def("* * * * * */2"), float(even), even - 2000)]
    first_odd = SECOND + 1000 if (SECOND // 1000) % 2 == 0 else SECOND + 2000
    assert first_fire("* * * * * *", "UTC", NOW, olds) == first_odd


def test_an_unreadable_replaced_entry_passes_nothing_after_now() -> None:
    olds = [(None, float(SECOND + 60_000), 0)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 1000


def test_a_new_entry_past_many_handled_fire_times_starts_after_the_replaced_ones() -> None:
    # a replaced per-second entry that fired up to an hour ahead (at a clock that
    # ran ahead): the fire times in between are its own
    olds = [(_def("* * * * * *"), float(SECOND + 3_600_000), SECOND + 3_599_000)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 3_600_000
    # it fired up to half an hour ahead: the new entry goes on after that
    olds = [(_def("* * * * * *"), float(SECOND + 3_600_000), SECOND + 1_800_000)]
    assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 1_801_000


def test_a_replaced_entry_whose_next_fire_time_lies_far_ahead_holds_nothing_back() -> None:
    """Its next fire time lay a year ahead (written by hand, or at a clock that
    ran ahead and was set back before it fired), and no run or skip of it came
    after now: every fire time of its schedule up to it counted as its own, and
    the new entry started at it (past 64 of them), silent for a year. Now the
    new schedule's next fire time after now."""
    year = 366 * 24 * 3_600_000
    for latest in (0, SECOND - 5000):
        for expression in ("* * * * * *", "0 * * * *"):
            olds = [(_def(expression), float(SECOND + year), latest)]
            assert first_fire("* * * * * *", "UTC", NOW, olds) == SECOND + 1000
            assert first_fire("0 * * * *", "UTC", NOW, olds) == next_fire_ms(
                "0 * * * *", "UTC", NOW
            )


def test_a_replaced_entry_of_an_absurd_next_fire_time_does_not_fail_the_sync() -> None:
    """A next fire time out of croniter's range (a neighbour's or a hand-made
    score: +inf, -inf, year 33658) raised ValueError/OverflowError and failed the
    sync (a supervisor's start); the old code started the entry after now. The
    leader fires none of such an entry's times: the new one starts after now."""
    for score in (float("inf"), float("-inf"), 1e15, -1e15):
        for expression in ("* * * * * *", "0 0 * * *"):
            olds = [(_def(expression), score, 0)]
            got = first_fire("* * * * * *", "UTC", NOW, olds)
            assert got == SECOND + 1000, (score, expression)
