"""``redflow``: inspect and operate a redflow namespace from the command line.

    redflow runs list [--workflow W] [--status S] [--limit N] [--offset N [--after ID]]
    redflow runs show ID [--steps N | --all-steps]
    redflow runs cancel ID [--reason R] | retry ID | resume ID | watch ID [--timeout S]
    redflow run WORKFLOW [--input JSON] [--idempotency-key K] [--queue Q] [--priority N] [--wait]
    redflow workflows | queues | supervisors
    redflow dashboard [--port P] [--host 127.0.0.1] [--token T] [--read-only]
                      [--session-idle 2h] [--session-max 12h] [--login-free 5] ...
    redflow migrate        (keyspace v1 -> v2; --shards N re-shards; stop the supervisors first)

Every command takes ``--url``, ``--prefix``, ``--json`` (machine-readable
output), ``--embedded-redis`` and ``--state-dir``; these may come before or
after the command name. The URL defaults to ``$REDFLOW_URL``, then
``$REDIS_URL``, then ``redis://localhost:6379/0``; the prefix to
``$REDFLOW_PREFIX``, then ``redflow``. Those two are the only ``REDFLOW_*``
variables read here (the supervisor treats every ``REDFLOW_*`` variable as a
setting, so the dashboard token lives in ``RF_DASHBOARD_TOKEN``, and its sign-in
settings in ``RF_DASHBOARD_*``: ``signin_settings.py``).

Passwords in URLs are masked (``redis://:***@host``) in everything printed.

Exit status: 0 success; 1 a failure (unknown run, refused action, a run
that ended failed or canceled under ``--wait``/``watch``, Redis unreachable);
2 bad usage; 3 a ``--timeout`` ran out while waiting (the run goes on).

This module is the parser and :func:`main` only. The commands live in
``runs.py`` (the ``runs`` group) and ``commands.py`` (the others); what they
share (target, connection, :class:`Session`, exit statuses, error report) is in
``session.py``. A new command is a ``cmd_*`` function there plus its sub-parser
in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

# redflow_mp before redis-py: redflow_mp's first import brings redis-py in without
# OpenTelemetry's metrics SDK (redflow_mp/redispy.py), which a plain `import redis`
# first would load at every start of the command.
from redflow_mp import __version__

# isort: split
import redis

from redflow_mp.client import Client
from redflow_mp.codec import RunStatus
from redflow_mp.errors import RedflowError

from ..embedded import EmbeddedRedis
from ..logs import mask_secrets
from . import render, signin_settings
from .commands import (
    cmd_dashboard,
    cmd_migrate,
    cmd_queues,
    cmd_run,
    cmd_supervisors,
    cmd_workflows,
)
from .runs import (
    DEFAULT_STEPS_SHOWN,
    cmd_runs_cancel,
    cmd_runs_list,
    cmd_runs_resume,
    cmd_runs_retry,
    cmd_runs_show,
    cmd_runs_watch,
    cmd_send_event,
)
from .session import (
    DEFAULT_URL,
    EXIT_FAIL,
    EXIT_USAGE,
    TOKEN_ENV,
    Failure,
    Session,
    UsageError,
    connect,
    connection_options,
    open_target,
    report_error,
    resolve_target,
    run_id_refusal,
)

__all__ = ["DEFAULT_URL", "TOKEN_ENV", "Session", "build_parser", "main", "resolve_target"]

_STATUSES = [s.value for s in RunStatus]


# -------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' too), with the password of a Redis URL
    given as another option's value masked in its error."""

    def error(self, message: str) -> NoReturn:
        super().error(mask_secrets(message))


def _common() -> _Parser:
    """Options every command takes; SUPPRESS lets them stand before or after the command."""
    p = _Parser(add_help=False)
    g = p.add_argument_group("connection and output")
    s = argparse.SUPPRESS
    g.add_argument(
        "--url",
        default=s,
        help="Redis URL (default: $REDFLOW_URL, $REDIS_URL, else redis://localhost:6379/0)",
    )
    g.add_argument("--prefix", default=s, help="key prefix (default: $REDFLOW_PREFIX or redflow)")
    g.add_argument(
        "--cluster",
        action="store_true",
        default=s,
        help="the URL is a Redis Cluster node (default: detected; $REDFLOW_CLUSTER=true)",
    )
    g.add_argument(
        "--sentinel-master",
        default=s,
        help="Sentinel service name for a redis+sentinel:// URL without one "
        "(default: $REDFLOW_SENTINEL_MASTER)",
    )
    g.add_argument(
        "--shards",
        default=s,
        help="the prefix's shard count (default: $REDFLOW_SHARDS, else the count the keyspace "
        "records); a count that differs from the recorded one is refused. For migrate: "
        "the count to re-shard to",
    )
    g.add_argument("--json", action="store_true", default=s, help="print JSON for scripts")
    g.add_argument(
        "--embedded-redis",
        action="store_true",
        default=s,
        help="use the private redis-server a supervisor started (or start one)",
    )
    g.add_argument(
        "--state-dir",
        default=s,
        help="persistent state directory of the embedded Redis (default: a temporary one)",
    )
    return p


def _positive(value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not out > 0 or out == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return out


#: The shortest ``runs watch --interval``: each look is a few commands, and a
#: shorter one (``1e-9``, a typo) looped on the server with no pause.
MIN_WATCH_INTERVAL = 0.05


def _watch_interval(value: str) -> float:
    out = _positive(value)
    if out < MIN_WATCH_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_WATCH_INTERVAL:g} seconds: {value!r}"
        )
    return out


def _count(value: str) -> int:
    try:
        out = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if out < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value!r}")
    return out


def _port(value: str) -> int:
    out = _count(value)
    if out > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0 to 65535: {value!r}")
    return out


def _non_empty(value: str) -> str:
    """A run id or workflow name: an empty one was a ValueError traceback."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must be a non-empty string")
    return value


def _run_id(value: str) -> str:
    """A run id: a malformed one (``<ulid>~x``) was a ValueError traceback."""
    refusal = run_id_refusal(_non_empty(value))
    if refusal is not None:
        raise argparse.ArgumentTypeError(refusal)
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="redflow",
        description="Inspect and operate redflow-mp runs, workflows, queues and supervisors.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"redflow {__version__} (redflow-mp)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    runs = sub.add_parser(
        "runs", help="list, show, cancel, retry, resume or watch runs", parents=[common]
    )
    runs.set_defaults(usage_parser=runs)
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    p = runs_sub.add_parser("list", help="runs, newest first", parents=[common])
    p.add_argument("--workflow", help="only runs of this workflow")
    p.add_argument("--status", choices=_STATUSES, help="only runs in this status")
    p.add_argument("--limit", type=_count, default=20, help="at most N runs (default 20)")
    p.add_argument("--offset", type=_count, default=0, help="skip the N newest (paging)")
    p.add_argument(
        "--after",
        metavar="RUN_ID",
        type=_run_id,
        help="the id of the last run of the previous page (a cursor): the page is the runs "
        "right after it, at any depth for the cost of the first, and runs enqueued "
        "meanwhile are neither repeated nor skipped; --offset then only places the page "
        "if that run is gone",
    )
    p.set_defaults(func=cmd_runs_list)
    p = runs_sub.add_parser("show", help="a run, its steps and its error", parents=[common])
    p.add_argument("id", type=_run_id)
    p.add_argument(
        "--steps",
        type=_count,
        default=DEFAULT_STEPS_SHOWN,
        metavar="N",
        help=f"show at most N steps: the first and the last ones, in execution order "
        f"(default {DEFAULT_STEPS_SHOWN}; the steps' count per status is always shown)",
    )
    p.add_argument(
        "--all-steps",
        action="store_true",
        help="show every step (a run of 100,000 steps: seconds and ~200 MB)",
    )
    p.set_defaults(func=cmd_runs_show)
    p = runs_sub.add_parser(
        "cancel", help="cancel a queued, scheduled, suspended or running run", parents=[common]
    )
    p.add_argument("id", type=_run_id)
    p.add_argument("--reason", help="recorded on the run")
    p.set_defaults(func=cmd_runs_cancel)
    p = runs_sub.add_parser(
        "retry", help="enqueue a failed or canceled run again as a new run", parents=[common]
    )
    p.add_argument("id", type=_run_id)
    p.set_defaults(func=cmd_runs_retry)
    p = runs_sub.add_parser(
        "resume",
        help="put a failed or canceled run back in its queue as the same run, "
        "keeping its succeeded steps",
        parents=[common],
    )
    p.add_argument("id", type=_run_id)
    p.set_defaults(func=cmd_runs_resume)
    p = runs_sub.add_parser(
        "watch", help="follow a run's status and steps until it ends", parents=[common]
    )
    p.add_argument("id", type=_run_id)
    p.add_argument("--timeout", type=_positive, help="give up after S seconds (exit 3)")
    p.add_argument(
        "--interval",
        type=_watch_interval,
        default=0.5,
        help="seconds between looks at the steps (default 0.5, at least 0.05)",
    )
    p.set_defaults(func=cmd_runs_watch)

    p = sub.add_parser(
        "send-event", help="send an event to a run (wakes it if it waits for it)", parents=[common]
    )
    p.add_argument("id", metavar="RUN_ID", type=_run_id)
    p.add_argument("event", metavar="EVENT", type=_non_empty)
    p.add_argument("--payload", default="null", help="the event's payload as JSON (default null)")
    p.add_argument(
        "--idempotency-key",
        default=None,
        help="store at most one event per key for the run (a repeated command is safe)",
    )
    p.set_defaults(func=cmd_send_event)

    p = sub.add_parser("run", help="start a run of a workflow", parents=[common])
    p.add_argument("workflow", type=_non_empty)
    p.add_argument(
        "--input", default="null", help="input as JSON, @FILE to read a file, - for standard input"
    )
    p.add_argument("--idempotency-key", help="same key, same run")
    p.add_argument("--queue", help="enqueue on this queue (also for workflows not synced)")
    p.add_argument(
        "--priority", type=int, help="0 to 9, higher claimed first (default: the workflow's)"
    )
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.add_argument("--timeout", type=_positive, help="with --wait: give up after S seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("workflows", help="synced workflows, counts, cron", parents=[common])
    p.set_defaults(func=cmd_workflows)
    p = sub.add_parser("queues", help="queue depths and oldest waiting run", parents=[common])
    p.set_defaults(func=cmd_queues)
    p = sub.add_parser("supervisors", help="live supervisors and their children", parents=[common])
    p.set_defaults(func=cmd_supervisors)

    p = sub.add_parser(
        "migrate",
        help="convert a keyspace of redflow-mp < keyspace v2; with --shards N, re-shard it",
        parents=[common],
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="re-shard even though supervisor records of the prefix are fresh",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dashboard", help="serve the web dashboard", parents=[common])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument(
        "--token",
        help=f"token for actions, and for reading on a non-loopback bind (or ${TOKEN_ENV})",
    )
    p.add_argument(
        "--refresh",
        type=_count,
        default=5,
        help="seconds between page refreshes (default 5; 0 = off)",
    )
    p.add_argument("--page-size", type=_count, default=25, help="runs per page (default 25)")
    p.add_argument(
        "--read-only",
        action="store_true",
        help="no actions even with a token (the token then only guards reading)",
    )
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    signin_settings.add_arguments(p)
    p.set_defaults(func=cmd_dashboard)
    return parser


# ---------------------------------------------------------------------- main


class _CleanFormatter(logging.Formatter):
    """Log lines cleaned for the terminal, as ``print_err``'s (a library warning may
    name a workflow or queue as Redis holds it)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(render.clean(line) for line in super().format(record).split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "func"):  # no command, or ``runs`` without an action
        usage: argparse.ArgumentParser = getattr(ns, "usage_parser", parser)
        usage.print_help(sys.stderr)
        return EXIT_USAGE
    handler = logging.StreamHandler()
    handler.setFormatter(_CleanFormatter("redflow: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if ns.func is cmd_dashboard:
        signal.signal(signal.SIGTERM, _interrupt)
    url = DEFAULT_URL
    embedded: EmbeddedRedis | None = None
    client: Client | None = None
    try:
        if ns.func is cmd_dashboard:  # a bad value is refused before connecting
            ns.sign_in_settings = signin_settings.resolve(ns, os.environ)
        url, prefix, embedded = open_target(ns)
        options = connection_options(ns)
        if ns.func is cmd_migrate:  # --shards is the target count: connect with the recorded one
            options.update(shards=None, check=False)
        client = connect(url, prefix, **options)
        session = Session(client=client, url=url, prefix=prefix, json=getattr(ns, "json", False))
        code: int = ns.func(session, ns)
        sys.stdout.flush()
        return code
    except (UsageError, Failure, redis.RedisError, RedflowError) as exc:
        return report_error(exc, url)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAIL
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
