"""Retry policy (pure): validation, exponential backoff with jitter, which
errors retry."""

from __future__ import annotations

import math
import random

import pytest

from redflow_mp import (
    InputValidationError,
    NonRetriableError,
    OutputSerializationError,
    Retries,
    RunCanceledError,
    UnknownWorkflowError,
)
from redflow_mp.retry import backoff_seconds, is_retryable, retry_delay_ms

pytestmark = pytest.mark.timeout(10)


def test_default_is_one_attempt() -> None:
    assert Retries().max_attempts == 1


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = Retries(max_attempts=10, initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0)
    assert [backoff_seconds(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = Retries(max_attempts=5, initial_delay=2.0, multiplier=1.0, jitter=0.25)
    rng = random.Random(7)
    delays = [backoff_seconds(policy, 1, rng) for _ in range(500)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # really spread, not lockstep


def test_backoff_of_zero_delay_is_zero() -> None:
    assert backoff_seconds(Retries(initial_delay=0), 3) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": 1.5}, TypeError),
        ({"max_attempts": True}, TypeError),
        ({"initial_delay": -1}, ValueError),
        ({"initial_delay": "1"}, TypeError),
        ({"multiplier": 0.5}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"max_delay": -0.1}, ValueError),
    ],
)
def test_bad_policies_are_rejected(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        Retries(**kwargs)  # type: ignore[arg-type]


def test_which_errors_are_retried() -> None:
    assert is_retryable(ValueError("x"))
    assert is_retryable(TimeoutError())
    for final in (
        NonRetriableError("x"),
        InputValidationError("x"),
        UnknownWorkflowError("x"),
        OutputSerializationError("x"),
        RunCanceledError("R"),
    ):
        assert not is_retryable(final), type(final).__name__


def test_one_retry_or_fail_rule() -> None:
    policy = Retries(max_attempts=3, initial_delay=2.0, multiplier=3.0, jitter=0)
    assert retry_delay_ms(policy, 1, 3) == 2000
    assert retry_delay_ms(policy, 2, 3) == 6000
    assert retry_delay_ms(policy, 3, 3) is None  # the last attempt failed: for good
    assert retry_delay_ms(policy, 1, 3, retryable=False) is None
    assert retry_delay_ms(None, 1, 3) is None  # no policy: the workflow is unknown here
    # The run's own max_attempts decides, not the policy's (it was fixed at enqueue).
    assert retry_delay_ms(policy, 3, 5) == 18_000


def test_backoff_of_a_late_attempt_does_not_overflow() -> None:
    """max_attempts=10**6 ("retry for ever") with the default multiplier: attempt
    1,025 used to raise OverflowError (2.0 ** 1024) in the worker, which crashed it
    instead of scheduling the retry."""
    policy = Retries(max_attempts=10**6, jitter=0)
    assert backoff_seconds(policy, 1025) == policy.max_delay
    assert backoff_seconds(policy, 10**6 - 1) == policy.max_delay
    assert retry_delay_ms(policy, 5000, 10**6) == int(policy.max_delay * 1000)
    assert backoff_seconds(Retries(max_attempts=10**6, initial_delay=0), 5000) == 0.0


@pytest.mark.parametrize("name", ["initial_delay", "multiplier", "max_delay", "jitter"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_retries_reject_nan_and_infinity(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        Retries(**{name: value})  # type: ignore[arg-type]
