"""Cron triggers: parsing, next-fire math and deterministic ids (pure).

A :class:`Cron` is attached to a workflow; ``sync_registry`` stores it in
``cron:def`` under an id derived from the workflow name, expression, timezone
and input, so the same definition always maps to the same id on every host.
Expressions are 5-field, or 6-field with a trailing seconds field as croniter
reads it. Next fire times are computed from "now" (Redis time, passed in), so a
leader that was away does not fire a burst of missed times.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

__all__ = ["Cron", "CronDef", "cron_id_for", "next_fire_ms"]


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
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise ValueError("Cron expression must be a non-empty string")
        fields = self.expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"Cron expression {self.expression!r} must have 5 fields "
                "(or 6 with a seconds field last)"
            )
        if not croniter.is_valid(self.expression):
            raise ValueError(f"Cron expression {self.expression!r} is not valid")
        _zone(self.timezone)
        if self.id is not None and (not isinstance(self.id, str) or not self.id.strip()):
            raise ValueError("Cron id must be a non-empty string when given")
        try:
            msgspec.json.encode(self.input)
        except (TypeError, msgspec.EncodeError, RecursionError) as exc:
            raise ValueError(f"Cron input is not JSON-encodable: {exc}") from None


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


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError("Cron timezone must be a non-empty IANA zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def cron_id_for(workflow: str, cron: Cron) -> str:
    """The stable id of ``cron`` on ``workflow`` (explicit id wins)."""
    if cron.id:
        return f"{workflow}:{cron.id}"
    digest = hashlib.sha1(
        msgspec.json.encode([workflow, cron.expression, cron.timezone, cron.input]),
        usedforsecurity=False,
    ).hexdigest()[:12]
    return f"{workflow}:{digest}"


def next_fire_ms(expression: str, timezone: str, after_ms: int) -> int:
    """The first fire time strictly after ``after_ms`` (epoch ms), in epoch ms."""
    zone = _zone(timezone)
    start = datetime.fromtimestamp(after_ms / 1000.0, tz=UTC).astimezone(zone)
    it = croniter(expression, start, second_at_beginning=False)
    nxt: datetime = it.get_next(datetime)
    return int(nxt.timestamp() * 1000)
