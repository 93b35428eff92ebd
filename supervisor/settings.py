"""Supervisor settings: one frozen object built from four sources.

Precedence: defaults < TOML file (``--config`` or ``REDFLOW_CONFIG``) <
``REDFLOW_<KEY>`` environment variables < command-line flags. Setting names
are flat and unique; a TOML file may still group them in tables
(``[supervisor] lease_ms = 5000``) and the environment may name a group
(``REDFLOW_SUPERVISOR__LEASE_MS``): the group is for the reader only. The sources are
merged as plain dicts and converted once with msgspec; an unknown key or a bad
value raises :class:`ConfigError` naming the key and the source it came from.
Nothing reads ``os.environ`` after :func:`load`; a reload (SIGHUP) builds a new
``Settings``.

Every key and its default is documented in ``conf/redflow.toml``.
Durations in seconds also accept strings with a unit: ``"500ms"``, ``"30s"``,
``"5m"``, ``"2h"``, ``"7d"``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from redflow_mp.errors import ConfigError
from redflow_mp.keys import validate_prefix

__all__ = ["ENV_PREFIX", "Settings", "load", "parse_duration"]

ENV_PREFIX = "REDFLOW_"
CONFIG_ENV = "REDFLOW_CONFIG"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every supervisor setting (see conf/redflow.toml for the commented reference)."""

    app: str = ""
    url: str = "redis://localhost:6379/0"
    prefix: str = "redflow"
    procs: int = 0
    modules: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    lease_ms: int = 5000
    reaper_interval_ms: int = 500
    promoter_interval_ms: int = 200
    cron_lock_ttl_ms: int = 10000
    graceful_timeout: float = 30.0
    cancel_grace: float = 5.0
    kill_grace: float = 5.0
    max_run_crashes: int = 3
    max_runs_per_child: int = 0
    max_memory_per_child: int = 0
    run_retention: float = 7 * 24 * 3600.0
    restart_backoff: float = 1.0
    restart_backoff_max: float = 30.0
    max_start_failures: int = 5
    max_payload_bytes: int = 8 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    embedded_redis: bool = False
    state_dir: str = ""

    def __post_init__(self) -> None:
        positive = (
            "lease_ms",
            "reaper_interval_ms",
            "promoter_interval_ms",
            "cron_lock_ttl_ms",
            "max_run_crashes",
            "max_start_failures",
            "max_payload_bytes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        non_negative = (
            "procs",
            "graceful_timeout",
            "cancel_grace",
            "kill_grace",
            "max_runs_per_child",
            "max_memory_per_child",
            "run_retention",
            "restart_backoff",
            "restart_backoff_max",
            "metrics_port",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        validate_prefix(self.prefix)  # ValueError: braces, empty, too long
        if self.lease_ms < 300:
            raise ValueError("lease_ms must be >= 300")
        if self.metrics_port > 65535:
            raise ValueError("metrics_port must be <= 65535")

    @property
    def effective_procs(self) -> int:
        return self.procs or (os.cpu_count() or 1)


_FIELDS: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Settings)}
_DURATIONS = {
    "graceful_timeout",
    "cancel_grace",
    "kill_grace",
    "run_retention",
    "restart_backoff",
    "restart_backoff_max",
}
_LISTS = {"modules", "queues"}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"30s"`` / ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or ""]
    raise ValueError(f"expected a duration such as 30, '30s', '500ms' or '7d', got {value!r}")


def _normalize(key: str, value: Any, source: str, *, from_text: bool) -> Any:
    """Pre-convert one raw value (text from env/flags, TOML values) for msgspec."""
    try:
        if key in _DURATIONS:
            return parse_duration(value)
        if key in _LISTS:
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if isinstance(value, list | tuple):
                return tuple(value)
            raise ValueError(f"expected a list or comma-separated string, got {value!r}")
        if from_text and isinstance(value, str) and _FIELDS[key] is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
    except ValueError as exc:
        raise ConfigError(f"setting {key!r} from {source}: {exc}") from None
    return value


def _from_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value, where in _flatten(data):
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {where!r} in config file {path}")
        if key in out:
            raise ConfigError(f"setting {key!r} is given twice in config file {path}")
        out[key] = _normalize(key, value, f"config file {path}", from_text=False)
    return out


def _flatten(data: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """Top-level keys, plus the keys of one level of tables (``[supervisor]``
    grouping is accepted: setting names are unique, so the table name is only
    for the reader)."""
    out: list[tuple[str, Any, str]] = []
    for key, value in data.items():
        if isinstance(value, dict) and key not in _FIELDS:
            for inner, inner_value in value.items():
                out.append((inner, inner_value, f"{key}.{inner}"))
        else:
            out.append((key, value, key))
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        # REDFLOW_LEASE_MS, or with a grouping section: REDFLOW_SUPERVISOR__LEASE_MS.
        key = name[len(ENV_PREFIX) :].lower().rsplit("__", 1)[-1]
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {name} in the environment")
        out[key] = (name, _normalize(key, value, f"environment variable {name}", from_text=True))
    return out


def load(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings`: defaults < TOML < environment < ``overrides`` (flags).

    ``overrides`` hold command-line values already parsed (None means "not given").
    """
    env = dict(os.environ if environ is None else environ)
    path = config_path or env.get(CONFIG_ENV) or None
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path:
        for key, value in _from_toml(path).items():
            merged[key] = value
            sources[key] = f"config file {path}"
    for key, (name, value) in _from_env(env).items():
        merged[key] = value
        sources[key] = f"environment variable {name}"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r} from the command line")
        merged[key] = _normalize(key, value, "the command line", from_text=isinstance(value, str))
        sources[key] = "the command line"
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None


def _explain(exc: msgspec.ValidationError, sources: Mapping[str, str]) -> str:
    text = str(exc)
    m = re.search(r"\$\.([a-z_]+)", text)
    if m and m.group(1) in sources:
        return f"setting {m.group(1)!r} from {sources[m.group(1)]}: {text}"
    for key, source in sources.items():
        if key in text:
            return f"setting {key!r} from {source}: {text}"
    return f"invalid settings: {text}"
