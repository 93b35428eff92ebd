"""``redflow``: inspect and operate a redflow namespace from the command line.

    redflow runs list [--workflow W] [--status S] [--limit N] [--offset N]
    redflow runs show ID | cancel ID [--reason R] | retry ID | watch ID [--timeout S]
    redflow run WORKFLOW [--input JSON] [--idempotency-key K] [--queue Q] [--priority N] [--wait]
    redflow workflows | queues | supervisors
    redflow dashboard [--port P] [--host 127.0.0.1] [--token T]
    redflow migrate        (keyspace v1 -> v2; stop the prefix's supervisors first)

Every command takes ``--url``, ``--prefix``, ``--json`` (machine-readable
output), ``--embedded-redis`` and ``--state-dir``; these may come before or
after the command name. The URL defaults to ``$REDFLOW_URL``, then
``$REDIS_URL``, then ``redis://localhost:6379/0``; the prefix to
``$REDFLOW_PREFIX``, then ``redflow``. Those two are the only ``REDFLOW_*``
variables read here (the supervisor treats every ``REDFLOW_*`` variable as a
setting, so the dashboard token lives in ``RF_DASHBOARD_TOKEN``).

Passwords in URLs are masked (``redis://:***@host``) in everything printed.

Exit status: 0 success; 1 a failure (unknown run, refused action, a run
that ended failed or canceled under ``--wait``/``watch``, Redis unreachable);
2 bad usage; 3 a ``--timeout`` ran out while waiting (the run goes on).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import redis

from redflow_mp import __version__, admin, codec
from redflow_mp.client import Client, create_client
from redflow_mp.codec import RunState, RunStatus, StepState
from redflow_mp.errors import (
    InputValidationError,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
)
from redflow_mp.migrate import migrate_keyspace
from redflow_mp.registry import Registry
from redflow_mp.transport import mask_url

from ..embedded import EmbeddedRedis
from ..status import list_supervisors
from . import render

__all__ = ["DEFAULT_URL", "TOKEN_ENV", "Session", "main", "resolve_target"]

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "redflow"
TOKEN_ENV = "RF_DASHBOARD_TOKEN"

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

_STATUSES = [s.value for s in RunStatus]


class UsageError(Exception):
    """A bad combination of arguments (exit status 2)."""


class Failure(Exception):
    """An operation that could not be done (exit status 1); the message says why."""


# ------------------------------------------------------------------- session


@dataclass
class Session:
    """What every command gets: the client, the masked URL, the output mode."""

    client: Client
    url: str
    prefix: str
    json: bool
    out: Callable[[str], None] = field(default=print)

    @property
    def shown_url(self) -> str:
        return mask_url(self.url)

    def now_ms(self) -> int:
        return self.client.server_time_ms()

    def emit(self, text: str, data: Any) -> None:
        """Print ``data`` as JSON under ``--json``, else ``text``."""
        self.out(render.to_json(data) if self.json else text)


def resolve_target(ns: argparse.Namespace, env: dict[str, str] | None = None) -> tuple[str, str]:
    """The URL and prefix: flags, then REDFLOW_URL/REDFLOW_PREFIX, then REDIS_URL, defaults."""
    environ = os.environ if env is None else env
    url = getattr(ns, "url", None) or environ.get("REDFLOW_URL") or environ.get("REDIS_URL")
    prefix = getattr(ns, "prefix", None) or environ.get("REDFLOW_PREFIX") or DEFAULT_PREFIX
    return url or DEFAULT_URL, prefix


def _secrets_of(url: str) -> list[str]:
    """Passwords in ``url`` (netloc or ``?password=``), for scrubbing error text."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
        found += parse_qs(parts.query).get("password", [])
    except ValueError:
        return []
    return [s for s in found if len(s) >= 3]


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``."""
    text = text.replace(url, mask_url(url))
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def _connect(url: str, prefix: str) -> Client:
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=5.0)
    except ValueError as exc:
        raise UsageError(f"bad Redis URL {mask_url(url)}: {scrub(str(exc), url)}") from None
    try:
        return create_client(redis=conn, prefix=prefix, default=False, registry=Registry())
    finally:
        conn.close()


# ------------------------------------------------------- "where did it look"

# Keys every namespace with anything in it has one of: how another prefix is recognised.
_NAMESPACE_KEYS = frozenset({"workflows", "runs:created", "queues", "supervisors", "cron:def"})
SCAN_COUNT = 1000
SCAN_LIMIT = 10_000


def other_prefixes(session: Session) -> tuple[list[str], bool]:
    """Prefixes other than the session's with redflow keys in this database, and
    whether the look was cut short. Read-only and bounded: SCAN (COUNT 1000) over at
    most 10,000 keys; a refused SCAN (an ACL user confined to a prefix) finds none."""
    found: set[str] = set()
    seen = 0
    cursor = 0
    try:
        while True:
            cursor, keys = session.client.redis.scan(cursor, match="{*}:*", count=SCAN_COUNT)
            seen += SCAN_COUNT  # keys examined (MATCH filters after the examination)
            for raw in keys:
                key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                prefix, sep, name = key[1:].partition("}:")
                if sep and name in _NAMESPACE_KEYS and prefix != session.prefix:
                    found.add(prefix)
            if cursor == 0:
                return sorted(found), False
            if seen >= SCAN_LIMIT:
                return sorted(found), True
    except redis.RedisError:
        return sorted(found), False


def where_looked(session: Session) -> list[str]:
    """Lines saying where a command looked, and which other prefixes have data."""
    lines = [f"looked in {session.shown_url}, prefix {render.clean(session.prefix)!r}"]
    others, cut = other_prefixes(session)
    note = f" (only the first {SCAN_LIMIT:,} keys were examined)" if cut else ""
    if others:
        shown = ", ".join(repr(render.clean(p)) for p in others[:20])
        more = f" and {len(others) - 20} more" if len(others) > 20 else ""
        lines.append(
            f"other prefixes with redflow keys in this database: {shown}{more}{note} "
            f"(choose one with --prefix or REDFLOW_PREFIX)"
        )
    elif note:
        lines.append(f"no other prefix has redflow keys here{note}")
    return lines


def _nothing_found(session: Session) -> None:
    for line in where_looked(session):
        _err(line)


# ------------------------------------------------------------------ commands


def _get_run(session: Session, run_id: str) -> RunState:
    state = session.client.get_run(run_id)
    if state is None:
        raise Failure(
            f"run {render.clean(run_id)} not found (unknown id, or removed by retention); "
            + "; ".join(where_looked(session))
        )
    return state


def cmd_runs_list(session: Session, ns: argparse.Namespace) -> int:
    try:
        runs = session.client.list_runs(
            workflow=ns.workflow, status=ns.status, limit=ns.limit, offset=ns.offset
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    session.emit(render.runs_table(runs, session.now_ms()), [render.run_record(r) for r in runs])
    if not runs:
        _nothing_found(session)
    return EXIT_OK


def cmd_runs_show(session: Session, ns: argparse.Namespace) -> int:
    state = _get_run(session, ns.id)
    steps = session.client.get_run_steps(ns.id) or []
    retry_of = state.retry_of
    session.emit(
        render.run_detail_text(state, steps, retry_of, session.now_ms()),
        render.run_detail_record(state, steps, retry_of),
    )
    return EXIT_OK


def cmd_runs_cancel(session: Session, ns: argparse.Namespace) -> int:
    before = _get_run(session, ns.id)
    accepted = False
    if not before.status.terminal:
        accepted = session.client.cancel_run(ns.id, ns.reason)
    after = session.client.get_run(ns.id) or before
    rid = render.clean(ns.id)
    if not accepted:
        text = f"run {rid} already finished ({after.status.value}); nothing to cancel"
    elif after.status is RunStatus.CANCELED:
        text = f"canceled run {rid}"
    else:
        text = (
            f"cancel requested for run {rid} ({after.status.value}): its handler sees "
            "ctx.cancelled, stops at its next step, or is stopped after cancel_grace"
        )
    data = {
        "id": ns.id,
        "accepted": accepted,
        "status": after.status.value,
        "cancel_requested_at": after.cancel_requested_at,
        "cancel_reason": after.cancel_reason,
    }
    if session.json:
        session.out(render.to_json(data))
    elif accepted:
        session.out(text)
    else:
        _err(text)
    return EXIT_OK if accepted else EXIT_FAIL


def cmd_runs_retry(session: Session, ns: argparse.Namespace) -> int:
    _get_run(session, ns.id)
    try:
        handle = admin.retry_run(session.client, ns.id)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    new = _get_run(session, handle.id)
    session.emit(
        f"retried run {render.clean(ns.id)} as run {new.id} "
        f"(workflow {render.clean(new.workflow)}, queue {render.clean(new.queue)}, "
        f"{new.status.value})",
        {
            "id": new.id,
            "retry_of": ns.id,
            "workflow": new.workflow,
            "queue": new.queue,
            "status": new.status.value,
        },
    )
    return EXIT_OK


def _block(client: Client, run_id: str, seconds: float) -> None:
    """Wait up to ``seconds`` for the run to end (woken at once when it does)."""
    if seconds <= 0:
        return
    try:
        client.wait_result(run_id, timeout=seconds)
    except (ResultTimeoutError, RunFailedError, RunCanceledError):
        pass
    except RedflowError:
        time.sleep(min(seconds, 0.2))  # gone (retention): the next read reports it


class _Watcher:
    """Prints what changed in a run since the last look (text lines or JSON lines)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.status: str | None = None
        self.attempt = 0
        self.cancel_seen = False
        self.steps: dict[str, tuple[str, int, int | None]] = {}

    def _line(self, event: str, at_ms: int | None, text: str, **data: Any) -> None:
        if self.session.json:
            self.session.out(msgspec.json.encode({"event": event, "at": at_ms, **data}).decode())
        else:
            stamp = render.fmt_time(at_ms)[11:] if at_ms else "--:--:--"
            self.session.out(f"{stamp}  {text}")

    def update(self, state: RunState, steps: Sequence[StepState], now_ms: int) -> None:
        """Print the new things, oldest first: steps, a cancel request, a status change."""
        clean = render.clean
        if self.status is None:
            self._line(
                "run",
                state.created_at,
                f"run {clean(state.id)} of {clean(state.workflow)} on queue "
                f"{clean(state.queue)}: {state.status.value}, attempt {state.attempt}/"
                f"{state.max_attempts}",
                id=state.id,
                workflow=state.workflow,
                queue=state.queue,
                status=state.status.value,
                attempt=state.attempt,
            )
            self.status, self.attempt = state.status.value, state.attempt
        for step in steps:
            key = (step.status.value, step.attempt, step.finished_at)
            if self.steps.get(step.name) == key:
                continue
            self.steps[step.name] = key
            err = f": {clean(step.error.type)}: {clean(step.error.message)}" if step.error else ""
            self._line(
                "step",
                step.finished_at,
                f"step {clean(step.name)} {step.status.value} "
                f"({render.fmt_duration(render.step_duration_ms(step))}, attempt "
                f"{step.attempt}){err}",
                **render.step_record(step),
            )
        if state.cancel_requested_at and not self.cancel_seen:
            self.cancel_seen = True
            if not state.status.terminal:
                reason = f": {clean(state.cancel_reason)}" if state.cancel_reason else ""
                self._line(
                    "cancel_requested",
                    state.cancel_requested_at,
                    f"cancel requested{reason}",
                    reason=state.cancel_reason,
                )
        changed = state.status.value != self.status or state.attempt != self.attempt
        if changed and not state.status.terminal:  # the end line reports a terminal status
            self._line(
                "status",
                state.updated_at or now_ms,
                f"{state.status.value} (attempt {state.attempt}/{state.max_attempts})",
                status=state.status.value,
                attempt=state.attempt,
            )
        self.status, self.attempt = state.status.value, state.attempt

    def finish(self, state: RunState, now_ms: int) -> None:
        took = render.fmt_duration(render.run_duration_ms(state, now_ms))
        data: dict[str, Any] = {"status": state.status.value, "id": state.id}
        if state.status is RunStatus.SUCCEEDED:
            text = f"succeeded in {took}; output: {render.fmt_json(state.output, 2000)}"
            data["output"] = state.output
        else:
            err = state.error
            what = f"{render.clean(err.type)}: {render.clean(err.message)}" if err else "no error"
            text = f"{state.status.value} after {took}: {what}"
            data["error"] = msgspec.to_builtins(err) if err else None
        self._line("end", state.finished_at or now_ms, text, **data)


def cmd_runs_watch(session: Session, ns: argparse.Namespace) -> int:
    deadline = None if ns.timeout is None else time.monotonic() + ns.timeout
    watcher = _Watcher(session)
    while True:
        state = session.client.get_run(ns.id)
        if state is None:
            if watcher.status is None:
                raise Failure(
                    f"run {render.clean(ns.id)} not found; " + "; ".join(where_looked(session))
                )
            raise Failure(f"run {render.clean(ns.id)} no longer exists (removed by retention?)")
        steps = session.client.get_run_steps(ns.id) or []
        now = session.now_ms()
        watcher.update(state, steps, now)
        if state.status.terminal:
            watcher.finish(state, now)
            return EXIT_OK if state.status is RunStatus.SUCCEEDED else EXIT_FAIL
        wait = ns.interval
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                print(
                    f"redflow: run {render.clean(ns.id)} is still {state.status.value} after "
                    f"{ns.timeout:g} s (it goes on)",
                    file=sys.stderr,
                )
                return EXIT_TIMEOUT
            wait = min(wait, left)
        _block(session.client, ns.id, wait)


def _parse_input(ns: argparse.Namespace) -> Any:
    arg: str = ns.input
    raw: str | bytes = arg
    source = "--input"
    if arg == "-":
        raw, source = sys.stdin.buffer.read(), "standard input"
    elif arg.startswith("@"):
        source = f"--input file {arg[1:]}"
        try:
            with open(arg[1:], "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return codec.decode_json(raw)
    except codec.NestingDecodeError as exc:
        raise UsageError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def cmd_run(session: Session, ns: argparse.Namespace) -> int:
    client = session.client
    payload = _parse_input(ns)
    meta = client.get_workflow_meta(ns.workflow)
    if meta is None and ns.queue is None:
        raise Failure(
            f"workflow {render.clean(ns.workflow)} is not synced to this Redis and prefix "
            f"({session.shown_url}, {render.clean(session.prefix)}): no supervisor registered "
            "it. Check the name with `redflow workflows`, or pass --queue to enqueue anyway"
        )
    before = session.now_ms()
    try:
        handle = client.run_by_name(
            ns.workflow,
            payload,
            queue_override=ns.queue,
            idempotency_key=ns.idempotency_key,
            priority=ns.priority,
        )
    except (ValueError, TypeError, InputValidationError) as exc:
        raise UsageError(str(exc)) from None
    state = _get_run(session, handle.id)
    existing = state.created_at < before
    data: dict[str, Any] = {
        "id": handle.id,
        "workflow": state.workflow,
        "queue": state.queue,
        "status": state.status.value,
        "created": not existing,
    }
    note = " (existing run for this idempotency key)" if existing else ""
    text = (
        f"enqueued run {handle.id} of {render.clean(state.workflow)} on queue "
        f"{render.clean(state.queue)}{note}"
    )
    if not ns.wait:
        session.emit(text, data)
        return EXIT_OK
    if not session.json:
        session.out(text)
    try:
        output = handle.result(timeout=ns.timeout)
    except ResultTimeoutError:
        print(
            f"redflow: run {handle.id} did not finish within {ns.timeout:g} s (it goes on)",
            file=sys.stderr,
        )
        if session.json:
            session.out(render.to_json({**data, "status": _status_now(session, handle.id)}))
        return EXIT_TIMEOUT
    except (RunFailedError, RunCanceledError):
        final = _get_run(session, handle.id)
        err = final.error
        data.update(status=final.status.value, error=msgspec.to_builtins(err) if err else None)
        what = f"{render.clean(err.type)}: {render.clean(err.message)}" if err else "no error"
        session.emit(f"run {handle.id} {final.status.value}: {what}", data)
        return EXIT_FAIL
    data.update(status="succeeded", output=output)
    session.emit(f"succeeded; output: {render.fmt_json(output)}", data)
    return EXIT_OK


def _status_now(session: Session, run_id: str) -> str | None:
    state = session.client.get_run(run_id)
    return state.status.value if state else None


def cmd_workflows(session: Session, ns: argparse.Namespace) -> int:
    stats = admin.workflow_stats(session.client)
    session.emit(render.workflows_table(stats, session.now_ms()), render.workflow_records(stats))
    if not stats:
        _nothing_found(session)
    return EXIT_OK


def cmd_queues(session: Session, ns: argparse.Namespace) -> int:
    stats = admin.queue_stats(session.client)
    session.emit(render.queues_table(stats), msgspec.to_builtins(stats))
    if not stats:
        _nothing_found(session)
    return EXIT_OK


def cmd_supervisors(session: Session, ns: argparse.Namespace) -> int:
    sups = list_supervisors(session.client)
    session.emit(render.supervisors_text(sups, session.now_ms()), msgspec.to_builtins(sups))
    if not sups:
        _nothing_found(session)
    return EXIT_OK


def cmd_migrate(session: Session, ns: argparse.Namespace) -> int:
    live = list_supervisors(session.client)
    if live:
        names = ", ".join(render.clean(s.id) for s in live)
        raise Failure(
            f"supervisors still run on prefix {session.prefix!r} ({names}): stop them first"
        )
    report = migrate_keyspace(session.client)
    session.emit(report.summary(), msgspec.to_builtins(report))
    return EXIT_OK


def cmd_dashboard(session: Session, ns: argparse.Namespace) -> int:
    from . import dashboard

    token = ns.token if ns.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        config = dashboard.DashboardConfig(
            host=ns.host,
            port=ns.port,
            token=token,
            shown_url=session.shown_url,
            prefix=session.prefix,
            refresh=ns.refresh,
            page_size=ns.page_size,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    session.client.server_time_ms()  # fail now, not on the first page, if Redis is unreachable
    return dashboard.serve(session.client, config, quiet=ns.quiet)


# -------------------------------------------------------------------- parser


def _common() -> argparse.ArgumentParser:
    """Options every command takes; SUPPRESS lets them stand before or after the command."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    s = argparse.SUPPRESS
    g.add_argument(
        "--url",
        default=s,
        help="Redis URL (default: $REDFLOW_URL, $REDIS_URL, else redis://localhost:6379/0)",
    )
    g.add_argument("--prefix", default=s, help="key prefix (default: $REDFLOW_PREFIX or redflow)")
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


def _count(value: str) -> int:
    try:
        out = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if out < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="redflow",
        description="Inspect and operate redflow-mp runs, workflows, queues and supervisors.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"redflow {__version__} (redflow-mp)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    runs = sub.add_parser("runs", help="list, show, cancel, retry or watch runs", parents=[common])
    runs.set_defaults(usage_parser=runs)
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    p = runs_sub.add_parser("list", help="runs, newest first", parents=[common])
    p.add_argument("--workflow", help="only runs of this workflow")
    p.add_argument("--status", choices=_STATUSES, help="only runs in this status")
    p.add_argument("--limit", type=_count, default=20, help="at most N runs (default 20)")
    p.add_argument("--offset", type=_count, default=0, help="skip the N newest (paging)")
    p.set_defaults(func=cmd_runs_list)
    p = runs_sub.add_parser("show", help="a run, its steps and its error", parents=[common])
    p.add_argument("id")
    p.set_defaults(func=cmd_runs_show)
    p = runs_sub.add_parser(
        "cancel", help="cancel a queued, scheduled or running run", parents=[common]
    )
    p.add_argument("id")
    p.add_argument("--reason", help="recorded on the run")
    p.set_defaults(func=cmd_runs_cancel)
    p = runs_sub.add_parser(
        "retry", help="enqueue a failed or canceled run again as a new run", parents=[common]
    )
    p.add_argument("id")
    p.set_defaults(func=cmd_runs_retry)
    p = runs_sub.add_parser(
        "watch", help="follow a run's status and steps until it ends", parents=[common]
    )
    p.add_argument("id")
    p.add_argument("--timeout", type=_positive, help="give up after S seconds (exit 3)")
    p.add_argument(
        "--interval",
        type=_positive,
        default=0.5,
        help="seconds between looks at the steps (default 0.5)",
    )
    p.set_defaults(func=cmd_runs_watch)

    p = sub.add_parser("run", help="start a run of a workflow", parents=[common])
    p.add_argument("workflow")
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
        "migrate", help="convert a keyspace of redflow-mp < keyspace v2", parents=[common]
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dashboard", help="serve the web dashboard", parents=[common])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_count, default=8080, help="port (default 8080; 0: any free)")
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
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    p.set_defaults(func=cmd_dashboard)
    return parser


# ---------------------------------------------------------------------- main


def _err(message: str) -> None:
    print(f"redflow: {message}", file=sys.stderr, flush=True)


def _open_target(ns: argparse.Namespace) -> tuple[str, str, EmbeddedRedis | None]:
    url, prefix = resolve_target(ns)
    if not getattr(ns, "embedded_redis", False):
        if getattr(ns, "state_dir", None):
            raise UsageError("--state-dir goes with --embedded-redis")
        return url, prefix, None
    if getattr(ns, "url", None):
        raise UsageError("--url and --embedded-redis exclude each other")
    embedded = EmbeddedRedis(getattr(ns, "state_dir", None) or None, reuse=True)
    try:
        url = embedded.ensure()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise Failure(f"cannot start the embedded Redis: {exc}") from None
    _err(embedded.describe())
    return url, prefix, embedded


def _report(exc: BaseException, url: str) -> int:
    """Print ``exc`` (passwords masked) and return its exit status."""
    text, shown = scrub(str(exc), url), mask_url(url)
    if isinstance(exc, UsageError):
        _err(text)
        return EXIT_USAGE
    if isinstance(exc, redis.AuthenticationError):
        _err(f"Redis at {shown} refused the credentials: {text}")
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        _err(f"cannot reach Redis at {shown}: {text}")
    elif isinstance(exc, redis.RedisError):
        _err(f"Redis error at {shown}: {text}")
    else:
        _err(text)
    return EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "func"):  # no command, or ``runs`` without an action
        usage: argparse.ArgumentParser = getattr(ns, "usage_parser", parser)
        usage.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="redflow: %(message)s")
    if ns.func is cmd_dashboard:
        signal.signal(signal.SIGTERM, _interrupt)
    url = DEFAULT_URL
    embedded: EmbeddedRedis | None = None
    client: Client | None = None
    try:
        url, prefix, embedded = _open_target(ns)
        client = _connect(url, prefix)
        session = Session(client=client, url=url, prefix=prefix, json=getattr(ns, "json", False))
        code: int = ns.func(session, ns)
        sys.stdout.flush()
        return code
    except (UsageError, Failure, redis.RedisError) as exc:
        return _report(exc, url)
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
