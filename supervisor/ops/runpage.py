"""The dashboard's run page: facts, actions, step timeline, attempts, input and output.

A run may hold a million steps and a payload of megabytes, and its page refreshes
itself every few seconds: it shows at most ``MAX_STEPS_SHOWN`` steps, each output cut
at ``MAX_STEP_OUTPUT_SHOWN`` characters, and does not decode a payload over
``MAX_PAYLOAD_SHOWN`` bytes (``redflow_mp.previews``). The cancel, retry and resume
forms post to ``webapp.py``'s actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from redflow_mp import previews
from redflow_mp.client import Client
from redflow_mp.codec import RunState, RunStatus, StepState
from redflow_mp.errors import ErrorInfo

from . import render
from .markup import MAX_PAYLOAD_SHOWN, Page, View, badge, e, error_page, href, pretty
from .session import run_id_refusal

__all__ = ["MAX_STEPS_SHOWN", "MAX_STEP_OUTPUT_SHOWN", "NOTICES", "run_page"]

#: Steps a run page shows at most, and the characters of each step's output: a
#: run may hold a million steps (a loop of ``step.run``), and its page refreshes
#: itself every few seconds (each step's output in full made 7.6 MB for 3,000).
MAX_STEPS_SHOWN = 200
MAX_STEP_OUTPUT_SHOWN = 4_000
NOTICES = {
    "canceled": "Run canceled.",
    "cancel-requested": "Cancel requested: the run stops at its next step, or is stopped "
    "after cancel_grace.",
    "not-cancelable": "The run had already finished; nothing was canceled.",
    "retried": "Enqueued as a new run (this one), linked to the old one by retry_of.",
    "resumed": "Resumed: queued again as the same run with the next attempt; its succeeded "
    "steps are kept.",
}


def run_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    run_id = q.get("id", "")
    if not run_id:
        return error_page(HTTPStatus.BAD_REQUEST, "no run id given", "runs")
    refusal = run_id_refusal(run_id)
    if refusal is not None:
        return error_page(HTTPStatus.BAD_REQUEST, refusal, "runs")
    found = previews.get_run_preview_any(client, run_id, MAX_PAYLOAD_SHOWN)
    if found is None:
        return error_page(
            HTTPStatus.NOT_FOUND,
            f"run {run_id} not found (unknown id, or removed by retention)",
            "runs",
        )
    state, cut = found  # a payload over MAX_PAYLOAD_SHOWN bytes is not decoded
    steps, step_count = previews.get_run_steps_head_any(
        client, run_id, MAX_STEPS_SHOWN, MAX_STEP_OUTPUT_SHOWN
    ) or ([], 0)
    now = client.server_time_ms()
    page = Page(f"Run {state.id}", "runs")
    notice = NOTICES.get(q.get("notice", ""))
    if notice:
        page.add(f"<div class='notice'>{e(notice)}</div>")
    page.add(f"<h1>Run <span class='mono'>{e(state.id)}</span> {badge(state.status.value)}</h1>")
    page.add(_actions(cfg, state))
    page.add(_facts(cfg.base, state, state.retry_of, now))
    if state.error is not None:
        err = state.error
        page.add(
            "<h2>Error</h2>",
            f"<div class='error'><strong>{e(err.type)}</strong>: {e(err.message)}"
            f"{'' if err.retryable else ' <span class=muted>(not retryable)</span>'}</div>",
        )
        if err.traceback:
            page.add(f"<pre class='tb'>{e(err.traceback)}</pre>")
    page.add("<h2>Steps</h2>")
    if step_count > len(steps):
        page.add(
            f"<p class='muted'>This run has {step_count:,} steps; shown are {len(steps):,} of "
            "them in execution order (Redis hands out a large run's steps in no particular "
            "order, so not necessarily its first ones). <code>redflow runs show ID</code> "
            "lists them all.</p>"
        )
    page.add(_timeline(state, steps, now))
    if state.attempts or state.status is RunStatus.RUNNING:
        page.add("<h2>Attempts</h2>", _attempts_table(state, now))
    shown_input = cut.get("input") or pretty(state.input)
    page.add(f"<h2>Input</h2><pre>{e(shown_input)}</pre>")
    if "output" in cut:
        page.add(f"<h2>Output</h2><pre>{e(cut['output'])}</pre>")
    elif state.status is RunStatus.SUCCEEDED or state.output is not None:
        page.add(f"<h2>Output</h2><pre>{e(pretty(state.output))}</pre>")
    page.query = q
    return page


def _facts(base: str, s: RunState, retry_of: str | None, now: int) -> str:
    def run_link(rid: str) -> str:
        return f"<a class='mono' href='{href(base, '/run', id=rid)}'>{e(rid)}</a>"

    rows: list[tuple[str, str]] = [
        ("workflow", f"<a href='{href(base, '/runs', workflow=s.workflow)}'>{e(s.workflow)}</a>"),
        ("queue", e(s.queue)),
        ("attempt", f"{s.attempt} of {s.max_attempts}"),
        ("created", e(render.fmt_time(s.created_at))),
    ]
    if s.available_at and s.status in (RunStatus.SCHEDULED, RunStatus.QUEUED):
        rows.append(
            (
                "available",
                e(
                    f"{render.fmt_time(s.available_at)} "
                    f"({render.fmt_relative(s.available_at, now)})"
                ),
            )
        )
    rows += [
        ("started", e(render.fmt_time(s.started_at))),
        ("finished", e(render.fmt_time(s.finished_at))),
        ("duration", e(render.fmt_duration(render.run_duration_ms(s, now)))),
    ]
    if s.timeout:
        rows.append(("timeout", e(f"{s.timeout:g} s")))
    if s.cancel_requested_at:
        rows.append(("cancel requested", e(render.fmt_time(s.cancel_requested_at))))
    if s.cancel_reason:
        rows.append(("cancel reason", e(s.cancel_reason)))
    waiting = render.fmt_wait(s, now)
    if waiting:
        rows.append(("waits for", e(waiting)))
    if s.idempotency_key:
        rows.append(("idempotency key", f"<code>{e(s.idempotency_key)}</code>"))
    if s.parent_run_id:
        rows.append(("parent run", run_link(s.parent_run_id)))
    if retry_of:
        rows.append(("retry of", run_link(retry_of)))
    if s.cron_id:
        rows.append(("cron", f"<code>{e(s.cron_id)}</code>"))
    if s.crash_count:
        rows.append(("crashes", e(f"{s.crash_count} (last: {s.last_crash or '?'})")))
    body = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='facts'>{body}</table>"


def _actions(cfg: View, s: RunState) -> str:
    cancelable = not s.status.terminal
    retryable = s.status in (RunStatus.FAILED, RunStatus.CANCELED)
    if not (cancelable or retryable):
        return ""
    if not cfg.actions:
        return f"<p class='muted'>{e(cfg.actions_off_note)}</p>" if cfg.actions_off_note else ""
    token_field = (
        "<label>token <input type='password' name='token' autocomplete='current-password' "
        "required></label>"
    )
    forms = []
    if cancelable:
        forms.append(
            f"<form method='post' action='{href(cfg.base, '/actions/cancel')}' class='cancel'>"
            f"<input type='hidden' name='id' value='{e(s.id)}'>"
            "<label>reason <input name='reason' placeholder='optional'></label>"
            f"{token_field}<button type='submit' class='danger'>Cancel run</button></form>"
        )
    if retryable:
        forms.append(
            f"<form method='post' action='{href(cfg.base, '/actions/retry')}' class='retry'>"
            f"<input type='hidden' name='id' value='{e(s.id)}'>"
            f"{token_field}<button type='submit'>Retry as a new run</button></form>"
        )
        forms.append(
            f"<form method='post' action='{href(cfg.base, '/actions/resume')}' class='resume'>"
            f"<input type='hidden' name='id' value='{e(s.id)}'>"
            f"{token_field}<button type='submit'>Resume (keep succeeded steps)</button></form>"
        )
    return f"<div class='actions'>{''.join(forms)}</div>"


def _timeline(s: RunState, steps: Sequence[StepState], now: int) -> str:
    if not steps:
        return "<p class='muted'>No steps recorded.</p>"
    starts = [x.started_at for x in steps if x.started_at]
    ends = [x.finished_at for x in steps if x.finished_at]
    t0 = min([*starts, *([s.started_at] if s.started_at else [])], default=0)
    t1 = max([*ends, s.finished_at or now], default=0)
    span = max(1, t1 - t0)
    rows = []
    for i, st in enumerate(steps, 1):
        bar = ""
        shown = render.step_status(st, s)
        end = st.finished_at or (now if shown == "running" else None)
        if st.started_at and end and t0:
            left = 100.0 * (st.started_at - t0) / span
            width = 100.0 * (end - st.started_at) / span
            cls = " class='failed'" if st.status.value == "failed" else ""
            bar = (
                f"<div class='bar'><span{cls} style='left:{left:.2f}%;"
                f"width:{max(width, 0.5):.2f}%'></span></div>"
            )
        detail = ""
        if st.error is not None:
            detail = _error_detail(st.error)
        elif st.children is not None:  # recorded by reference: the outputs are theirs
            shown_ids = ", ".join(st.children[:5]) + (" …" if len(st.children) > 5 else "")
            detail = (
                f"<span class='mono'>the outputs of {len(st.children)} child run(s): "
                f"{e(shown_ids)}</span>"
            )
        elif isinstance(st.output, previews.OutputPreview):  # too large: not decoded
            detail = (
                f"<details><summary class='mono'>{e(st.output[:120])}…</summary>"
                f"<pre>{e(st.output)}</pre></details>"
            )
        elif st.output is not None:
            preview = render.fmt_json(st.output, 120)
            detail = (
                f"<details><summary class='mono'>{e(preview)}</summary>"
                f"<pre>{e(pretty(st.output, MAX_STEP_OUTPUT_SHOWN))}</pre></details>"
            )
        rows.append(
            f"<tr class='step'><td class='num'>{i}</td><td>{e(st.name)}</td>"
            f"<td>{badge(shown)}</td><td class='num'>{st.attempt}</td>"
            f"<td>{e(render.fmt_time(st.started_at))}</td>"
            f"<td class='num'>{e(render.fmt_duration(_so_far(st, end)))}</td>"
            f"<td>{bar}</td><td class='wrap'>{detail}</td></tr>"
        )
    return (
        "<table class='steps'><thead><tr><th>#</th><th>step</th><th>status</th>"
        "<th>attempt</th><th>started</th><th>duration</th><th>timeline</th><th>result</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _error_detail(error: ErrorInfo) -> str:
    """A step's or an attempt's error: its type and message, the traceback folded."""
    detail = f"<strong>{e(error.type)}</strong>: {e(error.message)}"
    if error.traceback:
        detail += (
            f"<details><summary>traceback</summary><pre class='tb'>"
            f"{e(error.traceback)}</pre></details>"
        )
    return detail


def _so_far(st: StepState, end: int | None) -> int | None:
    """A step's duration, or for a step in flight its time so far."""
    if st.started_at is None or end is None:
        return None
    return max(0, end - st.started_at)


def _attempts_table(s: RunState, now: int) -> str:
    """Every ended attempt (oldest first) and the one in flight, with their errors."""
    rows = []
    for a in s.attempts:
        detail = ""
        if a.error is not None:
            detail = _error_detail(a.error)
        elif a.cause:
            detail = e(a.cause)
        took = (
            a.finished_at - a.started_at
            if a.started_at is not None and a.finished_at is not None
            else None
        )
        rows.append(
            f"<tr class='attempt'><td class='num'>{a.attempt}</td><td>{badge(a.outcome)}</td>"
            f"<td>{e(render.fmt_time(a.started_at))}</td>"
            f"<td>{e(render.fmt_time(a.finished_at))}</td>"
            f"<td class='num'>{e(render.fmt_duration(took))}</td>"
            f"<td class='wrap'>{detail}</td></tr>"
        )
    if s.status is RunStatus.RUNNING and s.attempt_started_at:
        rows.append(
            f"<tr class='attempt'><td class='num'>{s.attempt}</td><td>{badge('running')}</td>"
            f"<td>{e(render.fmt_time(s.attempt_started_at))}</td><td></td>"
            f"<td class='num'>{e(render.fmt_duration(now - s.attempt_started_at))}</td>"
            "<td></td></tr>"
        )
    return (
        "<table class='attempts'><thead><tr><th>attempt</th><th>outcome</th><th>started</th>"
        "<th>finished</th><th>duration</th><th>error / cause</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
