"""Run options (pure): absurd times are clear errors, not overflows or values
the Lua scripts would store in exponent notation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from redflow_mp.options import MAX_RUN_AT, RunOptions

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("run_at", [1e306, 1e15, MAX_RUN_AT + 1])
def test_run_at_beyond_the_limit_is_a_value_error(run_at: float) -> None:
    # 1e306 s used to raise OverflowError (inf ms); 1e15 s was stored as
    # availableAt "1e+18", which RunState.available_at could not read.
    with pytest.raises(ValueError, match="run_at"):
        RunOptions.of(run_at=run_at)


def test_run_at_up_to_the_limit_is_kept_exactly() -> None:
    assert RunOptions.of(run_at=MAX_RUN_AT).run_at_ms == MAX_RUN_AT * 1000
    when = datetime(2999, 12, 31, tzinfo=UTC)
    assert RunOptions.of(run_at=when).run_at_ms == int(when.timestamp()) * 1000


def test_sleep_until_beyond_the_limit_is_a_value_error() -> None:
    from redflow_mp.waits import check_wake_time

    with pytest.raises(ValueError, match="3000"):
        check_wake_time(1e306)  # used to raise OverflowError
    assert check_wake_time(MAX_RUN_AT) == MAX_RUN_AT * 1000


def test_run_options_of_nothing_are_the_defaults() -> None:
    """RunOptions.of() with no option returns a shared instance without checking
    anything (the common call): it must equal what the checks would have made."""
    from redflow_mp.options import RunOptions

    assert RunOptions.of() == RunOptions() == RunOptions.of(linked=True, parent_run_id="")
    assert RunOptions.of() is RunOptions.of()
    assert RunOptions.of(timeout=2.0).timeout == 2.0 and RunOptions.of(priority=0).priority == 0
    assert RunOptions.of(parent_run_id="P", linked=True).linked


@pytest.mark.parametrize(
    "option", ["run_at", "timeout", "idempotency_ttl"], ids=["run_at", "timeout", "ttl"]
)
def test_an_int_too_large_for_a_float_is_a_value_error(option: str) -> None:
    # An int past a double's range (10**400) raised OverflowError ("int too large
    # to convert to float") from math.isfinite: run(), run_by_name(), run_many(),
    # result(timeout=...), define_workflow(timeout=...), sync and async.
    with pytest.raises(ValueError, match=option):
        kwargs: dict[str, Any] = {option: 10**400}
        RunOptions.of(**kwargs, idempotency_key="k")


def test_a_wait_or_definition_timeout_too_large_for_a_float_is_a_value_error() -> None:
    from redflow_mp.options import check_timeout

    with pytest.raises(ValueError, match="timeout"):
        check_timeout(10**400, "timeout")
    assert check_timeout(10**20, "timeout") == 1e20
