"""``redflow run | workflows | queues | supervisors | migrate | dashboard``.

Each ``cmd_*`` takes the :class:`~.session.Session` and the parsed arguments and
returns the exit status. ``run`` reads its input as JSON (inline, ``@FILE`` or
``-``) and, under ``--wait``, waits for the result; the listing commands say where
they looked when they find nothing; ``migrate`` refuses while supervisors of the
prefix are alive; ``dashboard`` serves :mod:`.dashboard` until interrupted (it is
imported only here, so the other commands do not pay for the web modules).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import msgspec

from redflow_mp import admin, codec, queries
from redflow_mp.client import create_client
from redflow_mp.errors import (
    InputValidationError,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
)
from redflow_mp.migrate import migrate_keyspace
from redflow_mp.registry import Registry
from redflow_mp.reshard import reshard

from ..status import list_supervisors
from . import render
from .session import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_TIMEOUT,
    TOKEN_ENV,
    Failure,
    Session,
    UsageError,
    nothing_found,
    require_run,
)

__all__ = [
    "cmd_dashboard",
    "cmd_migrate",
    "cmd_queues",
    "cmd_run",
    "cmd_supervisors",
    "cmd_workflows",
]


#: How much JSON text ``--input @FILE`` / ``-`` reads, in ``max_payload_bytes``:
#: the limit applies to the encoded (compact) input, so indented text may be
#: larger, but not without bound (``@/dev/zero``, a runaway pipe).
INPUT_TEXT_FACTOR = 4


def _parse_input(ns: argparse.Namespace, max_payload_bytes: int) -> Any:
    arg: str = ns.input
    # os.fsencode: the argument's own bytes (a non-UTF-8 one reached Python as lone
    # surrogates, which msgspec raised UnicodeEncodeError for: a traceback)
    raw: bytes = os.fsencode(arg)
    source = "--input"
    limit = INPUT_TEXT_FACTOR * max_payload_bytes
    if arg == "-":
        raw, source = sys.stdin.buffer.read(limit + 1), "standard input"
    elif arg.startswith("@"):
        source = f"--input file {arg[1:]}"
        try:
            with open(arg[1:], "rb") as f:
                raw = f.read(limit + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    if len(raw) > limit:  # read no further: the rest could be endless
        raise UsageError(
            f"{source} is larger than {limit} bytes ({INPUT_TEXT_FACTOR} x "
            f"max_payload_bytes, {max_payload_bytes}): a run's input is at most "
            f"{max_payload_bytes} bytes encoded"
        )
    try:
        return codec.decode_json(raw)
    except codec.NestingDecodeError as exc:
        raise UsageError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def cmd_run(session: Session, ns: argparse.Namespace) -> int:
    client = session.client
    payload = _parse_input(ns, client.max_payload_bytes)
    try:  # a name over the length limit, or not valid Unicode: one line, exit 2
        meta = client.get_workflow_meta(ns.workflow)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
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
    state = require_run(session, handle.id)
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
        final = require_run(session, handle.id)
        err = final.error
        data.update(status=final.status.value, error=msgspec.to_builtins(err) if err else None)
        what = f"{render.clean(err.type)}: {render.clean(err.message)}" if err else "no error"
        session.emit(f"run {handle.id} {final.status.value}: {what}", data)
        return EXIT_FAIL
    data.update(status="succeeded", output=output)
    session.emit(f"succeeded; output: {render.clean(render.fmt_json(output))}", data)
    return EXIT_OK


def _status_now(session: Session, run_id: str) -> str | None:
    state = queries.get_run_any(session.client, run_id)
    return state.status.value if state else None


def cmd_workflows(session: Session, ns: argparse.Namespace) -> int:
    stats = admin.workflow_stats(session.client)
    session.emit(render.workflows_table(stats, session.now_ms()), render.workflow_records(stats))
    if not stats:
        nothing_found(session)
    return EXIT_OK


def cmd_queues(session: Session, ns: argparse.Namespace) -> int:
    """Streamed: the depths are read a chunk of queues at a time and printed as
    they come (100,000 known queues held 230 MB and printed nothing for 11 s)."""
    seen = 0

    def counted() -> Iterator[admin.QueueStats]:
        nonlocal seen
        for q in admin.iter_queue_stats(session.client):
            seen += 1
            yield q

    lines: Iterator[str]
    if session.json:
        lines = render.json_array_lines(msgspec.to_builtins(q) for q in counted())
    else:
        lines = render.queues_table_lines(counted(), first=admin.QUEUE_STATS_CHUNK)
        header = next(lines)  # once the first chunk is read
        if not seen:
            lines = iter(["no queues"])
        else:
            session.out(header)
    for line in lines:
        session.out(line)
    if not seen:
        nothing_found(session)
    return EXIT_OK


def cmd_supervisors(session: Session, ns: argparse.Namespace) -> int:
    sups = list_supervisors(session.client)
    session.emit(render.supervisors_text(sups, session.now_ms()), msgspec.to_builtins(sups))
    if not sups:
        nothing_found(session)
    return EXIT_OK


def cmd_migrate(session: Session, ns: argparse.Namespace) -> int:
    if getattr(ns, "shards", None) is not None:
        return _reshard(session, ns)
    live = list_supervisors(session.client)
    if live:
        names = ", ".join(render.clean(s.id) for s in live)
        raise Failure(
            f"supervisors still run on prefix {session.prefix!r} ({names}): stop them first"
        )
    report = migrate_keyspace(session.client)
    session.emit(report.summary(), msgspec.to_builtins(report))
    return EXIT_OK


def _reshard(session: Session, ns: argparse.Namespace) -> int:
    try:
        target = int(ns.shards)
        new = create_client(
            session.url,
            prefix=session.prefix,
            default=False,
            registry=Registry(),
            cluster=session.client.transport.router is not None
            and bool(session.client.transport.router.cluster),
            shards=target,
            verify_shards=False,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--shards: {exc}") from None
    try:
        report = reshard(session.client, new, force=bool(getattr(ns, "force", False)))
    except RedflowError as exc:
        raise Failure(str(exc)) from None
    finally:
        new.close()
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
            read_only=ns.read_only,
            **getattr(ns, "sign_in_settings", {}),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    session.client.server_time_ms()  # fail now, not on the first page, if Redis is unreachable
    return dashboard.serve(session.client, config, quiet=ns.quiet)
