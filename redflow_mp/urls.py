"""The Redis URL a client connects to: its default and the checks made before use.

Owns :func:`default_url` (``$REDFLOW_URL``, ``$REDIS_URL``, localhost) and
:func:`check_url`: a URL with no scheme, an unknown scheme, bytes that are not
UTF-8 or a password a URL parser cannot see is refused with a message that
never shows the password (``connection.mask_url``). Pure: no sockets.
"""

from __future__ import annotations

import os
import re
from typing import cast

from .connection import mask_url, misplaced_userinfo
from .options import is_text

__all__ = ["check_url", "default_url", "mask_secrets"]

# Every scheme we connect to (redis, rediss, redis+sentinel, rediss+sentinel, unix),
# and every query option whose name ends in "password" (ssl_password too), as
# connection.mask_url masks them. The password runs to the last "@" of the URL (a
# password may hold "@" or "/").
# (The head only: _mask_url_passwords finds the "@" without a regex's backtracking.)
_URL_PASSWORD_HEAD = re.compile(r"(?:rediss?|rediss?\+sentinel|unix)://[^:/@\s]*:")
_NON_SPACE = re.compile(r"\S*")
# User info without ":" (`redis://secret@host`, the colon forgotten), to its last "@".
_URL_USER_ONLY = re.compile(r"((?:rediss?|rediss?\+sentinel)://)([^:/\s]+)(@)")
_QUERY_PASSWORD = re.compile(r"([?&][a-z_]*password=)([^&\s]+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with the password of any Redis URL inside it replaced by ``***``:
    for log lines (the supervisor's) and for the error a run stores
    (``execution.error_info``), which user code writes and the CLI, the dashboard
    and ``result()`` show to whoever may read runs."""
    if "://" not in text and "password=" not in text.lower():
        return text  # the usual error: no regex run
    text = _URL_USER_ONLY.sub(r"\1***\3", _mask_url_passwords(text))
    return _QUERY_PASSWORD.sub(r"\1***", text)


def _mask_url_passwords(text: str) -> str:
    """Each URL password (from a head's ":" to the last "@" of the non-space run
    after it, at least one character) as ``***``: the substitution of
    ``head(\\S+)@``, in time linear in ``text``. The regex scanned to the run's end
    from every head and backtracked: ``redis://x:`` repeated without an "@" took
    the square of the length (50,000 characters: seconds)."""
    parts: list[str] = []
    done = start = 0
    while (head := _URL_PASSWORD_HEAD.search(text, start)) is not None:
        end = head.end()
        run_end = cast(re.Match[str], _NON_SPACE.match(text, end)).end()
        at = text.rfind("@", end + 1, run_end)
        if at < 0:  # nor after any later head of this run (each ends further on)
            start = max(run_end, end)
            continue
        parts += (text[done:end], "***@")
        done = start = at + 1
    return "".join(parts) + text[done:] if parts else text


def default_url() -> str:
    """The URL a client given none connects to: ``$REDFLOW_URL``, then ``$REDIS_URL``,
    else ``redis://localhost:6379/0`` (the order the CLI and the supervisor use)."""
    return (
        os.environ.get("REDFLOW_URL") or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    )


def check_url(url: object) -> str:
    """``url`` (default :func:`default_url`) if its scheme is one we connect to."""
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        raise TypeError(f"url must be a str (a redis:// URL) or None, not {type(url).__name__}")
    if not url.strip():
        raise ValueError("url must be a non-empty redis:// or rediss:// URL")
    if "://" not in url:  # not echoed: it may be the password itself, or hold it
        raise ValueError(
            f"the Redis URL {mask_url(url)} has no scheme: write redis://[:PASSWORD@]HOST:PORT/DB "
            "(or rediss://, unix://, redis+sentinel://, rediss+sentinel://)"
        )
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    if not is_text(url):  # a password of non-UTF-8 bytes: a traceback at AUTH
        raise ValueError(
            f"the Redis URL {mask_url(url)} is not valid Unicode text (bytes that were not "
            "UTF-8); percent-encode such bytes in a password"
        )
    if misplaced_userinfo(url) is not None:  # redis-py's error would quote the password
        raise ValueError(_userinfo_problem(url))
    return url


def _userinfo_problem(url: str) -> str:
    """Why ``url``, whose user info a URL parser cannot see, is refused; the URL is
    shown with everything before its last ``@`` hidden."""
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    userinfo, shown = rest[:at], f"{scheme}://***@{rest[at + 1 :]}"
    if any(c in userinfo for c in "/?#"):
        return (
            f"the password in the Redis URL {mask_url(url)} holds '/', '?' or '#': "
            "percent-encode them (%2F, %3F, %23)"
        )
    if "[" in userinfo or "]" in userinfo:
        return (
            f"the password in the Redis URL {shown} holds '[' or ']': percent-encode "
            "them (%5B, %5D)"
        )
    return (
        f"the Redis URL {shown} does not parse: its host is not a valid IPv6 address "
        "in brackets (redis://[::1]:6379/0) or holds a stray '[' or ']'"
    )
