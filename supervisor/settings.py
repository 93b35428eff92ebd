"""Supervisor settings: one frozen object built from four sources.

Precedence: defaults < TOML file (``--config`` or ``REDFLOW_CONFIG``) <
``REDFLOW_<KEY>`` environment variables < command-line flags. Setting names
are flat and unique; a TOML file may still group them in tables
(``[supervisor] lease_ms = 5000``) and the environment may name a group
(``REDFLOW_SUPERVISOR__LEASE_MS``): the group is for the reader only. Nothing
reads ``os.environ`` after :func:`load`; a reload (SIGHUP) builds a new
``Settings``.

Single source of truth: each field of :class:`Settings` carries its own
documentation (``Annotated[..., Meta(description=..., extra={...})]``: the
section, the unit, bounds, a metavar). From it come the ``redflow-supervisor``
flags and their help (``supervisor/cli.py``), the check of every value, and
``conf/redflow.toml`` (:func:`reference_toml`; a test keeps the committed file
equal to it). Choices come from ``Literal`` types.

Every value is checked here, one key at a time, before msgspec builds the
struct, so a bad value is a :class:`ConfigError` naming the key, where it came
from (the flag, the environment variable, the config file), the value and what
is accepted; an unknown ``REDFLOW_*`` name or TOML key gets a "did you mean".
Durations in seconds also accept strings with a unit: ``"500ms"``, ``"30s"``,
``"5m"``, ``"2h"``, ``"7d"``.

The struct itself is ``settingfields.py``'s and a field's reading
``settingspec.py``'s; this module owns the sources, their precedence, the
errors naming where a bad value came from, and what a reload applies
(:data:`RELOADABLE`). It re-exports the names of both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypedDict

import msgspec

from redflow_mp.errors import ConfigError

from . import values
from .logs import mask_secrets
from .settingfields import MAX_PAYLOAD_BYTES, MAX_PROCS, MIN_PAYLOAD_BYTES, SECTIONS, Settings
from .settingspec import ENV_PREFIX, Spec, specs_of
from .values import _Reason, parse_duration

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "MAX_PAYLOAD_BYTES",
    "MAX_PROCS",
    "MIN_PAYLOAD_BYTES",
    "RELOADABLE",
    "SECTIONS",
    "ClientKeywords",
    "Settings",
    "Spec",
    "client_keywords",
    "held_for_restart",
    "load",
    "parse_duration",
    "specs",
]

CONFIG_ENV = "REDFLOW_CONFIG"

#: The settings a SIGHUP applies (the workflow modules and the queues, read by the
#: new children, and the limits the parent reads at each use). Every other one is
#: used by the parent from its start (its Redis client and prefix, its duties'
#: intervals and lease, procs, logging, metrics): a reload keeps its running value
#: and logs that a restart applies it (``held_for_restart``). A new value reaching
#: only the new children split the supervisor: with an edited ``prefix`` or
#: ``url`` the children served a keyspace that the parent's reaper, promoter and
#: cron did not, and nobody served the old one.
RELOADABLE = frozenset(
    {
        "modules",
        "queues",
        "graceful_timeout",
        "kill_grace",
        "max_run_crashes",
        "max_runs_per_child",
        "max_payload_bytes",
        "max_events_per_run",
        "max_event_bytes_per_run",
    }
)

_SPECS: tuple[Spec, ...] = specs_of(Settings)
_BY_NAME: dict[str, Spec] = {s.name: s for s in _SPECS}


def specs() -> tuple[Spec, ...]:
    """Every setting, in the order of :class:`Settings` (grouped by section)."""
    return _SPECS


def held_for_restart(running: Settings, reloaded: Settings) -> dict[str, Any]:
    """The settings outside :data:`RELOADABLE` whose value ``reloaded`` changes,
    with their running values (a reload keeps these)."""
    return {
        name: getattr(running, name)
        for name in running.__struct_fields__
        if name not in RELOADABLE and getattr(running, name) != getattr(reloaded, name)
    }


class ClientKeywords(TypedDict):
    """The settings a client of the supervisor's Redis is made with, named as
    ``create_client``'s keywords (and ``child.ChildSpec``'s fields)."""

    url: str
    prefix: str
    max_payload_bytes: int
    max_events_per_run: int
    max_event_bytes_per_run: int
    redis_functions: bool
    cluster: bool
    sentinel_master: str | None
    durability: str
    durability_wait_ms: int
    shards: int


def client_keywords(s: Settings) -> ClientKeywords:
    """``s``'s client settings: one mapping for the parent's client
    (``startup.py``) and every process it forks (``slots.py`` puts it in the
    child's spec, ``child.spec_client`` reads it back for a child and for an
    ``on_failure`` helper), so that they all connect alike."""
    return ClientKeywords(
        url=s.url,
        prefix=s.prefix,
        max_payload_bytes=s.max_payload_bytes,
        max_events_per_run=s.max_events_per_run,
        max_event_bytes_per_run=s.max_event_bytes_per_run,
        redis_functions=s.redis_functions,
        cluster=s.cluster,
        sentinel_master=s.sentinel_master or None,
        durability=s.durability,
        durability_wait_ms=s.durability_wait_ms,
        shards=s.shards,
    )


# ------------------------------------------------------------------ loading


def _convert(key: str, value: Any, source: str, *, text: bool) -> Any:
    spec = _BY_NAME[key]
    try:
        return spec.parse(value, text=text)
    except ValueError as exc:
        why = str(exc) if isinstance(exc, _Reason) else f"expected {spec.accepted(as_text=text)}"
        # Masked: a URL with its password given for another setting (a shifted
        # environment variable) must not reach stderr, a journal every reader sees.
        shown = mask_secrets(repr(value))
        raise ConfigError(f"bad value {shown} for setting {key} (from {source}): {why}") from None


def _from_toml(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value, where in _flatten(values.read_toml(path)):
        if key not in _BY_NAME:
            hint = values._did_you_mean(key, list(_BY_NAME))
            raise ConfigError(f"unknown setting {where!r} in config file {path}{hint}")
        if key in out:
            raise ConfigError(f"setting {key!r} is given twice in config file {path}")
        out[key] = _convert(key, value, f"config file {path}, key {where}", text=False)
    return out


def _flatten(data: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """Top-level keys, plus the keys of one level of tables (``[supervisor]``
    grouping is accepted: setting names are unique, so the table name is only
    for the reader)."""
    out: list[tuple[str, Any, str]] = []
    for key, value in data.items():
        if isinstance(value, dict) and key not in _BY_NAME:
            for inner, inner_value in value.items():
                out.append((inner, inner_value, f"{key}.{inner}"))
        else:
            out.append((key, value, key))
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    names = [s.env for s in _SPECS]
    out: dict[str, tuple[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        # REDFLOW_LEASE_MS, or with a grouping section: REDFLOW_SUPERVISOR__LEASE_MS.
        key = name[len(ENV_PREFIX) :].lower().rsplit("__", 1)[-1]
        if key not in _BY_NAME:
            hint = values._did_you_mean(name, names)
            raise ConfigError(f"unknown setting {name} in the environment{hint}")
        out[key] = (name, _convert(key, value, f"environment variable {name}", text=True))
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
    if path:
        merged.update(_from_toml(path))
    for key, (_name, value) in _from_env(env).items():
        merged[key] = value
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _BY_NAME:
            raise ConfigError(f"unknown setting {key!r} from the command line")
        source = f"the command line, {_BY_NAME[key].option}"
        merged[key] = _convert(key, value, source, text=isinstance(value, str))
    try:
        return msgspec.convert(merged, Settings)
    except (msgspec.ValidationError, ValueError) as exc:  # pragma: no cover - checked above
        raise ConfigError(f"invalid settings: {exc}") from None
