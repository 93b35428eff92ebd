"""The dashboard's pages: server-rendered HTML built from the client's views.

Each page function takes the client, the request's :class:`View` (the
dashboard's settings and the path it is mounted at) and the request's query, and
returns a :class:`Page`. This module holds the listings (runs, workflows, queues,
supervisors); the run page is ``runpage.py``, the document around every page
(:func:`frame`, :func:`e`, :func:`href`, the sign-in and error pages) is
``markup.py``; their public names are importable from here too. The WSGI
application (``webapp.py``) routes requests, checks them and sends what these build.

Invariants: every link and form action is built from ``View.base`` (the mount
path, WSGI ``SCRIPT_NAME``), so the pages stay under the prefix they are mounted
at; everything that comes from Redis or the request is escaped with :func:`e`
(``html.escape``): run ids and names may hold quotes, braces, ``<script>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from redflow_mp import admin, queries
from redflow_mp.client import Client
from redflow_mp.codec import RunState, RunStatus, text, whole_number
from redflow_mp.depths import RUNNING_PAGE

from ..status import list_supervisors
from . import render
from .markup import (
    MAX_PAYLOAD_SHOWN,
    Page,
    View,
    badge,
    e,
    error_page,
    frame,
    href,
    login_page,
    page_links,
)
from .runpage import MAX_STEP_OUTPUT_SHOWN, MAX_STEPS_SHOWN, NOTICES, run_page

__all__ = [
    "MAX_PAYLOAD_SHOWN",
    "MAX_STEPS_SHOWN",
    "MAX_STEP_OUTPUT_SHOWN",
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

#: Past this many known queues the queues page scans their names a page at a time
#: (SSCAN) instead of reading and sorting them all at every load (one SMEMBERS of
#: 100,000 names held Redis 26-46 ms; of a million, a quarter of a second).
QUEUES_SORTED_LIMIT = 50_000
#: The last page number a listing accepts (a larger one is this one: offsets stay small).
MAX_PAGE = 1_000_000
STATUSES = [s.value for s in RunStatus]


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
            payloads=False,  # the table shows none (listing.ROW_FIELDS)
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
            f"<td>{badge(r.status.value)}</td>"
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
        page.add(page_links(cfg.base, "/workflows", page_no, size, len(names), "workflows"))
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
        cursor = cursor if whole_number(cursor, 20) is not None else "0"
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
            page.add(page_links(cfg.base, "/queues", page_no, size, len(all_names), "queues"))
    memo = admin.remembered_queues(client)  # the pass over the running index goes on
    stats = admin.queue_stats(client, names, memo)
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
        page.add(_processing_note(memo.showing()))
    page.query = q
    return page


#: What the queues page says of its ``processing`` column when more runs are
#: running than one refresh reads (admin.running_per_queue).
_PROCESSING_NOTES = {
    admin.LAST_PASS: (
        "processing: as of the last whole pass over the running runs "
        f"({RUNNING_PAGE:,} read per refresh)"
    ),
    admin.SO_FAR: (
        "processing: counted so far, a lower bound "
        f"({RUNNING_PAGE:,} running runs read per refresh; exact once a pass is whole)"
    ),
}


def _processing_note(showing: str) -> str:
    note = _PROCESSING_NOTES.get(showing)
    return f"<p class='muted processing-note'>{e(note)}</p>" if note else ""


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
