"""``redflow runs list | show | cancel | retry | resume | watch``: the commands over single runs.

Each ``cmd_*`` takes the :class:`~.session.Session` and the parsed arguments and
returns the exit status; a run that is not there is a :class:`~.session.Failure`
saying where it was looked for. ``watch`` prints only what changed since its last
look (text lines, or JSON lines under ``--json``) and blocks on the run's end
between looks, so a run that finishes is reported at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from redflow_mp import admin, codec, previews, queries
from redflow_mp.client import Client
from redflow_mp.codec import AttemptState, RunState, RunStatus, StepState
from redflow_mp.errors import (
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
    RunNotResumableError,
)

from . import render
from .session import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_TIMEOUT,
    Failure,
    Session,
    UsageError,
    nothing_found,
    print_err,
    require_run,
    where_looked,
)

__all__ = [
    "DEFAULT_STEPS_SHOWN",
    "cmd_runs_cancel",
    "cmd_runs_list",
    "cmd_runs_resume",
    "cmd_runs_retry",
    "cmd_runs_show",
    "cmd_runs_watch",
]


def cmd_runs_list(session: Session, ns: argparse.Namespace) -> int:
    """Streamed: the runs are read 1,000 at a time and printed as they come, so
    ``--limit 100000`` holds at most one page of runs (it held every run, its
    table row and its JSON record at once: 379 MB)."""
    try:
        runs = queries.iter_runs_all(
            session.client,
            workflow=ns.workflow,
            status=ns.status,
            limit=ns.limit,
            offset=ns.offset,
            after=ns.after or None,
            payloads=session.json,  # the table shows none (listing.ROW_FIELDS)
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    seen = 0
    last = ""

    def counted() -> Iterator[RunState]:
        nonlocal seen, last
        for run in runs:
            seen += 1
            last = run.id
            yield run

    if session.json:
        lines = render.json_array_lines(render.run_record(r) for r in counted())
    else:
        now_ms = session.now_ms()
        rows = (render.run_row(r, now_ms) for r in counted())
        lines = render.table_lines(render.RUNS_HEADERS, rows, first=queries.ITER_PAGE)
        first = next(lines)  # the header, once the first page is read
        if not seen:
            lines = iter(["no runs"])
        else:
            session.out(first)
    for line in lines:
        session.out(line)
    if not seen:
        nothing_found(session)
    elif seen == ns.limit and not session.json:
        # The cursor of the next page: --offset deep into a status walks every run
        # before the page, --after starts right after this one (docs/operations.md).
        print_err(f"next page: --after {render.clean(last)} (with --offset {ns.offset + seen})")
    return EXIT_OK


#: Steps ``runs show`` prints by default: the first half and the last half.
DEFAULT_STEPS_SHOWN = 20


def cmd_runs_show(session: Session, ns: argparse.Namespace) -> int:
    """At most ``--steps`` steps (the first and the last ones), read by
    ``previews.get_run_steps_ends``: one HSCAN page at a time, only the shown
    steps decoded (a run of 100,000 steps took 12 s and 182 MB, printing each;
    28 s and 370 MB on a loaded machine). ``--all-steps`` reads and prints them all."""
    state = require_run(session, ns.id)
    retry_of = state.retry_of
    if getattr(ns, "all_steps", False):
        steps = queries.get_run_steps_any(session.client, ns.id) or []
        ends = previews.StepEnds(
            first=steps, last=[], total=len(steps), by_status=_by_status(steps)
        )
    else:
        shown = getattr(ns, "steps", DEFAULT_STEPS_SHOWN)
        found = previews.get_run_steps_ends_any(session.client, ns.id, (shown + 1) // 2, shown // 2)
        ends = found or previews.StepEnds(first=[], last=[], total=0, by_status={})
    session.emit(
        render.run_detail_text(state, ends, retry_of, session.now_ms()),
        render.run_detail_record(state, ends, retry_of),
    )
    return EXIT_OK


def _by_status(steps: Sequence[StepState]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.status.value] = counts.get(step.status.value, 0) + 1
    return counts


def cmd_runs_cancel(session: Session, ns: argparse.Namespace) -> int:
    before = require_run(session, ns.id)
    accepted = False
    if not before.status.terminal:
        try:
            accepted = session.client.cancel_run(ns.id, ns.reason)
        except ValueError as exc:  # a reason over the limit
            raise UsageError(str(exc)) from None
    after = queries.get_run_any(session.client, ns.id) or before
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
        print_err(text)
    return EXIT_OK if accepted else EXIT_FAIL


def cmd_send_event(session: Session, ns: argparse.Namespace) -> int:
    """``redflow send-event RUN_ID EVENT [--payload JSON] [--idempotency-key KEY]``."""
    try:
        # os.fsencode: the argument's own bytes (a non-UTF-8 one reached Python as
        # lone surrogates, which msgspec raised UnicodeEncodeError for: a traceback)
        payload = codec.decode_json(os.fsencode(ns.payload))
    except msgspec.DecodeError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    try:
        stored = session.client.send_event(
            ns.id, ns.event, payload, idempotency_key=ns.idempotency_key
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    rid, name = render.clean(ns.id), render.clean(ns.event)
    state = queries.get_run_any(session.client, ns.id) if stored else None
    data = {"id": ns.id, "event": ns.event, "stored": stored}
    if state is not None:
        data["status"] = state.status.value
    if session.json:
        session.out(render.to_json(data))
    elif stored:
        status = state.status.value if state is not None else "?"
        session.out(f"sent event {name} to run {rid} (now {status})")
    else:
        print_err(f"run {rid} is unknown or finished; event {name} was not stored")
    return EXIT_OK if stored else EXIT_FAIL


def cmd_runs_retry(session: Session, ns: argparse.Namespace) -> int:
    require_run(session, ns.id)
    try:
        handle = admin.retry_run(session.client, ns.id)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    new = require_run(session, handle.id)
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


def cmd_runs_resume(session: Session, ns: argparse.Namespace) -> int:
    require_run(session, ns.id)
    try:
        session.client.resume_run(ns.id)
    except RunNotResumableError as exc:
        if exc.status is None:  # removed between the two reads
            require_run(session, ns.id)
        raise Failure(str(exc)) from None
    state = require_run(session, ns.id)
    # The count only: no step held (a run of 100,000 steps held them all).
    ends = previews.get_run_steps_ends_any(session.client, ns.id, 0, 0)
    kept = ends.by_status.get("succeeded", 0) if ends is not None else 0
    session.emit(
        f"resumed run {render.clean(ns.id)} (workflow {render.clean(state.workflow)}, queue "
        f"{render.clean(state.queue)}): {state.status.value}, attempt {state.attempt}/"
        f"{state.max_attempts}, {kept} succeeded step(s) kept",
        {
            "id": ns.id,
            "workflow": state.workflow,
            "queue": state.queue,
            "status": state.status.value,
            "attempt": state.attempt,
            "max_attempts": state.max_attempts,
            "steps_kept": kept,
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
        self.steps_total = 0  # the run's step records at the last read
        self.attempts_until = -1  # finish time of the last attempt entry printed

    def _line(self, event: str, at_ms: int | None, text: str, **data: Any) -> None:
        if self.session.json:
            line = msgspec.json.encode({"event": event, "at": at_ms, **data}).decode()
            self.session.out(render.json_text(line))
        else:
            stamp = render.fmt_time(at_ms)[11:] if at_ms else "--:--:--"
            self.session.out(f"{stamp}  {text}")

    def _new_attempts(self, state: RunState) -> list[AttemptState]:
        """The run's ended attempts not printed yet (oldest first), marked printed."""
        out = []
        for entry in state.attempts:
            if (entry.finished_at or 0) > self.attempts_until:
                self.attempts_until = entry.finished_at or 0
                out.append(entry)
        return out

    def _window(self, steps: Sequence[StepState], total: int | None) -> int:
        """How many new steps are older than ``steps`` (the latest of the run's
        ``total``; None: ``steps`` are all of them); forgets the steps older than
        those (a step that left the window no longer changes): what is
        remembered stays bounded."""
        if total is None:
            return 0
        new = sum(1 for step in steps if step.name not in self.steps)
        skipped = total - self.steps_total - new
        self.steps_total = total
        window = {step.name for step in steps}
        self.steps = {n: v for n, v in self.steps.items() if n in window}
        return skipped

    def update(
        self, state: RunState, steps: Sequence[StepState], now_ms: int, total: int | None = None
    ) -> None:
        """Print the new things, oldest first (by their times): ended attempts, steps,
        a cancel request, a status change. A first look at a run that has ended, or a
        look that sees a step and its attempt end, printed every attempt before the
        steps that ran in it. ``steps``: the latest of the run's ``total`` steps (all
        of them when ``total`` is None); the new ones older than those are one line
        saying how many."""
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
        pending: list[tuple[int, int, int, str, int | None, str, dict[str, Any]]] = []
        # At the same millisecond: a step, then the attempt it ended, then a status.
        rank = {"steps_not_shown": -1, "attempt": 1, "status": 2}

        def later(event: str, at_ms: int | None, text: str, **data: Any) -> None:
            key = (at_ms or now_ms, rank.get(event, 0), len(pending))
            pending.append((*key, event, at_ms, text, data))

        # Every ended attempt, from the first (also when watching starts later).
        for entry in self._new_attempts(state):
            later(
                "attempt",
                entry.finished_at,
                clean(render.attempt_text(entry)),
                **msgspec.to_builtins(entry),
            )
        skipped = self._window(steps, total)
        if skipped > 0 and steps:
            later(
                "steps_not_shown",
                steps[0].started_at,
                f"… {skipped:,} earlier steps not shown (`redflow runs show "
                f"{clean(state.id)} --all-steps` lists them)",
                count=skipped,
            )
        for step in steps:
            key = (step.status.value, step.attempt, step.finished_at)
            if self.steps.get(step.name) == key:
                continue
            self.steps[step.name] = key
            err = f": {clean(step.error.type)}: {clean(step.error.message)}" if step.error else ""
            if step.status.value == "running":
                shown = render.step_status(step, state)
                later(
                    "step",
                    step.started_at,
                    f"step {clean(step.name)} {shown} (started, attempt {step.attempt})",
                    **render.step_record(step),
                )
                continue
            later(
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
                later(
                    "cancel_requested",
                    state.cancel_requested_at,
                    f"cancel requested{reason}",
                    reason=state.cancel_reason,
                )
        changed = state.status.value != self.status or state.attempt != self.attempt
        if changed and not state.status.terminal:  # the end line reports a terminal status
            later(
                "status",
                state.updated_at or now_ms,
                f"{state.status.value} (attempt {state.attempt}/{state.max_attempts})",
                status=state.status.value,
                attempt=state.attempt,
            )
        self.status, self.attempt = state.status.value, state.attempt
        for _, _, _, event, at_ms, text, data in sorted(pending, key=lambda p: p[:3]):
            self._line(event, at_ms, text, **data)

    def finish(self, state: RunState, now_ms: int) -> None:
        took = render.fmt_duration(render.run_duration_ms(state, now_ms))
        data: dict[str, Any] = {"status": state.status.value, "id": state.id}
        if state.status is RunStatus.SUCCEEDED:
            output = render.clean(render.fmt_json(state.output, 2000))
            text = f"succeeded in {took}; output: {output}"
            data["output"] = state.output
        else:
            err = state.error
            what = f"{render.clean(err.type)}: {render.clean(err.message)}" if err else "no error"
            text = f"{state.status.value} after {took}: {what}"
            data["error"] = msgspec.to_builtins(err) if err else None
        self._line("end", state.finished_at or now_ms, text, **data)


#: Seconds between reads of a run's steps while its step counters do not move.
STEPS_REREAD_S = 10.0
#: Steps a look of ``runs watch`` holds at most: the latest, in execution order.
WATCH_STEPS = 1000


def _steps_mark(client: Client, state: RunState) -> tuple[Any, ...] | None:
    """What moves when a step record of the run is written (its status, attempt and
    step counters: ``stepSeq`` counts new step names, ``stepBytes`` the size of
    the records), or None when the run has no ``stepBytes`` to tell."""
    view = queries.run_view(client, state.id)
    seq, size = view.redis.hmget(view.keys.run(state.id), "stepSeq", "stepBytes")
    if size is None:
        return None
    return (state.status.value, state.attempt, seq, size)  # (updatedAt moves with the lease)


def cmd_runs_watch(session: Session, ns: argparse.Namespace) -> int:
    """Each look reads the run without its payloads (``queries.get_run_row``: a run
    with an 8 MiB input and output was 16 MB a look), and the run that ended once
    whole; its steps only when its step counters moved, or
    :data:`STEPS_REREAD_S` after the last read (a run of 20,000 steps cost ~52 ms
    of Redis and 40 MB at every look): every record is scanned (HSCAN) but only
    the latest :data:`WATCH_STEPS` are decoded and held, the new ones older than
    those counted on one line (a run of 100,000 steps took 6.5 s and 182 MB
    and printed a line per step)."""
    deadline = None if ns.timeout is None else time.monotonic() + ns.timeout
    watcher = _Watcher(session)
    steps: list[StepState] = []
    total = 0
    mark: tuple[Any, ...] | None = None
    reread_at = 0.0
    while True:
        # Each look without the payloads; the run that ended is read whole once
        # (its output or error, and the attempt its finish implies, are printed).
        state = queries.get_run_row_any(session.client, ns.id)
        if state is not None and state.status.terminal:
            state = queries.get_run_any(session.client, ns.id)
        if state is None:
            if watcher.status is None:
                raise Failure(
                    f"run {render.clean(ns.id)} not found; " + "; ".join(where_looked(session))
                )
            raise Failure(f"run {render.clean(ns.id)} no longer exists (removed by retention?)")
        seen = _steps_mark(session.client, state)  # before the steps: a later write moves it
        if seen is None or seen != mark or state.status.terminal or time.monotonic() >= reread_at:
            ends = previews.get_run_steps_ends_any(session.client, ns.id, 0, WATCH_STEPS)
            steps, total = (ends.last, ends.total) if ends is not None else ([], 0)
            mark, reread_at = seen, time.monotonic() + STEPS_REREAD_S
        now = session.now_ms()
        watcher.update(state, steps, now, total)
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
