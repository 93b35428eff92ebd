"""The supervisor's settings, field by field: :class:`Settings`.

Owns every setting's name, type, default and documentation (section, unit,
bounds, metavar: ``Annotated[..., Meta(...)]``, read by ``settingspec.py``),
the constants their bounds use, and the checks a directly built ``Settings``
makes. Where values come from (defaults < TOML < environment < flags) is
``settings.py``'s, which re-exports these names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from redflow_mp.connection import MAX_WAIT_MS
from redflow_mp.keys import validate_prefix

from .cpus import usable_cpus
from .settingspec import specs_of

__all__ = ["MAX_PAYLOAD_BYTES", "MAX_PROCS", "MIN_PAYLOAD_BYTES", "SECTIONS", "Settings"]

#: The most child processes one supervisor forks (each has a 1 KiB entry in the
#: shared board, and --procs 100000000 failed allocating it with a traceback).
MAX_PROCS = 4096
#: The largest max_payload_bytes: 512 MiB, Redis's largest argument
#: (proto-max-bulk-len's default); a payload is one argument of a script call.
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
#: The smallest: the client's own bound (a run's envelope needs room).
MIN_PAYLOAD_BYTES = 1024

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
            "Queues to serve, comma-separated (a comma inside a name: \\,; a backslash: "
            "\\\\; a space a name starts or ends with: \\ ); empty = every queue of the "
            "registered workflows.",
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
            "runs",
            "A run that has killed its worker this many times since it last completed a "
            "step fails (poison pill).",
            min=1,
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
            "Cron leader lock TTL; leadership moves within this time when a leader dies. "
            "Renewed every third of it: at least 300 (a shorter lock lapsed between two "
            "renewals, and the lead moved back and forth).",
            unit="ms",
            min=300,
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
        for spec in specs_of(Settings):
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
