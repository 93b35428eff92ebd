"""Rate limits: ``rate_limit="100/m"`` on ``define_workflow`` (also ``/s``, ``/h``).

Pure: parsing and the text form synced to Redis (the workflow hash's
``rateLimit`` field). Enforcement is in the claim (``lua/_lib_rate.lua``:
``rate_deferred``), atomically and for every supervisor: no window of one
period holds more than ``count`` actual starts of the workflow's runs (their
``startedAt``). Two ZSETs trimmed to one period: ``rate-started:<workflow>``,
the actual starts, and ``rate:<workflow>``, the plan (the starts and the starts
reserved for waiting runs). A run claimed over the limit is not spun on: it
reserves the earliest start the plan allows and waits in its queue's
``scheduled`` set until then, holding no process and making no Redis call, and
the claim goes on to the next candidate. So a backlog starts in waves:
``count`` runs at once, the next ``count`` about one period after each of
those, and so on, whichever supervisor claims them.

A reservation is a place in line, not a start: the run comes back when the
promoter brings it (within ``promoter_interval_ms``, 200 ms by default) and a
worker is free, late, and its claim checks the actual starts again; with the
window full it reserves again near its old place (``rate_recheck``; the
argument is in docs/internals.md, "Rate limits"). A reservation is kept if the
run is canceled meanwhile (the plan counts it; never more starts than the limit).
A reserved run that the concurrency gate parks when it comes back gives its
reservation back (``rate_unreserve``) and takes a new start when released.
A sync that changes the limit puts the runs waiting on reservations of the old
one back in their ready sets (``lua/replan_rate.lua``): they reserve again under
the new one.
A start logged more than a second after the claim's time (Redis's clock went
back) makes the claim drop the entries logged after its time from both logs, so
that the workflow does not wait for the real time to catch up with them; a
smaller jump back leaves them (dropped, they let starts past the limit).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["PERIODS", "RateLimit", "parse_rate_limit"]

#: Unit -> period in milliseconds.
PERIODS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_MAX_COUNT = 100_000
_FORM = re.compile(r"([0-9]+)/([smh])")


class RateLimit(NamedTuple):
    """At most ``limit`` run starts per ``period_ms``; ``text`` is the synced form."""

    limit: int
    period_ms: int
    text: str


def parse_rate_limit(value: object) -> RateLimit | None:
    """``"100/m"`` -> ``RateLimit(100, 60000, "100/m")``; None -> None.

    Raises ``TypeError`` for anything but a str (or None), ``ValueError`` for a
    str that is not ``<count>/<s|m|h>`` with a count from 1 to 100,000 (the
    window's log holds up to that many starts).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"rate_limit must be a str like '100/m' (runs per s, m or h) or None, "
            f"not {type(value).__name__}"
        )
    match = _FORM.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"rate_limit {value!r} is not '<count>/<unit>' with a positive whole count and "
            "a unit of s, m or h (for example '100/m')"
        )
    count = int(match.group(1))
    if not 1 <= count <= _MAX_COUNT:
        raise ValueError(f"rate_limit {value!r}: the count must be from 1 to {_MAX_COUNT:,}")
    unit = match.group(2)
    return RateLimit(count, PERIODS[unit], f"{count}/{unit}")
