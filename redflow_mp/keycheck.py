"""Keys of the wrong type: found, named once, left out, looked at again.

A worker's claim reads the ready sets of all its queues in one script and its
idle wait blocks on all their bells in one BLPOP, so one queue key that holds
another type of value (set by hand, or by another program writing into our
prefix) made every claim or wait fail: the children crashed in a loop and the
runs of every other queue stalled. :class:`Bench` finds which keys are at fault
(``TYPE``), logs each one once per :data:`RECHECK_S` with its name, and leaves
that queue (ready set) or that bell out until then; the other queues go on.

The scripts skip a listing index of the wrong type and leave a run where it was
when a set that places it is (``failed`` in ``lua/_lib.lua``), so some such keys
are never reported by a failing call: :func:`wrong_types` over
:func:`expected_types` is the supervisor's periodic check (every
:data:`CHECK_S`) that names each of them, what it costs and what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from .errors import TRANSIENT_ERRORS
from .keys import STATUSES, Keys
from .replies import is_busy

__all__ = [
    "CHECK_S",
    "RECHECK_S",
    "Bench",
    "expected_types",
    "shared_keys",
    "types_of",
    "wrong_of",
    "wrong_types",
]

log = logging.getLogger("redflow_mp.worker")

RECHECK_S = 10.0
"""How long a key found of the wrong type is left out before it is tried again."""


class Bench:
    """Keys left out of claims (ready sets) or of the idle wait (bells) until a time."""

    def __init__(self, recheck_s: float = RECHECK_S) -> None:
        self.recheck_s = recheck_s
        self._until: dict[str, float] = {}

    def __bool__(self) -> bool:
        """Any key left out (the hot path asks nothing more when none is)."""
        return bool(self._until)

    def benched(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:  # time to try it again
            del self._until[key]
            return False
        return True

    def keep(self, keys: Iterable[str]) -> list[str]:
        """``keys`` without the benched ones."""
        return [k for k in keys if not self.benched(k)]

    def check(
        self, redis: Any, keys: Sequence[str], expected: str, what: str, effect: str = ""
    ) -> list[str]:
        """``TYPE`` of each of ``keys`` (one pipeline); the ones that hold neither
        nothing nor ``expected`` are benched and returned; each is logged once per
        recheck period, with ``effect`` (default: that queue is left out)."""
        try:
            with redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                kinds = pipe.execute()
        except TRANSIENT_ERRORS:
            return []
        except ResponseError as exc:
            if is_busy(exc):  # a neighbour's long script: no key is known broken
                return []
            raise
        wrong = []
        for key, kind in zip(keys, kinds, strict=True):
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind in ("none", expected):
                continue
            wrong.append(key)
            if self.benched(key):
                continue  # said already
            self._until[key] = time.monotonic() + self.recheck_s
            log.error(
                "%s key %s holds a %s, not a %s (written by hand or by another program?): "
                "%s; delete or rename it",
                what,
                key,
                kind,
                expected,
                effect or f"left out for {self.recheck_s:.0f} s, the other queues go on",
            )
        return wrong


def shared_keys(keys: Keys, workflows: Iterable[str] = ()) -> dict[str, list[str]]:
    """The keys shared by many runs that a claim writes (prefix-wide, and the
    concurrency gates of ``workflows``), by the type they must have."""
    zsets = [keys.leases, keys.runs_created, *(keys.runs_status(s) for s in STATUSES)]
    sets = [keys.parked, keys.queues, *(keys.wf_running(w) for w in workflows)]
    return {"zset": zsets, "set": sets}


CHECK_S = 60.0
"""How often the supervisor looks for shared keys of the wrong type."""

_LISTING = (
    "runs go on but are missing from this listing (list_runs, dashboard, metrics, "
    "retention) until it is removed"
)
_STATUS = (
    "runs go on but are missing from this listing (list_runs, dashboard, metrics); "
    "those that change status while it is broken stay missing after it is removed, "
    "but for those that finish meanwhile (kept in runs:unindexed: put back into "
    "the index within a minute of its removal)"
)
_PLACING = (
    "the runs it would hold cannot move there (claims, retries, delays, wake-ups) "
    "until it is removed; none is lost"
)


def expected_types(
    keys: Keys, workflows: Iterable[str] = (), queues: Iterable[str] = ()
) -> list[tuple[str, str, str]]:
    """``(key, type, what a key of another type costs)`` for every key shared by
    many runs: prefix-wide, per workflow of ``workflows``, per queue of ``queues``."""
    out = [
        (keys.runs_created, "zset", _LISTING),
        *((keys.runs_status(s), "zset", _STATUS) for s in STATUSES),
        (
            keys.runs_unindexed,
            "zset",
            "a run that finishes while its status index is of another type is never "
            "removed by retention",
        ),
        (keys.queues, "set", _LISTING),
        (keys.parked, "set", _LISTING),
        (keys.workflows, "set", _LISTING),
        (keys.leases, "zset", "no run is claimed until it is removed; none is lost"),
        (keys.due_queues, "zset", _PLACING),
        (
            keys.ready_queues,
            "zset",
            "claims of many queues read every queue served (slower); none is lost",
        ),
        (keys.timers, "zset", _PLACING),
        (
            keys.cascades,
            "zset",
            "a cancel cascade whose canceller died is not finished by the supervisor",
        ),
        (
            keys.on_failure_due,
            "zset",
            "an on_failure hook whose process died is not called again",
        ),
        (keys.cron_next, "zset", "no cron entry fires until it is removed"),
        (keys.cron_def, "hash", "no cron entry fires until it is removed"),
        (keys.cron_last, "hash", "cron runs that wait to start no longer hold back new fires"),
        (
            keys.cron_skipped,
            "hash",
            "a skipped cron fire time may be fired late after the Redis clock went back",
        ),
        (
            keys.relist,
            "hash",
            "the relist sweep reads only its first page of runs until it is removed",
        ),
    ]
    for wf in workflows:
        out += [
            (keys.workflow(wf), "hash", f"no run of {wf} is claimed until it is removed"),
            (keys.workflow_runs(wf), "zset", _LISTING),
            (keys.wf_running(wf), "set", f"no run of {wf} is claimed until it is removed"),
            (keys.wf_waiting(wf), "zset", _PLACING),
            (
                keys.wf_suspended(wf),
                "set",
                f"a wait of {wf} past 256 slots that cannot start is not told apart (it suspends)",
            ),
            (keys.rate(wf), "zset", f"no run of {wf} is claimed until it is removed"),
            (keys.rate_started(wf), "zset", f"no run of {wf} is claimed until it is removed"),
        ]
    for q in queues:
        out += [
            (keys.q_ready(q), "zset", _PLACING),
            (keys.q_scheduled(q), "zset", _PLACING),
            (keys.q_bell(q), "list", "idle workers of the queue poll instead of waiting"),
        ]
    return out


def wrong_types(
    redis: Any, expected: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str, str]]:
    """``(key, type found, type expected, cost)`` of each of ``expected`` that holds
    another type than its own (one pipeline of ``TYPE``)."""
    return wrong_of(expected, types_of(redis, [key for key, _, _ in expected]))


def types_of(redis: Any, keys: Sequence[str]) -> list[str]:
    """The ``TYPE`` of each of ``keys`` (one pipeline), ``none`` for a missing one."""
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        kinds = pipe.execute()
    return [kind.decode() if isinstance(kind, bytes) else str(kind) for kind in kinds]


def wrong_of(
    expected: Sequence[tuple[str, str, str]], kinds: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    """:func:`wrong_types` of ``expected`` whose types are ``kinds`` (:func:`types_of`)."""
    return [
        (key, kind, want, cost)
        for (key, want, cost), kind in zip(expected, kinds, strict=True)
        if kind not in ("none", want)
    ]
