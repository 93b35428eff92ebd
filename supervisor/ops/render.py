"""Render runs, steps, workflows, queues and supervisors as tables or JSON.

Tables are for people: times in local time, durations rounded, and every
cell made safe for a terminal (control and bidi characters are shown as
escapes, so a hostile run id or workflow name cannot move the cursor or
recolour the screen). JSON is for scripts: plain records with epoch
milliseconds, the same fields as the library's structs plus a few derived
ones (``duration_ms``, ``retry_of``).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import msgspec

from redflow_mp.admin import CronEntry, QueueStats, WorkflowStats
from redflow_mp.codec import AttemptState, RunState, StepState
from redflow_mp.previews import StepEnds

from ..status import SupervisorStatus

__all__ = [
    "RUNS_HEADERS",
    "clean",
    "display_width",
    "fmt_bytes",
    "fmt_duration",
    "fmt_json",
    "fmt_relative",
    "fmt_time",
    "json_array_lines",
    "json_text",
    "queues_table",
    "run_detail_record",
    "run_detail_text",
    "run_duration_ms",
    "run_record",
    "run_row",
    "runs_table",
    "step_duration_ms",
    "step_record",
    "supervisors_text",
    "table",
    "table_lines",
    "to_json",
    "workflow_records",
    "workflows_table",
]

MAX_CELL = 64
DASH = "-"


# --------------------------------------------------------------- formatting


def fmt_time(ms: int | None) -> str:
    """Epoch milliseconds as local ``YYYY-MM-DD HH:MM:SS`` (``-`` when unset)."""
    if not ms:
        return DASH
    try:
        return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def fmt_duration(ms: int | float | None) -> str:
    """A duration in milliseconds, rounded for reading: ``850ms``, ``12.3s``, ``4m05s``."""
    if ms is None:
        return DASH
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def fmt_relative(ms: int | None, now_ms: int) -> str:
    """``in 3m05s`` or ``3m05s ago`` relative to ``now_ms``."""
    if not ms:
        return DASH
    delta = ms - now_ms
    return f"in {fmt_duration(delta)}" if delta >= 0 else f"{fmt_duration(-delta)} ago"


def fmt_bytes(n: int | None) -> str:
    if not n:
        return DASH
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - loop always returns


def fmt_json(value: Any, limit: int | None = None) -> str:
    """A payload as compact JSON, cut at ``limit`` characters with a note."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError, RecursionError):
        text = "<not encodable as JSON>"
    if limit is not None and len(text) > limit:
        return f"{text[:limit]}… ({len(text)} characters; use --json for all)"
    return text


def to_json(value: Any) -> str:
    """Pretty JSON for ``--json`` output (structs, enums and dicts alike), safe for
    a terminal (:func:`json_text`)."""
    return json_text(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    code = ord(ch)
    if code > 0xFFFF:  # a surrogate pair, as JSON writes it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_text(text: str) -> str:
    """JSON text with the characters :func:`clean` escapes (C1 controls, bidi
    overrides, line separators, unassigned ones) written as ``\\u`` escapes: the
    same JSON value. JSON escapes only those below U+0020, and ``--json`` output
    reaches terminals too. Outside its strings JSON is ASCII, so every character
    replaced is inside one."""
    return text if text.isascii() else _NON_ASCII.sub(_json_escape, text)


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def clean(text: Any) -> str:
    """``text`` with control, format (bidi) and unassigned characters escaped."""
    shown: str = str(text)
    if shown.isascii() and shown.isprintable():  # the common case, in C (a 10 MB output)
        return shown
    out = []
    for ch in shown:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters count twice)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _cut(text: str, limit: int) -> str:
    if display_width(text) <= limit:
        return text
    out, width = [], 0
    for ch in text:
        w = display_width(ch)
        if width + w > limit - 1:
            break
        out.append(ch)
        width += w
    return "".join(out) + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Columns aligned by display width; cells cleaned and cut at ``MAX_CELL``."""
    return "\n".join(table_lines(headers, rows, indent, first=len(rows)))


def table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "", first: int = 1000
) -> Iterator[str]:
    """:func:`table`'s lines one by one, for a stream of rows: the widths are those
    of the header and the first ``first`` rows (the only ones held at once); a
    later, longer cell widens its column from its row on. Up to ``first`` rows,
    the same text as :func:`table`."""
    rows = iter(rows)
    head = [[_cut(clean(c), MAX_CELL) for c in row] for row in itertools.islice(rows, first)]
    widths = [display_width(h) for h in headers]
    for cells in head:
        for i, c in enumerate(cells):
            widths[i] = max(widths[i], display_width(c))

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, c in enumerate(cells):
            width = display_width(c)
            widths[i] = max(widths[i], width)
            pad = "" if i == len(cells) - 1 else " " * (widths[i] - width)
            parts.append(c + pad)
        return indent + "  ".join(parts).rstrip()

    yield line(list(headers))
    for cells in head:
        yield line(cells)
    del head
    for row in rows:
        yield line([_cut(clean(c), MAX_CELL) for c in row])


def json_array_lines(values: Iterable[Any]) -> Iterator[str]:
    """:func:`to_json` of the list of ``values``, in pieces (one value encoded at
    a time): joined by newlines, the same text."""
    previous: str | None = None
    for value in values:
        body = json_text(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
        if previous is None:
            yield "["
        else:
            yield previous + ","
        previous = "\n".join("  " + part for part in body.split("\n"))
    if previous is None:
        yield "[]"
        return
    yield previous
    yield "]"


# ------------------------------------------------------------------- records


def run_duration_ms(state: RunState, now_ms: int) -> int | None:
    """Run time so far (running) or in total (finished); None before it started."""
    if state.started_at is None:
        return None
    end = state.finished_at if state.finished_at is not None else now_ms
    return max(0, end - state.started_at)


def step_status(step: StepState, run: RunState) -> str:
    """A step's status as shown: a ``running`` record of a run that no longer runs
    this attempt (it ended, or its worker was lost) is ``interrupted``."""
    if step.status.value == "running" and (
        run.status.value != "running" or step.attempt != run.attempt
    ):
        return "interrupted"
    return step.status.value


def attempt_text(a: AttemptState) -> str:
    """One line for an ended attempt: outcome, duration, error or cause."""
    took = (
        fmt_duration(max(0, a.finished_at - a.started_at))
        if a.started_at is not None and a.finished_at is not None
        else "-"
    )
    what = ""
    if a.error is not None:
        what = f": {a.error.type}: {a.error.message}"
    elif a.cause:
        what = f": {a.cause}"
    return f"attempt {a.attempt} {a.outcome} after {took}{what}"


def attempts_lines(state: RunState, now_ms: int) -> list[str]:
    """``runs show``'s history: every ended attempt, oldest first, and the one in flight."""
    rows: list[tuple[Any, ...]] = [
        (
            a.attempt,
            a.outcome,
            fmt_time(a.started_at),
            fmt_time(a.finished_at),
            fmt_duration(
                max(0, a.finished_at - a.started_at)
                if a.started_at is not None and a.finished_at is not None
                else None
            ),
            f"{a.error.type}: {a.error.message}" if a.error else (a.cause or ""),
        )
        for a in state.attempts
    ]
    if state.status.value == "running" and state.attempt_started_at:
        rows.append(
            (
                state.attempt,
                "running",
                fmt_time(state.attempt_started_at),
                "",
                fmt_duration(max(0, now_ms - state.attempt_started_at)),
                "",
            )
        )
    if not rows:
        return []
    return [
        "attempts:",
        table(("#", "OUTCOME", "STARTED", "FINISHED", "DURATION", "ERROR / CAUSE"), rows, "  "),
    ]


def step_duration_ms(step: StepState) -> int | None:
    if step.started_at is None or step.finished_at is None:
        return None
    return max(0, step.finished_at - step.started_at)


def fmt_wait(state: RunState, now_ms: int) -> str | None:
    """What a suspended run waits for, in one line (None when it waits for nothing)."""
    w = state.wait
    if w is None:
        return None
    parts = []
    if w.children:
        shown = ", ".join(w.children[:5]) + (", ..." if len(w.children) > 5 else "")
        parts.append(f"{len(w.children)} child run(s) to finish: {shown}")
    elif w.children_awaited:  # a paged wait names none: run:<id>:awaits holds them
        parts.append(f"{w.children_awaited} child run(s) to finish (ids not listed: paged)")
    if w.events:
        parts.append("event " + " or ".join(repr(e) for e in w.events))
    if w.wake_at:
        what = "until" if w.kinds == ["sleep"] else "at most until"
        parts.append(f"{what} {fmt_time(w.wake_at)} ({fmt_relative(w.wake_at, now_ms)})")
    steps = ", ".join(repr(s) for s in w.steps)
    return "; ".join(parts) + (f" (step {steps})" if steps else "")


def run_record(state: RunState, retry_of: str | None = None) -> dict[str, Any]:
    """A run as a plain dict (``RunState`` fields, plus ``retry_of`` when set)."""
    out: dict[str, Any] = msgspec.to_builtins(state)
    if retry_of:
        out["retry_of"] = retry_of
    return out


def step_record(step: StepState) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(step)
    out["duration_ms"] = step_duration_ms(step)
    return out


def step_ends(steps: Sequence[StepState] | StepEnds) -> StepEnds:
    """``steps`` as a :class:`StepEnds` (a list: every step, none left out)."""
    if isinstance(steps, StepEnds):
        return steps
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.status.value] = counts.get(s.status.value, 0) + 1
    return StepEnds(first=list(steps), last=[], total=len(steps), by_status=counts)


def run_detail_record(
    state: RunState, steps: Sequence[StepState] | StepEnds, retry_of: str | None = None
) -> dict[str, Any]:
    """``runs show --json``: the run, the steps shown (in execution order), how many
    the run has (``steps_total``), how many are not shown between the first and
    the last ones (``steps_omitted``) and the count per status (``steps_by_status``)."""
    ends = step_ends(steps)
    return {
        "run": run_record(state, retry_of),
        "steps": [step_record(s) for s in (*ends.first, *ends.last)],
        "steps_total": ends.total,
        "steps_omitted": ends.omitted,
        "steps_by_status": dict(sorted(ends.by_status.items())),
    }


def workflow_records(stats: Sequence[WorkflowStats]) -> list[dict[str, Any]]:
    out = []
    for s in stats:
        rec: dict[str, Any] = msgspec.to_builtins(s.meta)
        rec.update(
            running=s.running,
            queued=s.queued,
            parked=s.parked,
            cron_entries=msgspec.to_builtins(s.cron),
        )
        out.append(rec)
    return out


# -------------------------------------------------------------------- tables


def _attempts(state: RunState) -> str:
    return f"{state.attempt}/{state.max_attempts}"


RUNS_HEADERS = ("ID", "WORKFLOW", "STATUS", "ATTEMPT", "CREATED", "DURATION", "QUEUE")


def run_row(r: RunState, now_ms: int) -> tuple[str, ...]:
    """A run's cells in a runs table (:data:`RUNS_HEADERS`)."""
    return (
        r.id,
        r.workflow,
        r.status.value,
        _attempts(r),
        fmt_time(r.created_at),
        fmt_duration(run_duration_ms(r, now_ms)),
        r.queue,
    )


def runs_table(runs: Sequence[RunState], now_ms: int) -> str:
    if not runs:
        return "no runs"
    return table(RUNS_HEADERS, [run_row(r, now_ms) for r in runs])


def run_detail_text(
    state: RunState, steps: Sequence[StepState] | StepEnds, retry_of: str | None, now_ms: int
) -> str:
    """``redflow runs show``: the run's fields, its steps, its error with traceback.
    Steps left out between the first and the last ones shown are one line saying
    how many, and how to see more."""
    ends = step_ends(steps)
    fields: list[tuple[str, str]] = [
        ("id", state.id),
        ("workflow", state.workflow),
        ("queue", state.queue),
        ("status", state.status.value),
        ("attempt", _attempts(state)),
        ("created", fmt_time(state.created_at)),
    ]
    if state.available_at and state.status.value in ("scheduled", "queued"):
        fields.append(
            (
                "available",
                f"{fmt_time(state.available_at)} ({fmt_relative(state.available_at, now_ms)})",
            )
        )
    fields += [
        ("started", fmt_time(state.started_at)),
        ("finished", fmt_time(state.finished_at)),
        ("duration", fmt_duration(run_duration_ms(state, now_ms))),
    ]
    optional = (
        ("priority", str(state.priority) if state.priority else None),
        ("timeout", f"{state.timeout:g}s" if state.timeout else None),
        (
            "cancel requested",
            fmt_time(state.cancel_requested_at) if state.cancel_requested_at else None,
        ),
        ("cancel reason", state.cancel_reason),
        ("waits for", fmt_wait(state, now_ms)),
        ("idempotency key", state.idempotency_key),
        ("parent run", state.parent_run_id),
        ("retry of", retry_of),
        ("cron", state.cron_id),
        (
            "crashes",
            f"{state.crash_count} (last: {state.last_crash or '?'})" if state.crash_count else None,
        ),
    )
    fields += [(k, v) for k, v in optional if v]
    fields.append(("input", fmt_json(state.input, 500)))
    if state.status.value == "succeeded" or state.output is not None:
        fields.append(("output", fmt_json(state.output, 500)))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {clean(v)}" for k, v in fields]
    lines.append("")
    if ends.first or ends.last:
        lines.append(_steps_heading(ends))
        numbered = [(i + 1, s) for i, s in enumerate(ends.first)]
        numbered += [(ends.total - len(ends.last) + i + 1, s) for i, s in enumerate(ends.last)]
        rows = [
            (
                n,
                s.name,
                step_status(s, state),
                s.attempt,
                fmt_time(s.started_at),
                fmt_duration(step_duration_ms(s)),
                f"{s.error.type}: {s.error.message}" if s.error else "",
            )
            for n, s in numbered
        ]
        headers = ("#", "STEP", "STATUS", "ATTEMPT", "STARTED", "DURATION", "ERROR")
        step_lines = table(headers, rows, "  ").split("\n")
        if ends.omitted:
            step_lines.insert(1 + len(ends.first), f"  … and {ends.omitted:,} more steps")
        lines += step_lines
        if ends.omitted:
            lines.append(
                f"  ({len(ends.first) + len(ends.last):,} of {ends.total:,} steps shown; "
                "use --steps N or --all-steps to see more)"
            )
    elif ends.total:
        lines.append(_steps_heading(ends) + " (use --steps N or --all-steps to see them)")
    else:
        lines.append("steps: none recorded")
    if state.error is not None:
        lines += ["", f"error: {clean(state.error.type)}: {clean(state.error.message)}"]
        if not state.error.retryable:
            lines.append("(not retryable)")
        if state.error.traceback:
            lines.append("traceback:")
            lines += [
                "  " + clean(line) for line in state.error.traceback.rstrip("\n").splitlines()
            ]
    history = attempts_lines(state, now_ms)
    if history:
        lines += ["", *history]
    return "\n".join(lines).rstrip("\n")


def _steps_heading(ends: StepEnds) -> str:
    """``steps:``, or with steps left out, their count and the count per status."""
    if not ends.omitted and (ends.first or ends.last):
        return "steps:"
    counts = ", ".join(f"{n:,} {clean(status)}" for status, n in sorted(ends.by_status.items()))
    return f"steps: {ends.total:,} in all ({counts})"


def _cron_text(entries: Sequence[CronEntry], now_ms: int) -> str:
    parts = []
    for c in entries:
        nxt = (
            f"next {fmt_time(c.next_fire_at)} ({fmt_relative(c.next_fire_at, now_ms)})"
            if c.next_fire_at
            else "not scheduled"
        )
        parts.append(f"{c.expression} [{c.timezone}] {nxt}")
    return "; ".join(parts) if parts else DASH


def workflows_table(stats: Sequence[WorkflowStats], now_ms: int) -> str:
    if not stats:
        return "no workflows synced (a supervisor syncs its registry when it starts)"
    rows = []
    for s in stats:
        attempts = s.meta.retries.max_attempts if s.meta.retries else 1
        rows.append(
            (
                s.meta.name,
                s.meta.queue,
                s.meta.max_concurrency,
                attempts,
                s.running,
                "?" if s.queued is None else s.queued,
                s.parked,
                s.meta.rate_limit or "-",
                s.meta.app,
                _cron_text(s.cron, now_ms),
            )
        )
    headers = (
        "WORKFLOW",
        "QUEUE",
        "MAX CONC",
        "ATTEMPTS",
        "RUNNING",
        "QUEUED",
        "PARKED",
        "RATE",
        "APP",
        "CRON",
    )
    # The cron column may be long (several schedules): never cut it.
    body = table(headers[:-1], [r[:-1] for r in rows]).splitlines()
    width = max(display_width(line) for line in body)
    lines = []
    for line, extra in zip(body, [headers[-1], *[r[-1] for r in rows]], strict=True):
        lines.append(line + " " * (width - display_width(line)) + "  " + clean(extra))
    return "\n".join(lines)


_QUEUE_HEADERS = ("QUEUE", "READY", "PROCESSING", "SCHEDULED", "OLDEST WAITING")


def _queue_row(q: QueueStats) -> tuple[Any, ...]:
    age = q.oldest_ready_age_ms
    return (
        q.name,
        q.ready,
        q.processing,
        q.scheduled,
        fmt_duration(age) if age is not None else DASH,
    )


def queues_table(stats: Sequence[QueueStats]) -> str:
    if not stats:
        return "no queues"
    return table(_QUEUE_HEADERS, [_queue_row(q) for q in stats])


def queues_table_lines(stats: Iterable[QueueStats], first: int = 1000) -> Iterator[str]:
    """:func:`queues_table` line by line for a stream (the header first; widths
    from the first ``first`` rows, as :func:`table_lines`)."""
    return table_lines(_QUEUE_HEADERS, (_queue_row(q) for q in stats), first=first)


#: Queue names a supervisor's line shows (5,000 made one line of 29 KB).
SHOWN_QUEUES = 20


def _queue_list(queues: Sequence[str]) -> str:
    """The first :data:`SHOWN_QUEUES` names, then how many more."""
    shown = clean(",".join(queues[:SHOWN_QUEUES]))
    more = len(queues) - SHOWN_QUEUES
    return f"{shown} and {more:,} more (--json lists them)" if more > 0 else shown


def supervisors_text(sups: Sequence[SupervisorStatus], now_ms: int) -> str:
    if not sups:
        return "no live supervisors"
    blocks = []
    for s in sups:
        head = (
            f"supervisor {clean(s.id)}  app {clean(s.app)}  {clean(s.mode)}"
            f"{'  cron leader' if s.leader else ''}  procs {s.procs}"
            f"  queues {_queue_list(s.queues)}  rss {fmt_bytes(s.rss)}"
            f"  up {fmt_duration(now_ms - s.started_at)}"
            f"  seen {fmt_relative(s.updated_at, now_ms)}"
            f"{'  v' + clean(s.version) if s.version else ''}"
        )
        if s.children:
            rows = [
                (
                    c.slot,
                    c.pid,
                    c.state,
                    c.run_id or DASH,
                    c.workflow or DASH,
                    fmt_duration(s.updated_at - c.run_started_at) if c.run_started_at else DASH,
                    fmt_bytes(c.rss),
                    f"{c.cpu_percent:.1f}%",
                    c.runs_done,
                    c.restarts,
                )
                for c in s.children
            ]
            body = table(
                (
                    "SLOT",
                    "PID",
                    "STATE",
                    "RUN",
                    "WORKFLOW",
                    "RUN FOR",
                    "RSS",
                    "CPU",
                    "RUNS",
                    "RESTARTS",
                ),
                rows,
                "  ",
            )
        else:
            body = "  no children"
        blocks.append(head + "\n" + body)
    return "\n\n".join(blocks)
