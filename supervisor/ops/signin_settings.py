"""The dashboard's sign-in settings (``redflow dashboard``): how long a session
lasts and how failed token checks are slowed, as flags and ``RF_DASHBOARD_*``
environment variables.

Each setting is declared once in :data:`OPTIONS` (flag, variable, kind, default,
bounds, help); :func:`add_arguments` makes the flags and their ``--help`` from it
and :func:`resolve` reads them: the flag, else the variable, else the default.
A bad value is a :class:`~.session.UsageError` (exit status 2, no traceback)
naming the flag or the variable, the value and what is accepted. The variables
are ``RF_DASHBOARD_*``, like the token's, not ``REDFLOW_*``: the supervisor
takes every ``REDFLOW_*`` name for one of its own settings and refuses the
others. ``redflow`` reads no config file.

Defaults are those of :class:`~.session.LoginLimits` and the session limits in
:mod:`.session` (2 h unused, 12 h after sign-in; 5 failures per address, 50 in
all, then a doubling wait up to 15 min per address).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..values import parse_duration
from . import render
from .session import SESSION_IDLE, SESSION_MAX, LoginLimits, UsageError

__all__ = ["OPTIONS", "Option", "add_arguments", "resolve"]

_YEAR = 365 * 86_400.0
_LIMITS = LoginLimits()


@dataclass(frozen=True)
class Option:
    """One sign-in setting: ``--flag`` and ``RF_DASHBOARD_*`` variable."""

    name: str
    flag: str
    env: str
    duration: bool  # seconds (also "30m", "2h", "7d"); else a whole number
    default: float
    low: float
    high: float
    help: str

    def expected(self) -> str:
        if self.duration:
            return (
                f"a duration such as 90, '30m', '2h' or '7d', from {_fmt(self.low)} "
                f"to {_fmt(self.high)}"
            )
        return f"a whole number from {int(self.low)} to {int(self.high)}"

    def parse(self, raw: str) -> float | int:
        """``raw`` as this setting's value; ValueError saying what is accepted."""
        try:
            value: float | int = parse_duration(raw.strip()) if self.duration else int(raw)
        except ValueError:
            raise ValueError(self.expected()) from None
        if not self.low <= value <= self.high:
            raise ValueError(self.expected())
        return value


OPTIONS: tuple[Option, ...] = (
    Option(
        "session_idle",
        "--session-idle",
        "RF_DASHBOARD_SESSION_IDLE",
        True,
        SESSION_IDLE,
        1.0,
        _YEAR,
        "with sign-in (a non-loopback --host): a session ends after this long unused",
    ),
    Option(
        "session_max",
        "--session-max",
        "RF_DASHBOARD_SESSION_MAX",
        True,
        SESSION_MAX,
        1.0,
        _YEAR,
        "with sign-in: a session ends this long after sign-in however it is used "
        "(the cookie's Max-Age)",
    ),
    Option(
        "login_free",
        "--login-free",
        "RF_DASHBOARD_LOGIN_FREE",
        False,
        _LIMITS.client_free,
        0,
        1_000_000,
        "failed token checks a client address makes before each further one makes it "
        "wait (1 s, doubling)",
    ),
    Option(
        "login_free_all",
        "--login-free-all",
        "RF_DASHBOARD_LOGIN_FREE_ALL",
        False,
        _LIMITS.global_free,
        0,
        1_000_000,
        "failed token checks from all addresses before each further one makes every "
        "client wait (1 s, doubling up to 1 min)",
    ),
    Option(
        "login_max_wait",
        "--login-max-wait",
        "RF_DASHBOARD_LOGIN_MAX_WAIT",
        True,
        _LIMITS.client_max_wait,
        _LIMITS.first_wait,
        86_400.0,
        "the longest wait of a client address after failed token checks",
    ),
)


def _fmt(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`OPTIONS` (checked by :func:`resolve`, with the variables)."""
    group = parser.add_argument_group("sign-in (a dashboard bound to a non-loopback address)")
    for opt in OPTIONS:
        shown = _fmt(opt.default) if opt.duration else str(int(opt.default))
        group.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar="DURATION" if opt.duration else "N",
            help=f"{opt.help} (default {shown}; or ${opt.env})",
        )


def resolve(ns: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """``session_idle``, ``session_max`` (seconds) and ``login_limits`` for
    :class:`~.dashboard.DashboardConfig`, from the flags, else the variables."""
    values: dict[str, float | int] = {}
    source: dict[str, str] = {}
    for opt in OPTIONS:
        raw = getattr(ns, opt.name, None)
        where = source[opt.name] = opt.flag
        if raw is None:
            raw = environ.get(opt.env) or None
            where = source[opt.name] = f"environment variable {opt.env}"
        if raw is None:
            values[opt.name] = opt.default
            source[opt.name] = f"the default; see {opt.flag}"
            continue
        try:
            values[opt.name] = opt.parse(str(raw))
        except ValueError as exc:
            shown = render.clean(str(raw)[:40])
            raise UsageError(f"bad value {shown!r} for {where}: expected {exc}") from None
    idle, most = values["session_idle"], values["session_max"]
    if idle > most:
        raise UsageError(
            f"the session idle limit ({_fmt(float(idle))}, {source['session_idle']}) is "
            f"longer than the absolute one ({_fmt(float(most))}, {source['session_max']}): "
            "lower the first or raise the second"
        )
    limits = LoginLimits(
        client_free=int(values["login_free"]),
        global_free=int(values["login_free_all"]),
        client_max_wait=float(values["login_max_wait"]),
    )
    return {"session_idle": float(idle), "session_max": float(most), "login_limits": limits}
