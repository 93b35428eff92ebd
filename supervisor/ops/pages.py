"""The dashboard's pages: server-rendered HTML built from the client's views.

Each page function takes the client, the request's :class:`View` (the
dashboard's settings and the path it is mounted at) and the request's query, and
returns a :class:`Page`; :func:`frame` wraps a page in the document (head,
navigation, footer with the auto-refresh control). The WSGI application
(``webapp.py``) routes requests, checks them and sends what these build.

Invariants: every link and form action is built from ``View.base`` (the mount
path, WSGI ``SCRIPT_NAME``), so the pages stay under the prefix they are mounted
at; everything that comes from Redis or the request is escaped with :func:`e`
(``html.escape``): run ids and names may hold quotes, braces, ``<script>``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import msgspec

from redflow_mp import admin, previews, queries
from redflow_mp.client import Client
from redflow_mp.codec import RunState, RunStatus, StepState, text

from ..status import list_supervisors
from . import render
from .styles import CSS, REFRESH_JS

__all__ = [
    "NOTICES",
    "STATUSES",
    "Page",
    "View",
    "e",
    "error_page",
    "frame",
    "href",
    "login_page",
    "queues_page",
    "run_page",
    "runs_page",
    "supervisors_page",
    "workflows_page",
]

MAX_PAYLOAD_SHOWN = 100_000
#: Steps a run page shows at most, and the characters of each step's output: a
#: run may hold a million steps (a loop of ``step.run``), and its page refreshes
#: itself every few seconds (each step's output in full made 7.6 MB for 3,000).
MAX_STEPS_SHOWN = 200
MAX_STEP_OUTPUT_SHOWN = 4_000
#: Past this many known queues the queues page scans their names a page at a time
#: (SSCAN) instead of reading and sorting them all at every load (one SMEMBERS of
#: 100,000 names held Redis 26-46 ms; of a million, a quarter of a second).
QUEUES_SORTED_LIMIT = 50_000
#: The last page number a listing accepts (a larger one is this one: offsets stay small).
MAX_PAGE = 1_000_000
STATUSES = [s.value for s in RunStatus]
NOTICES = {
    "canceled": "Run canceled.",
    "cancel-requested": "Cancel requested: the run stops at its next step, or is stopped "
    "after cancel_grace.",
    "not-cancelable": "The run had already finished; nothing was canceled.",
    "retried": "Enqueued as a new run (this one), linked to the old one by retry_of.",
    "resumed": "Resumed: queued again as the same run with the next attempt; its succeeded "
    "steps are kept.",
}


@dataclass(frozen=True)
class View:
    """What the pages read of one request: the app's settings and its mount path."""

    base: str  # the mount path, URL-quoted, no trailing slash ("" at the root)
    shown_url: str  # the Redis URL, password masked
    prefix: str  # the key prefix
    refresh: int  # seconds between auto-refreshes (0: off)
    page_size: int  # runs per page
    actions: bool  # cancel and retry forms are shown (a token is set, not read-only)
    has_token: bool  # a token is configured (the sign-in form is meaningful)
    actions_off_note: str  # shown on a run page instead of the forms when ``actions`` is off
    footer_note: str  # what the footer says about actions
    sign_out: bool = False  # the footer has a sign-out button (the app's own sign-in)


def e(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape(str(value), quote=True)


def href(base: str, path: str, **params: Any) -> str:
    """An escaped link to ``path`` under the mount path ``base``, with a query built
    from the non-empty ``params``."""
    query = urlencode({k: str(v) for k, v in params.items() if v not in (None, "")})
    return e(f"{base}{path}?{query}" if query else f"{base}{path}")


def _pretty(value: Any, limit: int = MAX_PAYLOAD_SHOWN) -> str:
    try:
        text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError, RecursionError):
        text = "<not encodable as JSON>"
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text):,} characters in all)"
    return text


def _badge(status: str) -> str:
    return f'<span class="badge s-{e(status)}">{e(status)}</span>'


class Page:
    """One HTML response being built."""

    def __init__(self, title: str, nav: str) -> None:
        self.title = title
        self.nav = nav
        self.parts: list[str] = []
        self.status = HTTPStatus.OK
        # The request's query, for the auto-refresh links (None: none kept).
        self.query: Mapping[str, str] | None = None

    def add(self, *html_parts: str) -> Page:
        self.parts.extend(html_parts)
        return self


def error_page(status: int, message: str, nav: str = "") -> Page:
    page = Page(HTTPStatus(status).phrase, nav)
    page.status = HTTPStatus(status)
    page.add(f"<h1>{e(HTTPStatus(status).phrase)}</h1><div class='error'>{e(message)}</div>")
    return page


def frame(page: Page, cfg: View, path: str, nonce: str) -> str:
    """The whole HTML document of ``page`` (``nonce`` marks the one allowed script);
    ``path`` is the page's path below the mount path (URL-quoted)."""
    query = page.query
    refresh = cfg.refresh
    if query is not None and query.get("refresh") == "0":
        refresh = 0
    head = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(page.title)} · redflow</title><style>{CSS}</style>",
    ]
    if refresh and page.status == HTTPStatus.OK:
        head.append(f"<script nonce='{nonce}'>{REFRESH_JS % refresh}</script>")
        head.append(f"<noscript><meta http-equiv='refresh' content='{refresh}'></noscript>")
    head.append("</head><body>")
    links = [("runs", "/runs", "Runs"), ("workflows", "/workflows", "Workflows")]
    links += [("queues", "/queues", "Queues"), ("supervisors", "/supervisors", "Supervisors")]
    nav = "".join(
        f'<a href="{href(cfg.base, u)}"{" class=on" if page.nav == k else ""}>{t}</a>'
        for k, u, t in links
    )
    header = (
        "<header><span class='brand'>red<span>flow</span></span>"
        f"<nav>{nav}</nav><span class='target'>{e(cfg.shown_url)} · prefix "
        f"<code>{e(cfg.prefix)}</code></span></header><main>"
    )
    if refresh:
        params = dict(query or {})
        params["refresh"] = "0"
        toggle = (
            f"auto-refresh every {refresh} s (<a href='{href(cfg.base, path, **params)}'>pause</a>)"
        )
    elif cfg.refresh:
        params = {k: v for k, v in (query or {}).items() if k != "refresh"}
        toggle = f"auto-refresh paused (<a href='{href(cfg.base, path, **params)}'>resume</a>)"
    else:
        toggle = "auto-refresh off"
    footer = (
        f"</main><footer>rendered {e(time.strftime('%Y-%m-%d %H:%M:%S'))} · {toggle}"
        f" · {e(cfg.footer_note)}{_SIGN_OUT % href(cfg.base, '/logout') if cfg.sign_out else ''}"
        "</footer></body></html>"
    )
    return "".join([*head, header, *page.parts, footer])


_SIGN_OUT = " · <form method='post' action='%s' class='out'><button>Sign out</button></form>"


def login_page(cfg: View, status: int = HTTPStatus.OK, message: str = "") -> Page:
    """The sign-in form (or, without a token, a note that none is needed)."""
    page = Page("Sign in", "")
    page.status = HTTPStatus(status)
    if not cfg.has_token:
        page.add(
            "<h1>No sign-in needed</h1><p>This dashboard has no token; "
            f"<a href='{href(cfg.base, '/runs')}'>open the runs</a>.</p>"
        )
    else:
        page.add(
            "<h1>Sign in</h1>",
            f"<div class='error'>{e(message)}</div>" if message else "",
            "<p>This dashboard needs its token (<code>--token</code> or "
            "<code>RF_DASHBOARD_TOKEN</code>).</p>"
            f"<form method='post' action='{href(cfg.base, '/login')}' class='filters'>"
            "<label>token <input type='password' name='token' autocomplete='current-password'"
            " required></label><button type='submit'>Sign in</button></form>",
        )
    return page


def runs_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    workflow = q.get("workflow", "").strip() or None
    status = q.get("status", "") or None
    try:
        page_no = min(max(1, int(q.get("page", "1"))), MAX_PAGE)
    except ValueError:
        page_no = 1
    page = Page("Runs", "runs")
    names = queries.workflow_names_all(client)
    page.add(_filter_form(cfg.base, workflow, status, names))
    if status is not None and status not in STATUSES:
        page.status = HTTPStatus.BAD_REQUEST
        page.add(f"<div class='error'>unknown status {e(status)}</div>")
        page.query = q
        return page
    size = cfg.page_size
    try:
        # "after" (the previous page's last run, put in the "older" link) starts a
        # deep page where that run is, rather than walking every run before it.
        runs = queries.list_runs_all(
            client,
            workflow=workflow,
            status=status,
            limit=size + 1,
            offset=(page_no - 1) * size,
            after=(q.get("after") or None) if page_no > 1 else None,
        )
    except ValueError as exc:  # a workflow name past the length limit
        page.status = HTTPStatus.BAD_REQUEST
        page.add(f"<div class='error'>{e(str(exc))}</div>")
        page.query = q
        return page
    more = len(runs) > size
    runs = runs[:size]
    title = "Runs" + (f" of {workflow}" if workflow else "") + (f" ({status})" if status else "")
    page.title = title
    page.add(f"<h1>{e(title)}</h1>")
    if runs:
        now = client.server_time_ms()
        page.add(_runs_table(cfg.base, runs, now))
    else:
        page.add("<p class='muted'>No runs match.</p>")
    filters = {"workflow": workflow, "status": status}
    pager = [f"<span>page {page_no}</span>"]
    if page_no > 1:
        pager.insert(
            0, f"<a href='{href(cfg.base, '/runs', **filters, page=page_no - 1)}'>← newer</a>"
        )
    if more:
        pager.append(
            f"<a href='{href(cfg.base, '/runs', **filters, page=page_no + 1, after=runs[-1].id)}'>"
            "older →</a>"
        )
    page.add(f"<div class='pager'>{''.join(pager)}</div>")
    page.query = q
    return page


def _filter_form(base: str, workflow: str | None, status: str | None, names: Sequence[str]) -> str:
    options = "".join(
        f"<option value='{e(s)}'{' selected' if s == status else ''}>{e(s)}</option>"
        for s in STATUSES
    )
    datalist = "".join(f"<option value='{e(n)}'>" for n in names)
    return (
        f"<form class='filters' method='get' action='{href(base, '/runs')}'>"
        "<label>workflow <input name='workflow' list='wf-names' "
        f"value='{e(workflow or '')}' placeholder='any'></label>"
        f"<datalist id='wf-names'>{datalist}</datalist>"
        "<label>status <select name='status'><option value=''>any</option>"
        f"{options}</select></label>"
        f"<button type='submit'>Filter</button> <a href='{href(base, '/runs')}'>clear</a></form>"
    )


def _runs_table(base: str, runs: Sequence[RunState], now: int) -> str:
    rows = []
    for r in runs:
        rows.append(
            "<tr>"
            f"<td class='mono'><a href='{href(base, '/run', id=r.id)}'>{e(r.id)}</a></td>"
            f"<td><a href='{href(base, '/runs', workflow=r.workflow)}'>{e(r.workflow)}</a></td>"
            f"<td>{_badge(r.status.value)}</td>"
            f"<td class='num'>{r.attempt}/{r.max_attempts}</td>"
            f"<td>{e(render.fmt_time(r.created_at))}</td>"
            f"<td>{e(render.fmt_time(r.started_at))}</td>"
            f"<td class='num'>{e(render.fmt_duration(render.run_duration_ms(r, now)))}</td>"
            f"<td>{e(r.queue)}</td></tr>"
        )
    return (
        "<table class='runs'><thead><tr><th>run</th><th>workflow</th><th>status</th>"
        "<th>attempt</th><th>created</th><th>started</th><th>duration</th><th>queue</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def run_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    run_id = q.get("id", "")
    if not run_id:
        return error_page(HTTPStatus.BAD_REQUEST, "no run id given", "runs")
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
    page.add(f"<h1>Run <span class='mono'>{e(state.id)}</span> {_badge(state.status.value)}</h1>")
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
    shown_input = cut.get("input") or _pretty(state.input)
    page.add(f"<h2>Input</h2><pre>{e(shown_input)}</pre>")
    if "output" in cut:
        page.add(f"<h2>Output</h2><pre>{e(cut['output'])}</pre>")
    elif state.status is RunStatus.SUCCEEDED or state.output is not None:
        page.add(f"<h2>Output</h2><pre>{e(_pretty(state.output))}</pre>")
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
            detail = f"<strong>{e(st.error.type)}</strong>: {e(st.error.message)}"
            if st.error.traceback:
                detail += (
                    f"<details><summary>traceback</summary><pre class='tb'>"
                    f"{e(st.error.traceback)}</pre></details>"
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
                f"<pre>{e(_pretty(st.output, MAX_STEP_OUTPUT_SHOWN))}</pre></details>"
            )
        rows.append(
            f"<tr class='step'><td class='num'>{i}</td><td>{e(st.name)}</td>"
            f"<td>{_badge(shown)}</td><td class='num'>{st.attempt}</td>"
            f"<td>{e(render.fmt_time(st.started_at))}</td>"
            f"<td class='num'>{e(render.fmt_duration(_so_far(st, end)))}</td>"
            f"<td>{bar}</td><td class='wrap'>{detail}</td></tr>"
        )
    return (
        "<table class='steps'><thead><tr><th>#</th><th>step</th><th>status</th>"
        "<th>attempt</th><th>started</th><th>duration</th><th>timeline</th><th>result</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


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
            detail = f"<strong>{e(a.error.type)}</strong>: {e(a.error.message)}"
            if a.error.traceback:
                detail += (
                    f"<details><summary>traceback</summary><pre class='tb'>"
                    f"{e(a.error.traceback)}</pre></details>"
                )
        elif a.cause:
            detail = e(a.cause)
        took = (
            a.finished_at - a.started_at
            if a.started_at is not None and a.finished_at is not None
            else None
        )
        rows.append(
            f"<tr class='attempt'><td class='num'>{a.attempt}</td><td>{_badge(a.outcome)}</td>"
            f"<td>{e(render.fmt_time(a.started_at))}</td>"
            f"<td>{e(render.fmt_time(a.finished_at))}</td>"
            f"<td class='num'>{e(render.fmt_duration(took))}</td>"
            f"<td class='wrap'>{detail}</td></tr>"
        )
    if s.status is RunStatus.RUNNING and s.attempt_started_at:
        rows.append(
            f"<tr class='attempt'><td class='num'>{s.attempt}</td><td>{_badge('running')}</td>"
            f"<td>{e(render.fmt_time(s.attempt_started_at))}</td><td></td>"
            f"<td class='num'>{e(render.fmt_duration(now - s.attempt_started_at))}</td>"
            "<td></td></tr>"
        )
    return (
        "<table class='attempts'><thead><tr><th>attempt</th><th>outcome</th><th>started</th>"
        "<th>finished</th><th>duration</th><th>error / cause</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def workflows_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    # One page of workflows by name: each costs a few reads on every load.
    names = queries.workflow_names_all(client)
    size = cfg.page_size
    try:
        page_no = max(1, int(q.get("page", "1")))
    except ValueError:
        page_no = 1
    stats = admin.workflow_stats(client, names[(page_no - 1) * size : page_no * size])
    now = client.server_time_ms()
    page = Page("Workflows", "workflows").add("<h1>Workflows</h1>")
    if len(names) > size:
        page.add(_pager(cfg.base, "/workflows", page_no, size, len(names), "workflows"))
    if not stats:
        page.add(
            "<p class='muted'>No workflows synced yet (a supervisor syncs its registry "
            "when it starts).</p>"
        )
        page.query = q
        return page
    rows = []
    for s in stats:
        m = s.meta
        attempts = m.retries.max_attempts if m.retries else 1
        cron = (
            "<br>".join(
                f"<code>{e(c.expression)}</code> {e(c.timezone)} · next "
                f"{e(render.fmt_time(c.next_fire_at))} "
                f"<span class='muted'>({e(render.fmt_relative(c.next_fire_at, now))})</span>"
                for c in s.cron
            )
            or "<span class='muted'>-</span>"
        )
        rows.append(
            f"<tr><td><a href='{href(cfg.base, '/runs', workflow=m.name)}'>{e(m.name)}</a></td>"
            f"<td>{e(m.queue)}</td><td class='num'>{m.max_concurrency}</td>"
            f"<td class='num'>{e(attempts)}</td><td class='num'>{s.running}</td>"
            f"<td class='num'>{'?' if s.queued is None else s.queued}</td>"
            f"<td class='num'>{s.parked}</td>"
            f"<td>{e(m.rate_limit or '-')}</td>"
            f"<td>{e(m.app)}</td><td>{e(render.fmt_time(m.updated_at))}</td>"
            f"<td class='wrap'>{cron}</td></tr>"
        )
    page.add(
        "<table class='workflows'><thead><tr><th>workflow</th><th>queue</th>"
        "<th>max conc.</th><th>attempts</th><th>running</th><th>queued</th><th>parked</th>"
        "<th>rate</th><th>app</th><th>synced</th><th>cron</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    page.query = q
    return page


def queues_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    # One page of queue names: their number is the callers' (queue_override), and
    # each costs three reads on every load of a page that reloads itself.
    key = client.keys.queues
    known = int(client.redis.scard(key))
    size = cfg.page_size
    page = Page("Queues", "queues").add("<h1>Queues</h1>")
    if known > QUEUES_SORTED_LIMIT:
        # Too many to read and sort at every load: one SSCAN page, in Redis's order.
        cursor = q.get("cursor", "0")
        cursor = cursor if cursor.isdigit() and len(cursor) <= 20 else "0"
        next_cursor, raw = client.redis.sscan(key, int(cursor), count=size)
        names = sorted(text(n) for n in raw)
        pager = [f"<span>{known:,} queues, too many to sort: shown as Redis scans them</span>"]
        if cursor != "0":
            pager.insert(0, f"<a href='{href(cfg.base, '/queues')}'>first</a>")
        if int(next_cursor):
            pager.append(
                f"<a href='{href(cfg.base, '/queues', cursor=int(next_cursor))}'>next →</a>"
            )
        page.add(f"<div class='pager'>{''.join(pager)}</div>")
    else:
        all_names = sorted(text(n) for n in client.redis.smembers(key))
        try:
            page_no = max(1, int(q.get("page", "1")))
        except ValueError:
            page_no = 1
        names = all_names[(page_no - 1) * size : page_no * size]
        if len(all_names) > size:
            page.add(_pager(cfg.base, "/queues", page_no, size, len(all_names), "queues"))
    stats = admin.queue_stats(client, names)
    if not stats:
        page.add("<p class='muted'>No queues yet.</p>")
    else:
        rows = "".join(
            f"<tr><td>{e(s.name)}</td><td class='num'>{s.ready}</td>"
            f"<td class='num'>{s.processing}</td><td class='num'>{s.scheduled}</td>"
            f"<td class='num'>{e(render.fmt_duration(s.oldest_ready_age_ms))}</td></tr>"
            for s in stats
        )
        page.add(
            "<table class='queues'><thead><tr><th>queue</th><th>ready</th>"
            "<th>processing</th><th>scheduled</th><th>oldest waiting</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    page.query = q
    return page


def _pager(base: str, path: str, page_no: int, size: int, total: int, what: str) -> str:
    """Previous / next links over ``total`` items (``what``) shown ``size`` a page."""
    pager = [f"<span>page {page_no} of {total:,} {what}</span>"]
    if page_no > 1:
        pager.insert(0, f"<a href='{href(base, path, page=page_no - 1)}'>← previous</a>")
    if page_no * size < total:
        pager.append(f"<a href='{href(base, path, page=page_no + 1)}'>next →</a>")
    return f"<div class='pager'>{''.join(pager)}</div>"


def supervisors_page(client: Client, cfg: View, q: dict[str, str]) -> Page:
    sups = list_supervisors(client)
    now = client.server_time_ms()
    page = Page("Supervisors", "supervisors").add("<h1>Supervisors</h1>")
    if not sups:
        page.add(
            "<p class='muted'>No live supervisors (none refreshed its status record recently).</p>"
        )
    for s in sups:
        facts = [
            ("app", e(s.app)),
            ("mode", e(s.mode)),
            ("cron leader", "yes" if s.leader else "no"),
            ("procs", str(s.procs)),
            ("queues", e(", ".join(s.queues))),
            ("rss", e(render.fmt_bytes(s.rss))),
            ("up", e(render.fmt_duration(now - s.started_at))),
            ("seen", e(render.fmt_relative(s.updated_at, now))),
            ("version", e(s.version or "-")),
        ]
        kids = "".join(
            f"<tr><td class='num'>{c.slot}</td><td class='num'>{c.pid}</td>"
            f"<td>{e(c.state)}</td><td class='mono'>"
            + (
                f"<a href='{href(cfg.base, '/run', id=c.run_id)}'>{e(c.run_id)}</a>"
                if c.run_id
                else "-"
            )
            + f"</td><td>{e(c.workflow or '-')}</td>"
            f"<td class='num'>{e(render.fmt_duration(s.updated_at - c.run_started_at) if c.run_started_at else '-')}</td>"  # noqa: E501
            f"<td class='num'>{e(render.fmt_bytes(c.rss))}</td>"
            f"<td class='num'>{c.cpu_percent:.1f}%</td><td class='num'>{c.runs_done}</td>"
            f"<td class='num'>{c.restarts}</td></tr>"
            for c in s.children
        )
        page.add(
            f"<section class='sup'><h2 class='mono'>{e(s.id)}</h2><div class='facts'>",
            "".join(f"<span><span class='muted'>{k}</span> {v}</span>" for k, v in facts),
            "</div><table class='children'><thead><tr><th>slot</th><th>pid</th><th>state</th>"
            "<th>run</th><th>workflow</th><th>run for</th><th>rss</th><th>cpu</th>"
            "<th>runs done</th><th>restarts</th></tr></thead>"
            f"<tbody>{kids}</tbody></table></section>",
        )
    page.query = q
    return page
