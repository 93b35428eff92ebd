"""The log lines of a loop that rides out Redis trouble (:class:`Outage`).

A worker retries what Redis refuses or never answers (a finish, a claim, a
step's write, a lease renewal, the idle wait) until it goes through. One line
per attempt made a log of 300 lines a minute per child (2,400 with 8
children) for as long as an outage lasted, all saying "unreachable" even when
Redis answered "out of memory". An :class:`Outage` logs the first failure, then
at most one line every :data:`REPEAT_S` with the count and duration so far, and
one line when the call goes through again; each line says what happened
(:func:`trouble`).

Invariants: an outage object belongs to one loop (one thread); it keeps no
socket or lock and survives a fork unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from .errors import (
    RedisBusyError,
    RedisClusterDownError,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
)
from .replies import is_busy

__all__ = ["REPEAT_S", "Outage", "trouble"]

#: The longest a loop riding out trouble stays silent (s).
REPEAT_S = 10.0


def trouble(exc: BaseException) -> str:
    """What ``exc`` says happened to Redis, in a few words ("out of memory")."""
    if isinstance(exc, RedisOutOfMemoryError):
        return "out of memory"
    if isinstance(exc, RedisBusyError) or (isinstance(exc, redis.ResponseError) and is_busy(exc)):
        return "busy"
    if isinstance(exc, RedisReadOnlyError | redis.ReadOnlyError):
        return "not accepting writes"
    if isinstance(exc, RedisClusterDownError):
        return "cluster down"
    if isinstance(exc, redis.TimeoutError):
        return "not answering"
    return "out of reach"


class Outage:
    """The log lines of one retry loop: see the module doc.

    Args:
        logger: where the lines go (a ``LoggerAdapter`` keeps a run's context).
        what: what the loop does, after "while" ("finishing run X").
        repeat: the longest silence while the trouble lasts (s).
        clock: monotonic seconds (tests pass a fake one).
        name_class: each line names the error's class ("ConnectionError: ...")
            before its message (the supervisor's duties: an operator greps for it).
    """

    __slots__ = ("_clock", "_first", "_last", "_log", "_name_class", "_repeat", "count", "what")

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        what: str,
        repeat: float = REPEAT_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        name_class: bool = False,
    ) -> None:
        self._log = logger
        self._name_class = name_class
        self.what = what
        self._repeat = repeat
        self._clock = clock
        self.count = 0  # failures since the last success
        self._first = 0.0
        self._last = 0.0

    def failed(self, exc: BaseException, retry_in: float | None = None) -> None:
        """An attempt failed with ``exc``; the loop retries (in ``retry_in`` s)."""
        now = self._clock()
        self.count += 1
        then = f"; retrying in {retry_in:.2f} s" if retry_in is not None else "; retrying"
        said = f"{type(exc).__name__}: {exc}" if self._name_class else exc
        if self.count == 1:
            self._first = self._last = now
            self._log.warning("Redis %s while %s (%s)%s", trouble(exc), self.what, said, then)
        elif now - self._last >= self._repeat:
            self._last = now
            self._log.warning(
                "Redis still %s while %s: %d failures in %.0f s (%s)%s",
                trouble(exc),
                self.what,
                self.count,
                now - self._first,
                said,
                then,
            )

    def recovered(self) -> None:
        """An attempt went through: one line if failures came before it."""
        if self.count:
            self._log.warning(
                "Redis answers again while %s: recovered after %.1f s (%d failures)",
                self.what,
                self._clock() - self._first,
                self.count,
            )
            self.count = 0
