"""Cron triggers (pure): validation, next fire times (5- and 6-field, time
zones, DST), deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from redflow_mp import Cron
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
