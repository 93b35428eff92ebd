"""Retry policy: how many attempts, how long between them, which errors retry (pure).

``Retries(max_attempts=3)`` on a workflow allows three attempts in all. The delay
before attempt ``n + 1`` is ``initial_delay * multiplier ** (n - 1)``, capped at
``max_delay``, then spread by ``±jitter`` (a fraction) so that a burst of failures
does not retry in lockstep; :func:`retry_delay_ms` never waits more than 1e9 s
(about 31 years, :data:`MAX_DELAY_MS`).

Never retried: input validation, unknown workflow, output serialization,
cancellation, and anything raised as :class:`NonRetriableError`.

:func:`retry_delay_ms` is the one retry-or-fail rule: the executor applies it to
a handler's error, the supervisor (through ``redflow_mp.recovery``) to a run it
stopped at its timeout.
"""

from __future__ import annotations

import math
import random

import msgspec

from .errors import NonRetriableError, RunCanceledError

__all__ = ["MAX_DELAY_MS", "Retries", "backoff_seconds", "is_retryable", "retry_delay_ms"]

#: The longest delay before a retry: 1e9 s (about 31 years), the bound of a step's
#: timeout. A policy may ask for more (``max_delay=1e15``, a slip of units), but
#: now + more passed 2**53 ms, which Redis wrote to the run as a float's text
#: (``9.69e+17``), a due time no reader took.
MAX_DELAY_MS = 10**12


class Retries(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Retry policy of a workflow.

    Args:
        max_attempts: total attempts including the first (default 1: no retry).
        initial_delay: seconds before the second attempt.
        multiplier: growth factor per further attempt.
        max_delay: upper bound of one delay, in seconds (a retry waits at most 1e9 s,
            about 31 years, whatever this says: :data:`MAX_DELAY_MS`).
        jitter: fraction of randomness applied to each delay (0 disables it).
    """

    max_attempts: int = 1
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("Retries.max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("Retries.max_attempts must be >= 1")
        for name in ("initial_delay", "multiplier", "max_delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Retries.{name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Retries.{name} must be a finite number >= 0, not {value!r}")
        if self.multiplier < 1:
            raise ValueError("Retries.multiplier must be >= 1")
        if self.jitter > 1:
            raise ValueError("Retries.jitter must be between 0 and 1")


def backoff_seconds(policy: Retries, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt`` (1-based) failed."""
    try:
        base = policy.initial_delay * policy.multiplier ** max(0, attempt - 1)
    except OverflowError:  # a late attempt of a long policy: the cap applies
        base = math.inf if policy.initial_delay > 0 else 0.0
    delay = min(policy.max_delay, base)
    if policy.jitter and delay > 0:
        spread = delay * policy.jitter
        delay += (rng or random).uniform(-spread, spread)
    return max(0.0, delay)


def is_retryable(exc: BaseException) -> bool:
    """Whether a handler exception may lead to another attempt."""
    return not isinstance(exc, NonRetriableError | RunCanceledError)


def retry_delay_ms(
    policy: Retries | None,
    attempt: int,
    max_attempts: int,
    retryable: bool = True,
    rng: random.Random | None = None,
) -> int | None:
    """Retry or fail: the delay in ms before the next attempt, or None when the
    run fails for good (the error is not retryable, ``attempt`` was the last of
    ``max_attempts``, or no policy is known: the workflow is not registered)."""
    if policy is None or not retryable or attempt >= max_attempts:
        return None
    return min(MAX_DELAY_MS, int(backoff_seconds(policy, attempt, rng) * 1000))
