"""Cron triggers: parsing, next-fire math and deterministic ids (pure).

A :class:`Cron` is attached to a workflow; ``sync_registry`` stores it in
``cron:def`` under an id derived from the workflow name, expression, timezone
and input, so the same definition always maps to the same id on every host.
Expressions are 5-field, or 6-field with a trailing seconds field as croniter
reads it. Next fire times are computed from "now" (Redis time, passed in), so a
leader that was away does not fire a burst of missed times.

Daylight-saving changes (the expression is read in its ``timezone``), following
Vixie cron, whose rule tells "fixed-time" from "wildcard" entries:

- An expression whose **hour field is fixed** (``30 2 * * *``, ``0,30 1-3 * * *``,
  ``*/15 2 * * *``) fires **once per wall-clock time**. When clocks go back, a
  repeated time fires at its first occurrence only (``30 2 * * *`` in
  Europe/Berlin on 2026-10-25: 02:30 CEST, not again at 02:30 CET). When clocks
  go forward past it, a time that does not exist that day fires once at the
  first instant after the gap (03:00 local for 02:30 in Berlin or New York), so
  a daily job never misses a day; several skipped times fire once together.
- An expression whose **hour field is ``*`` or ``*/n``** (``*/15 * * * *``,
  ``0 */2 * * *``) runs **by real time**: its times are found on the wall
  clock, but a repeated hour's times fire again in their second occurrence
  (``*/15`` keeps firing every 15 real minutes through the night clocks go
  back, so 02:00-02:45 fire twice), and times inside a gap do not exist and
  are not made up (``*/15`` goes from 01:45 to 03:00, 15 real minutes).
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from .finite import non_finite_path

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["Cron", "CronDef", "cron_id_for", "next_fire_ms"]


def _croniter() -> Any:
    """The ``croniter`` class, imported on first use: the import costs about 50 ms
    (dateutil, and a ``file`` subprocess croniter starts to learn the word size),
    which every supervisor and client start would pay without a cron."""
    from croniter import croniter

    return croniter


class Cron(msgspec.Struct, frozen=True, kw_only=False):
    """A cron trigger: ``Cron("*/15 * * * *", timezone="Europe/Berlin", input={...})``.

    Args:
        expression: 5 fields (minute hour day month weekday), or 6 with seconds last.
        timezone: IANA zone the expression is read in; default UTC.
        input: the input of every run it creates (JSON-encodable).
        id: optional stable id; derived from the other fields when omitted.
    """

    expression: str
    timezone: str = "UTC"
    input: Any = None
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise TypeError(f"Cron expression must be a str, not {type(self.expression).__name__}")
        if not self.expression.strip():
            raise ValueError("Cron expression must be a non-empty string")
        if not isinstance(self.timezone, str):
            raise TypeError(f"Cron timezone must be a str, not {type(self.timezone).__name__}")
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError(f"Cron id must be a str or None, not {type(self.id).__name__}")
        fields = self.expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"Cron expression {self.expression!r} must have 5 fields "
                "(or 6 with a seconds field last)"
            )
        if (self.expression, self.timezone) not in _VALID:
            _check_schedule(self.expression, self.timezone)
        if self.id is not None and not self.id.strip():
            raise ValueError("Cron id must be a non-empty string when given")
        # Checked as a run's input is (docs/guide.md, "Payloads"): the cron's runs get
        # this input, so what msgspec would silently store otherwise is refused here.
        try:
            data = msgspec.json.encode(self.input)
        except UnicodeEncodeError:
            raise ValueError(
                "Cron input is not JSON-encodable: it holds text that is not valid Unicode "
                "(a lone surrogate)"
            ) from None
        except (TypeError, ValueError, msgspec.EncodeError, OverflowError, RecursionError) as exc:
            raise ValueError(f"Cron input is not JSON-encodable: {exc}") from None
        path = non_finite_path(self.input, data)
        if path is not None:
            raise ValueError(
                f"Cron input{path} is NaN or infinite: JSON has no such number (msgspec "
                "would store null); pass None or a string instead"
            )


#: (expression, timezone) pairs that passed :func:`_check_schedule`: every read of
#: a workflow's metadata builds its Cron triggers again (the workflows view, a
#: run by name), and the croniter checks cost ~0.2 ms each (4,000 workflows with
#: a cron: ~0.4 s per view). Bounded: cleared when full.
_VALID: set[tuple[str, str]] = set()
_VALID_MAX = 4096


#: A croniter random field (``R``, ``R(a-b)``, ``R/n``): drawn anew at each evaluation.
_RANDOM_FIELD = re.compile(r"^r(\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)


def _check_schedule(expression: str, timezone: str) -> None:
    """Raise ValueError unless ``expression`` is valid and fires in ``timezone``."""
    if not _croniter().is_valid(expression):
        raise ValueError(f"Cron expression {expression!r} is not valid")
    if any(_RANDOM_FIELD.match(part) for f in expression.split() for part in f.split(",")):
        # The next fire time is computed again after each fire: a new draw could
        # fall later in the same period (``R 3 * * *`` firing twice at 3 o'clock).
        raise ValueError(
            f"Cron expression {expression!r}: random fields (R) are not supported "
            "(each fire would draw a new time); write the value"
        )
    _zone(timezone)
    try:  # February 30th is valid syntax; syncing it would fail later
        next_fire_ms(expression, timezone, int(time.time() * 1000))
    except ValueError:
        raise ValueError(
            f"Cron expression {expression!r} never fires (no date matches it)"
        ) from None
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID.add((expression, timezone))


class CronDef(msgspec.Struct, kw_only=True, rename="camel"):
    """The record stored in ``cron:def`` for one trigger."""

    id: str
    workflow: str
    queue: str
    expression: str
    timezone: str
    input_json: str
    max_concurrency: int = 1
    max_attempts: int = 1
    timeout_ms: int = 0
    priority: int = 0


def _zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only with a cron schedule

    if not isinstance(name, str) or not name:
        raise ValueError("Cron timezone must be a non-empty IANA zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def cron_id_for(workflow: str, cron: Cron) -> str:
    """The stable id of ``cron`` on ``workflow`` (explicit id wins).

    ``<workflow>:<id>`` when the id holds no ':' (every derived id, and the explicit
    ids of before): split at its last ':', such an id names one pair. Otherwise
    ``<len(workflow)>:<workflow>:<id>:``, which no id of the first form ends with
    (an id is never empty): ``reports`` + ``daily:eu`` and ``reports:daily`` +
    ``eu`` were both ``reports:daily:eu``, one cron entry for two workflows."""
    suffix = cron.id
    if not suffix:
        suffix = hashlib.sha1(
            msgspec.json.encode([workflow, cron.expression, cron.timezone, cron.input]),
            usedforsecurity=False,
        ).hexdigest()[:12]
    if ":" not in suffix:
        return f"{workflow}:{suffix}"
    return f"{len(workflow)}:{workflow}:{suffix}:"


def _hour_is_fixed(expression: str) -> bool:
    """True unless the hour field is ``*`` or ``*/n`` (the module docstring's rule)."""
    return not expression.split()[1].startswith("*")


def _repeated(second: int, zone: ZoneInfo) -> int:
    """How long the wall-clock interval that ``second`` (epoch s) repeats is, in s:
    > 0 when ``second`` lies in the second occurrence of a time clocks went back over."""
    local = datetime.fromtimestamp(second, tz=zone)
    if not local.fold:
        return 0
    first, now = local.replace(fold=0).utcoffset(), local.utcoffset()
    if first is None or now is None or first <= now:
        return 0
    return int((first - now).total_seconds())


def _end_of_repeat(second: int, zone: ZoneInfo) -> int:
    """The first epoch second after the repeated interval that ``second`` lies in."""
    lo, hi = second, second + _repeated(second, zone)  # lo inside, hi past it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _repeated(mid, zone):
            lo = mid
        else:
            hi = mid
    return hi


def next_fire_ms(expression: str, timezone: str, after_ms: int) -> int:
    """The first fire time strictly after ``after_ms`` (epoch ms), in epoch ms.

    Across daylight-saving changes, see the module docstring: fixed hours fire
    once per wall-clock time, ``*`` / ``*/n`` hours by real time.

    Raises:
        ValueError: an expression that is not 5 or 6 fields, or that croniter
            cannot read or never fires; an unknown timezone. (A definition read
            from Redis may hold anything: an IndexError out of the hour rule
            for ``@hourly`` or ``""`` stopped every cron tick of the prefix.)
    """
    if len(expression.split()) not in (5, 6):
        raise ValueError(
            f"Cron expression {expression!r} must have 5 fields (or 6 with a seconds field last)"
        )
    zone = _zone(timezone)
    once = _hour_is_fixed(expression)
    after = after_ms
    fire = after_ms
    for _ in range(8):  # each pass leaves one repeated interval behind
        start = datetime.fromtimestamp(after / 1000.0, tz=UTC).astimezone(zone)
        itr = _croniter()(expression, start, second_at_beginning=False)
        nxt: datetime = itr.get_next(datetime)
        fire = int(nxt.timestamp() * 1000)
        if not (once and _repeated(fire // 1000, zone)):
            return fire
        # A second occurrence: this wall-clock time already fired (or would have)
        # in the first one. Look again from the end of the repeated interval.
        after = _end_of_repeat(fire // 1000, zone) * 1000 - 1
    return fire
