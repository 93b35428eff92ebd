"""Cron triggers (pure): validation, next fire times (5- and 6-field, time
zones, DST), deterministic ids."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from redflow_mp import Cron, Registry, define_workflow
from redflow_mp.cron import cron_id_for, next_fire_ms

pytestmark = pytest.mark.timeout(10)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def test_next_fire_is_strictly_after_now() -> None:
    at = _ms(datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC))
    assert next_fire_ms("*/15 * * * *", "UTC", at) == at + 15 * 60_000
    assert next_fire_ms("*/15 * * * *", "UTC", at + 1) == at + 15 * 60_000
    assert next_fire_ms("0 0 * * *", "UTC", at) == _ms(datetime(2024, 1, 2, tzinfo=UTC))


def test_six_field_expression_has_seconds_last() -> None:
    at = _ms(datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC))
    assert next_fire_ms("* * * * * */10", "UTC", at) == at + 10_000
    assert next_fire_ms("* * * * * *", "UTC", at) == at + 1_000


def test_next_fire_is_read_in_the_given_time_zone() -> None:
    at = _ms(datetime(2024, 1, 15, 0, 0, tzinfo=UTC))
    fire = next_fire_ms("0 9 * * *", "Europe/Berlin", at)
    local = datetime.fromtimestamp(fire / 1000, tz=ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (9, 0)
    assert datetime.fromtimestamp(fire / 1000, tz=UTC).hour == 8  # CET = UTC+1


def test_next_fire_across_a_dst_change_keeps_local_time() -> None:
    # Europe/Berlin switches to CEST on 2024-03-31.
    at = _ms(datetime(2024, 3, 29, 12, 0, tzinfo=UTC))
    first = next_fire_ms("0 9 * * *", "Europe/Berlin", at)
    second = next_fire_ms("0 9 * * *", "Europe/Berlin", first)
    assert second - first == 23 * 3600 * 1000
    local = datetime.fromtimestamp(second / 1000, tz=ZoneInfo("Europe/Berlin"))
    assert (local.day, local.hour) == (31, 9)


@pytest.mark.parametrize(
    "expr", ["", "   ", "* * * *", "* * * * * * *", "61 * * * *", "not a cron at all"]
)
def test_bad_expressions_are_rejected(expr: str) -> None:
    with pytest.raises(ValueError):
        Cron(expr)


def test_bad_timezone_input_and_id_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Cron("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="JSON"):
        Cron("* * * * *", input=object())
    with pytest.raises(ValueError, match="id"):
        Cron("* * * * *", id="  ")


def test_cron_ids_are_deterministic_and_distinct() -> None:
    a = Cron("*/5 * * * *", input={"x": 1})
    assert cron_id_for("wf", a) == cron_id_for("wf", Cron("*/5 * * * *", input={"x": 1}))
    assert cron_id_for("wf", a) != cron_id_for("wf", Cron("*/5 * * * *", input={"x": 2}))
    assert cron_id_for("wf", a) != cron_id_for("other", a)
    assert cron_id_for("wf", a) != cron_id_for("wf", Cron("*/5 * * * *", "Europe/Berlin", {"x": 1}))
    assert cron_id_for("wf", Cron("* * * * *", id="nightly")) == "wf:nightly"


# --------------------------------------------------------------- DST changes
# 2026: Europe/Berlin goes forward on 03-29 (02:00 CET -> 03:00 CEST, 01:00Z) and back
# on 10-25 (03:00 CEST -> 02:00 CET, 01:00Z); America/New_York forward on 03-08
# (02:00 EST -> 03:00 EDT, 07:00Z) and back on 11-01 (02:00 EDT -> 01:00 EST, 06:00Z).


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def _fires(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in (start, end], as UTC datetimes."""
    out: list[datetime] = []
    at = _ms(start)
    while True:
        at = next_fire_ms(expr, zone, at)
        if at > _ms(end):
            return out
        out.append(datetime.fromtimestamp(at / 1000, tz=UTC))


def _wall(fires: list[datetime], zone: str) -> list[str]:
    return [f.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for f in fires]


@pytest.mark.parametrize(
    ("expr", "zone", "day", "first", "next_day"),
    [
        ("30 2 * * *", "Europe/Berlin", 25, _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)),
        ("30 1 * * *", "America/New_York", 1, _utc(2026, 11, 1, 5, 30), _utc(2026, 11, 2, 6, 30)),
    ],
)
def test_fixed_time_fires_once_when_clocks_go_back(
    expr: str, zone: str, day: int, first: datetime, next_day: datetime
) -> None:
    """Issue 10 #16: the repeated wall-clock time fires at its first occurrence only."""
    month = 10 if day == 25 else 11
    fires = _fires(expr, zone, _utc(2026, month, day, 0, 0) - _hour(12), next_day)
    assert fires == [first, next_day], _wall(fires, zone)
    # Asked from inside the repeated hour (after the first occurrence fired, e.g. by a
    # new leader), the second occurrence is not a new fire time.
    inside = first + _hour(1) - _minute(20)  # 10 min into the second occurrence
    assert next_fire_ms(expr, zone, _ms(inside)) == _ms(next_day)


@pytest.mark.parametrize(
    ("expr", "zone", "start", "gap_end", "next_day"),
    [
        # 02:30 does not exist: once at 03:00 local, the first instant after the gap.
        (
            "30 2 * * *",
            "Europe/Berlin",
            _utc(2026, 3, 28, 12),
            _utc(2026, 3, 29, 1, 0),
            _utc(2026, 3, 30, 0, 30),
        ),
        (
            "30 2 * * *",
            "America/New_York",
            _utc(2026, 3, 7, 12),
            _utc(2026, 3, 8, 7, 0),
            _utc(2026, 3, 9, 6, 30),
        ),
        # Several skipped times of one expression still fire once.
        (
            "0,30 2 * * *",
            "Europe/Berlin",
            _utc(2026, 3, 29, 0, 0),
            _utc(2026, 3, 29, 1, 0),
            _utc(2026, 3, 30, 0, 0),
        ),
        (
            "*/15 2 * * *",
            "America/New_York",
            _utc(2026, 3, 8, 6, 0),
            _utc(2026, 3, 8, 7, 0),
            _utc(2026, 3, 9, 6, 0),
        ),
    ],
)
def test_fixed_time_in_the_spring_forward_gap_fires_once_after_it(
    expr: str, zone: str, start: datetime, gap_end: datetime, next_day: datetime
) -> None:
    fires = _fires(expr, zone, start, next_day)
    assert fires == [gap_end, next_day], _wall(fires, zone)
    assert _wall([gap_end], zone)[0].endswith(("03:00 CEST", "03:00 EDT"))


@pytest.mark.parametrize(
    ("zone", "start", "repeated"),
    [
        ("Europe/Berlin", _utc(2026, 10, 24, 23, 0), "02"),
        ("America/New_York", _utc(2026, 11, 1, 4, 0), "01"),
    ],
)
def test_every_quarter_hour_runs_by_real_time_through_fall_back(
    zone: str, start: datetime, repeated: str
) -> None:
    """``*/15 * * * *`` keeps firing every 15 real minutes; the repeated hour's
    quarter-hours fire in both occurrences, every other quarter-hour once."""
    fires = _fires("*/15 * * * *", zone, start, start + _hour(4))
    assert len(fires) == 16  # four hours of real time
    assert all(b - a == _minute(15) for a, b in itertools.pairwise(fires))
    counts = Counter(f.astimezone(ZoneInfo(zone)).strftime("%H:%M") for f in fires)
    assert {hm: n for hm, n in counts.items() if n != 1} == {
        f"{repeated}:{m:02d}": 2 for m in (0, 15, 30, 45)
    }


@pytest.mark.parametrize(
    ("zone", "start"),
    [("Europe/Berlin", _utc(2026, 3, 29, 0, 0)), ("America/New_York", _utc(2026, 3, 8, 6, 0))],
)
def test_every_quarter_hour_runs_by_real_time_through_spring_forward(
    zone: str, start: datetime
) -> None:
    fires = _fires("*/15 * * * *", zone, start, start + _hour(2))
    assert len(fires) == 8 and all(b - a == _minute(15) for a, b in itertools.pairwise(fires))
    walls = [f.astimezone(ZoneInfo(zone)).strftime("%H:%M") for f in fires]
    assert "02:30" not in walls and "03:00" in walls  # the gap's times do not exist


def test_fixed_hour_with_stepped_minutes_fires_each_wall_time_once() -> None:
    fires = _fires("*/15 2 * * *", "Europe/Berlin", _utc(2026, 10, 24, 12), _utc(2026, 10, 26, 2))
    assert _wall(fires, "Europe/Berlin") == [
        "10-25 02:00 CEST",
        "10-25 02:15 CEST",
        "10-25 02:30 CEST",
        "10-25 02:45 CEST",
        "10-26 02:00 CET",
        "10-26 02:15 CET",
        "10-26 02:30 CET",
        "10-26 02:45 CET",
    ]


def test_stepped_hour_runs_by_real_time() -> None:
    """``0 */2 * * *``: the hour field is stepped, so 02:00 fires in both occurrences."""
    fires = _fires("0 */2 * * *", "Europe/Berlin", _utc(2026, 10, 24, 21), _utc(2026, 10, 25, 3))
    assert _wall(fires, "Europe/Berlin") == [
        "10-25 00:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 04:00 CET",
    ]


def test_per_second_fixed_hour_skips_the_repeated_hour_in_one_step() -> None:
    last_first = _utc(2026, 10, 25, 0, 59, 59)  # 02:59:59 CEST
    assert next_fire_ms("* 2 * * * *", "Europe/Berlin", _ms(last_first) - 1) == _ms(last_first)
    assert next_fire_ms("* 2 * * * *", "Europe/Berlin", _ms(last_first)) == _ms(
        _utc(2026, 10, 26, 1, 0, 0)
    )


def _hour(n: int) -> timedelta:
    return timedelta(hours=n)


def _minute(n: int) -> timedelta:
    return timedelta(minutes=n)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6 *"])
def test_an_expression_that_never_fires_is_rejected_at_definition(expression: str) -> None:
    """February 30th passed Cron() and made sync_registry (so the supervisor's
    start, and every other workflow's sync) fail with croniter's bare "failed
    to find next date"."""
    with pytest.raises(ValueError, match="never fires"):
        Cron(expression)


def test_a_schedule_is_checked_with_croniter_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of a workflow's metadata builds its Cron triggers again (the
    workflows view, a run by name), and each built one was checked with croniter
    again (~0.2 ms: 4,000 workflows with a cron took ~0.4 s of each workflows
    view). A checked (expression, timezone) pair is now remembered."""
    import redflow_mp.cron as cron_module

    real = cron_module._croniter
    calls = 0

    def counted() -> object:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(cron_module, "_croniter", counted)
    Cron("17 3 * * 2", timezone="Asia/Tokyo", input={"a": 1})
    first = calls
    assert first >= 1
    Cron("17 3 * * 2", timezone="Asia/Tokyo", input={"b": 2})
    assert calls == first
    with pytest.raises(ValueError, match=r"zone"):
        Cron("17 3 * * 2", timezone="Not/AZone")
    with pytest.raises(ValueError, match="never fires"):
        Cron("0 0 30 2 *")
    with pytest.raises(ValueError, match="never fires"):
        Cron("0 0 30 2 *")  # a failed check is not remembered


def test_two_triggers_of_a_workflow_under_one_id_are_an_error() -> None:
    """``Cron("0 9 * * *", id="daily")`` and ``Cron("0 17 * * *", id="daily")`` on one
    workflow map to one cron entry: the sync kept the first and dropped the
    second without a word (17:00 never fired). Now a definition-time error, as
    for duplicate workflow names; the same trigger twice stays harmless."""
    with pytest.raises(ValueError, match="daily"):
        define_workflow(
            "w",
            cron=[Cron("0 9 * * *", id="daily"), Cron("0 17 * * *", id="daily")],
            registry=Registry(),
        )(lambda ctx: None)
    registry = Registry()
    define_workflow("w", cron=[Cron("0 9 * * *"), Cron("0 9 * * *")], registry=registry)(
        lambda ctx: None
    )
    wf = registry.get("w")
    assert wf is not None and len(wf.cron) == 2


def test_a_cron_input_that_never_matches_the_schema_is_an_error() -> None:
    """A cron's input that does not convert to the workflow's ``schema`` (a typo:
    ``{"ulr": ...}``) was accepted: every fire created a run that failed with
    InputValidationError, for good. ``.run()`` refuses such input at enqueue;
    a cron trigger now does at definition time."""

    class In(msgspec.Struct):
        url: str

    with pytest.raises(ValueError, match="schema"):
        define_workflow(
            "w", schema=In, cron=[Cron("0 9 * * *", input={"ulr": "x"})], registry=Registry()
        )(lambda ctx: None)
    define_workflow(
        "w", schema=In, cron=[Cron("0 9 * * *", input={"url": "x"})], registry=Registry()
    )(lambda ctx: None)


@pytest.mark.parametrize(
    "expression", ["R 3 * * *", "0 R(1-5) * * *", "r/15 * * * *", "R(0-29)/10 * * * *"]
)
def test_a_random_field_is_refused(expression: str) -> None:
    """croniter reads ``R`` as a random value drawn anew at each evaluation: the
    next fire time after each fire was drawn again, so ``R 3 * * *`` (once a day
    in the 3 o'clock hour) fired again the same hour whenever the new draw fell
    after the last fire (144 of 200 draws after a 03:17 fire), and each sync drew
    another first time. Refused."""
    with pytest.raises(ValueError, match="random"):
        Cron(expression)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expression": 5},
        {"expression": None},
        {"expression": "* * * * *", "timezone": 5},
        {"expression": "* * * * *", "timezone": None},
        {"expression": "* * * * *", "id": 7},
    ],
)
def test_a_wrong_type_is_a_type_error(kwargs: dict[str, object]) -> None:
    """As everywhere in the API (``define_workflow(queue=5)``, ``run(priority="1")``):
    a wrong type is a ``TypeError``, a bad value of the right type a ``ValueError``.
    ``Cron(5)`` and ``Cron(..., timezone=5)`` raised ``ValueError``."""
    with pytest.raises(TypeError, match="Cron"):
        Cron(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (float("nan"), "Cron input is NaN"),
        ({"a": [1.0, float("inf")]}, "Cron input['a'][1] is NaN"),
    ],
)
def test_a_cron_input_holding_nan_or_infinity_is_refused(value: object, where: str) -> None:
    # As a run's input (docs/guide.md, "Payloads"): msgspec would store null, so the
    # cron's runs would get an input other than the one defined, silently.
    with pytest.raises(ValueError) as refused:
        Cron("* * * * *", input=value)
    assert str(refused.value).startswith(where), str(refused.value)


def test_a_cron_input_holding_a_lone_surrogate_is_refused_clearly() -> None:
    with pytest.raises(ValueError) as refused:
        Cron("* * * * *", input={"file": "caf\udce9.csv"})
    assert "Cron input is not JSON-encodable" in str(refused.value), str(refused.value)
