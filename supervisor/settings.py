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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from redflow_mp.connection import MAX_WAIT_MS
from redflow_mp.errors import ConfigError
from redflow_mp.keys import validate_prefix
from redflow_mp.options import check_name

from . import values
from .cpus import usable_cpus
from .logs import mask_secrets
from .values import _num, _parse_bool, _parse_int, _parse_list, _Reason, parse_duration

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "RELOADABLE",
    "SECTIONS",
    "Settings",
    "Spec",
    "held_for_restart",
    "load",
    "parse_duration",
    "specs",
]

ENV_PREFIX = "REDFLOW_"
CONFIG_ENV = "REDFLOW_CONFIG"
#: The most child processes one supervisor forks (each has a 1 KiB entry in the
#: shared board, and --procs 100000000 failed allocating it with a traceback).
MAX_PROCS = 4096
#: The largest max_payload_bytes: 512 MiB, Redis's largest argument
#: (proto-max-bulk-len's default); a payload is one argument of a script call.
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
#: The smallest: the client's own bound (a run's envelope needs room).
MIN_PAYLOAD_BYTES = 1024
_DAY_MS = 86_400_000  # the bound of a setting in milliseconds (as lease_ms's)

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

# Section id -> title, in the order conf/redflow.toml and --help show them.
SECTIONS: dict[str, str] = {
    "run": "what to run",
    "redis": "Redis",
    "runs": "runs",
    "maintenance": "maintenance (run by every supervisor; cron and retention by the leader)",
    "children": "children",
    "operations": "operations",
}


def _doc(section: str, text: str, **extra: Any) -> msgspec.Meta:
    """A field's documentation: ``unit`` ("ms", "s" for durations, "MiB", "bytes"),
    ``min``/``max`` bounds, ``metavar`` for --help, ``flag`` when not --<name>."""
    return msgspec.Meta(description=text, extra={"section": section, **extra})


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every supervisor setting; each field documents itself (see the module docstring)."""

    # --- what to run
    app: Annotated[
        str,
        _doc(
            "run",
            "Application id (required, usually given as --app). It scopes registry sync: "
            "an app withdraws only its own registration of a workflow it no longer lists.",
            metavar="APP",
        ),
    ] = ""
    modules: Annotated[
        tuple[str, ...],
        _doc(
            "run",
            "Modules (or paths to .py files) that define the workflows, imported in the "
            "parent before any child is forked. The flag is --module, once per module; "
            "elsewhere a list (comma-separated in the environment).",
            metavar="MODULE",
            flag="--module",
        ),
    ] = ()
    queues: Annotated[
        tuple[str, ...],
        _doc(
            "run",
            "Queues to serve, comma-separated (a comma inside a name: \\,); empty = every "
            "queue of the registered workflows.",
            metavar="Q1,Q2",
        ),
    ] = ()
    procs: Annotated[
        int,
        _doc(
            "run",
            "Child processes; 0 = the CPUs this process may use (its CPU affinity, "
            "capped by a container's CPU quota); at most 4096.",
            min=0,
            max=MAX_PROCS,
            metavar="N",
        ),
    ] = 0

    # --- Redis
    url: Annotated[
        str,
        _doc(
            "redis",
            "Redis URL: redis://host:port/db, rediss:// for TLS, redis://user:password@host "
            "for ACL users; any node of a Redis Cluster (detected); "
            "redis+sentinel://HOST:PORT,.../SERVICE[/db] for a Sentinel group (user:pass@ "
            "before the hosts). Give a URL with a password as REDFLOW_URL (ps does not show the "
            "environment); passwords are masked in logs, process titles and CLI output.",
            metavar="URL",
        ),
    ] = "redis://localhost:6379/0"
    cluster: Annotated[
        bool,
        _doc(
            "redis",
            "The URL is a Redis Cluster node: connect to the master serving the prefix's "
            "slot without asking the node first. Off: a cluster is still detected "
            "(INFO cluster_enabled:1).",
        ),
    ] = False
    sentinel_master: Annotated[
        str,
        _doc(
            "redis",
            "Sentinel service name, for a redis+sentinel:// URL that does not end in "
            "/service_name; empty = the URL's.",
            metavar="NAME",
        ),
    ] = ""
    durability: Annotated[
        Literal["none", "wait", "waitaof"],
        _doc(
            "redis",
            "When a run-state write (enqueue, claim, step, finish, cancel) counts as done: "
            "none = the master has it (a failover can lose the last writes); wait = a "
            "replica has it too (WAIT 1); waitaof = the master and a replica fsynced it "
            "(WAITAOF 1 1, Redis >= 7.2, appendonly on both). docs/operations.md, Durability.",
        ),
    ] = "none"
    durability_wait_ms: Annotated[
        int,
        _doc(
            "redis",
            "How long wait / waitaof wait for the replica before the write counts as "
            "failed (NotReplicatedError, a network error: retried); at most 60000.",
            unit="ms",
            min=1,
            max=MAX_WAIT_MS,
        ),
    ] = 1000
    shards: Annotated[
        int,
        _doc(
            "redis",
            "Hash tags the prefix's keyspace is split into (on a Redis Cluster: spread "
            "over that many masters); 1 = one slot, today's keyspace. Must match the "
            "keyspace's (change it only with redflow migrate --shards N). "
            "docs/operations.md, Shards.",
            min=1,
            max=1024,
            metavar="N",
        ),
    ] = 1
    prefix: Annotated[
        str,
        _doc(
            "redis",
            'Key namespace: every key is "{<prefix>}:..." (one Redis Cluster slot).',
            metavar="PREFIX",
        ),
    ] = "redflow"
    max_payload_bytes: Annotated[
        int,
        _doc(
            "redis",
            "Largest encoded input or output of a run or step; 1024 to 536870912 (512 MiB, "
            "Redis's largest argument by default).",
            unit="bytes",
            min=MIN_PAYLOAD_BYTES,
            max=MAX_PAYLOAD_BYTES,
        ),
    ] = 8 * 1024 * 1024
    max_events_per_run: Annotated[
        int,
        _doc(
            "redis",
            "Most events that may wait unconsumed per run (send_event beyond it is refused "
            "with a clear error; nothing is dropped).",
            min=1,
        ),
    ] = 10_000
    max_event_bytes_per_run: Annotated[
        int,
        _doc(
            "redis",
            "Most payload bytes the events waiting unconsumed of one run may hold (send_event "
            "beyond it is refused with the same error; a consumed event frees its bytes).",
            unit="bytes",
            min=1,
        ),
    ] = 64 * 1024 * 1024
    redis_functions: Annotated[
        bool,
        _doc(
            "redis",
            "Run the Lua transitions as a Redis >= 7 function library (FCALL) instead of "
            "EVALSHA: somewhat cheaper for Redis, but a library is found by its name, so "
            "only turn this on where no other user of the server may run FUNCTION (any "
            "user allowed FUNCTION LOAD could replace the code every prefix runs).",
        ),
    ] = False

    # --- runs
    lease_ms: Annotated[
        int,
        _doc(
            "runs",
            "Lease of a claimed run; renewed every lease_ms/3 by the child's heartbeat and "
            "by the parent's lease backstop. A supervisor that is gone is taken over one "
            "lease after its last renewal, hence at most a day.",
            unit="ms",
            min=300,
            max=86_400_000,
        ),
    ] = 5000
    max_run_crashes: Annotated[
        int,
        _doc(
            "runs", "A run that has killed its worker this many times fails (poison pill).", min=1
        ),
    ] = 3
    cancel_grace: Annotated[
        float,
        _doc(
            "runs",
            "How long a running run may ignore a cancellation before its child is stopped.",
            unit="s",
            min=0,
        ),
    ] = 5.0
    kill_grace: Annotated[
        float,
        _doc(
            "runs",
            "Time between TERM and KILL when the parent stops a child for a run timeout or "
            "an ignored cancellation.",
            unit="s",
            min=0,
        ),
    ] = 5.0
    run_retention: Annotated[
        float,
        _doc(
            "runs",
            "How long finished runs are kept (hash, steps, indexes, their idempotency key); "
            "0 keeps them forever. Only the cron leader sweeps, with its own value: while "
            "supervisors of the prefix disagree (a rolling change), the leader's applies. "
            "The same duty forgets idle queue names (every 30 s at most).",
            unit="s",
            min=0,
        ),
    ] = 7 * 24 * 3600.0

    # --- maintenance
    reaper_interval_ms: Annotated[
        int,
        _doc("maintenance", "How often runs whose lease expired are put back.", unit="ms", min=1),
    ] = 500
    promoter_interval_ms: Annotated[
        int,
        _doc(
            "maintenance",
            "How often due delayed runs and retries are promoted to ready.",
            unit="ms",
            min=1,
        ),
    ] = 200
    cron_lock_ttl_ms: Annotated[
        int,
        _doc(
            "maintenance",
            "Cron leader lock TTL; leadership moves within this time when a leader dies.",
            unit="ms",
            min=1,
        ),
    ] = 10000

    # --- children
    graceful_timeout: Annotated[
        float,
        _doc(
            "children",
            "How long a TERM-initiated drain waits for running handlers before stopping them "
            "(their runs are put back).",
            unit="s",
            min=0,
        ),
    ] = 30.0
    max_runs_per_child: Annotated[
        int,
        _doc("children", "Replace a child after this many runs; 0 = never.", min=0),
    ] = 0
    max_memory_per_child: Annotated[
        int,
        _doc(
            "children",
            "Replace a child (between runs) whose resident memory exceeds this; 0 = never.",
            unit="MiB",
            min=0,
        ),
    ] = 0
    restart_backoff: Annotated[
        float,
        _doc(
            "children",
            "First restart delay of a child that failed to start; it doubles with each "
            "failure in a row, up to restart_backoff_max.",
            unit="s",
            min=0,
        ),
    ] = 1.0
    restart_backoff_max: Annotated[
        float,
        _doc("children", "Longest restart delay (see restart_backoff).", unit="s", min=0),
    ] = 30.0
    max_start_failures: Annotated[
        int,
        _doc(
            "children",
            "Consecutive start failures of one slot before it goes FATAL: the supervisor "
            "then stops with exit status 1.",
            min=1,
        ),
    ] = 5

    # --- operations
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        _doc("operations", "Log level (debug also prints import tracebacks in full)."),
    ] = "info"
    log_format: Annotated[
        Literal["text", "json"],
        _doc(
            "operations",
            "Log format: text, or json (one object per line, with workflow, run_id, attempt "
            "and step fields).",
        ),
    ] = "text"
    metrics_port: Annotated[
        int,
        _doc(
            "operations",
            "Serve Prometheus metrics on this port, bound to metrics_host; 0 = off.",
            min=0,
            max=65535,
            metavar="PORT",
        ),
    ] = 0
    metrics_host: Annotated[
        str,
        _doc("operations", "Address the metrics port binds to.", metavar="HOST"),
    ] = "127.0.0.1"
    metrics_max_workflows: Annotated[
        int,
        _doc(
            "operations",
            "Workflows with metric series of their own (the first met); the others' "
            'series are summed under workflow="_other", totals exact; 0 = no cap.',
            min=0,
            metavar="N",
        ),
    ] = 100
    embedded_redis: Annotated[
        bool,
        _doc(
            "operations",
            "Start a private, password-protected Redis server from the `embedded` extra "
            "instead of using url (the URL with its password goes to a 0600 state file): in "
            "a temporary directory, stopped and removed when the supervisor exits. A url "
            "other than the default with it is refused.",
        ),
    ] = False
    state_dir: Annotated[
        str,
        _doc(
            "operations",
            "A persistent directory for the embedded server instead (append-only file; a "
            "live server there is reused and left running); empty = a temporary directory.",
            metavar="DIR",
        ),
    ] = ""

    def __post_init__(self) -> None:
        # The same bounds load() checks with better messages; here for direct construction.
        for spec in specs():
            value = getattr(self, spec.name)
            if spec.min is not None and value < spec.min:
                raise ValueError(f"{spec.name} must be >= {spec.min}")
            if spec.max is not None and value > spec.max:
                raise ValueError(f"{spec.name} must be <= {spec.max}")
        validate_prefix(self.prefix)  # ValueError: braces, empty, too long

    @property
    def effective_procs(self) -> int:
        """``procs``, or with 0 the CPUs this process may use (its affinity mask
        and cgroup CPU quota: :func:`supervisor.cpus.usable_cpus`)."""
        return self.procs or usable_cpus()


# ------------------------------------------------------------------ specs

_UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "MiB": "MiB", "bytes": "bytes"}
_DURATION_FORMS = "a number of seconds or 500ms, 30s, 5m, 2h, 7d"


@dataclass(frozen=True)
class Spec:
    """One setting as its field documents it."""

    name: str
    kind: type  # int, float, str, bool or tuple (of str)
    default: Any
    description: str
    section: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    metavar: str = ""
    flag: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def duration(self) -> bool:
        return self.unit == "s"

    def accepted(self, *, as_text: bool = True) -> str:
        """What a value may be, in words (for errors and --help). ``as_text``: for
        a value given as text (environment, flag), not a TOML value."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            if not as_text:  # a TOML string is not read as a boolean
                return "true or false, a TOML boolean (unquoted)"
            return "true or false (also 1/0, yes/no, on/off)"
        if self.kind is tuple:
            return "a list of names (comma-separated in text)"
        if self.kind is str:
            return "a string"
        if self.duration:
            text = f"a duration: {_DURATION_FORMS}"
        else:
            unit = _UNIT_WORDS.get(self.unit, "")
            text = "a whole number" + (f" of {unit}" if unit else "")
        bounds = []
        if self.min is not None:
            bounds.append(f"at least {_num(self.min)}")
        if self.max is not None:
            bounds.append(f"at most {_num(self.max)}")
        return text + (", " + " and ".join(bounds) if bounds else "")

    def parse(self, value: Any, *, text: bool) -> Any:
        """``value`` converted for this setting; ValueError when it is not accepted.
        ``text``: the value came as a string from the environment or a flag."""
        if self.duration:
            out: Any = parse_duration(value)
        elif self.kind is int:
            out = _parse_int(value)
        elif self.kind is bool:
            out = _parse_bool(value, text=text)
        elif self.kind is tuple:
            out = _parse_list(value)
        else:
            if not isinstance(value, str):
                raise ValueError("not a string")
            out = value
            if self.choices:
                out = value.strip().lower()
                if out not in self.choices:
                    raise ValueError("not a choice")
        if self.min is not None and out < self.min:
            raise ValueError("too small")
        if self.max is not None and out > self.max:
            raise ValueError("too large")
        _check_names(self.name, out)
        return out


def _check_names(name: str, value: Any) -> None:
    """The prefix, app and queue names as the library checks them (non-UTF-8 text,
    length), as a bad setting rather than a traceback at the first use."""
    try:
        if name == "prefix":
            validate_prefix(value)
        elif name == "app" and value.strip():  # blank: "--app is required" (cli.py)
            check_name(value, "app")
        elif name == "queues":
            for queue in value:
                check_name(queue, "queue")
    except (ValueError, TypeError) as exc:
        raise _Reason(str(exc)) from None


def _spec_of(field: msgspec.structs.FieldInfo) -> Spec:
    base, meta = get_args(field.type)
    extra: dict[str, Any] = dict(meta.extra or {})
    choices: tuple[str, ...] = ()
    kind: type = base
    if get_origin(base) is Literal:
        choices, kind = tuple(get_args(base)), str
    elif get_origin(base) is tuple:
        kind = tuple
    if extra.get("unit") in ("s", "ms"):  # a duration: bounded above too
        extra.setdefault("max", values.MAX_DURATION if extra["unit"] == "s" else _DAY_MS)
    return Spec(
        name=field.name,
        kind=kind,
        default=field.default,
        description=meta.description or "",
        section=extra.pop("section"),
        choices=choices,
        **extra,
    )


_SPECS: tuple[Spec, ...] = tuple(_spec_of(f) for f in msgspec.structs.fields(Settings))
_BY_NAME: dict[str, Spec] = {s.name: s for s in _SPECS}


def specs() -> tuple[Spec, ...]:
    """Every setting, in the order of :class:`Settings` (grouped by section)."""
    return _SPECS


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


def held_for_restart(running: Settings, reloaded: Settings) -> dict[str, Any]:
    """The settings outside :data:`RELOADABLE` whose value ``reloaded`` changes,
    with their running values (a reload keeps these)."""
    return {
        name: getattr(running, name)
        for name in running.__struct_fields__
        if name not in RELOADABLE and getattr(running, name) != getattr(reloaded, name)
    }


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
