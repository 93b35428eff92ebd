"""The dashboard's document: the page being built, the frame around it, escaping and links.

:class:`Page` collects one response's HTML; :func:`frame` wraps it in the document
(head, navigation, footer with the auto-refresh control); :func:`login_page` and
:func:`error_page` are the pages that need no Redis. The pages reading Redis are in
``pages.py`` (listings) and ``runpage.py`` (one run).

Invariants: every link and form action is built from ``View.base`` (the mount
path, WSGI ``SCRIPT_NAME``), so the pages stay under the prefix they are mounted
at; everything that comes from Redis or the request is escaped with :func:`e`
(``html.escape``): run ids and names may hold quotes, braces, ``<script>``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import msgspec

from .styles import CSS, REFRESH_JS

__all__ = [
    "MAX_PAYLOAD_SHOWN",
    "Page",
    "View",
    "badge",
    "e",
    "error_page",
    "frame",
    "href",
    "login_page",
    "page_links",
    "pretty",
]

MAX_PAYLOAD_SHOWN = 100_000


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


def pretty(value: Any, limit: int = MAX_PAYLOAD_SHOWN) -> str:
    try:
        text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError, RecursionError):
        text = "<not encodable as JSON>"
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text):,} characters in all)"
    return text


def badge(status: str) -> str:
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


def page_links(base: str, path: str, page_no: int, size: int, total: int, what: str) -> str:
    """Previous / next links over ``total`` items (``what``) shown ``size`` a page."""
    pager = [f"<span>page {page_no} of {total:,} {what}</span>"]
    if page_no > 1:
        pager.insert(0, f"<a href='{href(base, path, page=page_no - 1)}'>← previous</a>")
    if page_no * size < total:
        pager.append(f"<a href='{href(base, path, page=page_no + 1)}'>next →</a>")
    return f"<div class='pager'>{''.join(pager)}</div>"
