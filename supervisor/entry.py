"""Entry points of the commands: hide secrets from ``ps`` first, then import and run.

``redflow-supervisor``, ``python -m redflow_supervisor``, ``redflow`` and
``python -m redflow_supervisor.ops`` (the dashboard included) all start here.
Before anything heavy is imported (redis-py, the library, the command's own
module) and long before any connection is tried, :func:`hide_secrets` rewrites
the process title with every password in a Redis URL (``user:password@``,
``?password=``) and the value of ``--token`` replaced by ``***``. setproctitle
writes over the memory that ``/proc/<pid>/cmdline`` reads, so ``ps`` and other
local users see the masked line for the whole life of the process, including
the seconds a supervisor may spend retrying an unreachable Redis.

``redflow-supervisor`` pauses the garbage collector for its start-up (the
arbiter freezes what start-up made and resumes it before forking: see
``Arbiter.run``).

``redflow-supervisor`` ends its process by :func:`leave`: the ``atexit``
handlers, then ``os._exit``, without the interpreter's teardown.

``redflow-supervisor`` also installs the start-up signal handlers of
:mod:`.early` first, after opening ``/dev/null`` on any of the descriptors 0,
1 and 2 that is closed (:func:`open_std_fds`).

Invariants: this module imports only the standard library, setproctitle and
:mod:`.early` (itself standard library only)
(which is why the commands are imported inside the functions below), and a
command line without secrets keeps its title untouched. Prefer
``REDFLOW_URL`` and ``RF_DASHBOARD_TOKEN``: the environment is not shown by
``ps`` at all.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

from . import early

__all__ = ["hide_secrets", "leave", "mask_args", "open_std_fds", "ops", "supervisor"]

MASK = "***"
# Options whose value is a URL (password masked) or a secret (masked whole). argparse
# accepts unambiguous prefixes (``--tok``), so those are masked too.
_URL_OPTIONS = ("--url",)
_SECRET_OPTIONS = ("--token",)


def _misplaced_userinfo(url: str) -> int | None:
    """Where a user info that ``urlsplit`` cannot see ends (a password with an
    unencoded ``/``, ``?`` or ``#``), as ``redflow_mp.connection.misplaced_userinfo``."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or scheme.lower() == "unix":
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return len(scheme) + 3 + at
    if "@" in parts.netloc:
        return None
    for piece in parts.query.split("&"):
        key, _sep, value = piece.partition("=")
        if key.lower().endswith("password") and "@" in value:
            return None
    return len(scheme) + 3 + at


def _mask_url(url: str) -> str:
    """``url`` with its password masked, as ``redflow_mp.transport.mask_url`` does
    (that one cannot be imported here: the library pulls in redis-py; a test keeps
    the two in agreement)."""
    if "://" not in url:  # no URL (the password itself, `redis//:pw@h`): length only
        return f"<not a URL, {len(url)} characters>"
    end = _misplaced_userinfo(url)
    if end is not None:
        url = url.partition("://")[0] + "://" + MASK + url[end:]
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:  # also redis+sentinel://user:pw@h1:p1,h2:p2
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hosts}"
    elif at:  # no ':': a password whose ':' was forgotten (`redis://secret@host`)
        netloc = f"{MASK}@{hosts}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            key, sep, _value = piece.partition("=")
            pairs.append(f"{key}={MASK}" if sep and key.lower().endswith("password") else piece)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _option(name: str, options: Sequence[str]) -> bool:
    return len(name) >= 3 and any(opt.startswith(name) for opt in options)


def mask_args(args: Sequence[str]) -> list[str]:
    """``args`` with URL passwords and ``--token`` values replaced by ``***``."""
    out: list[str] = []
    pending: str | None = None  # "url" / "secret": how to mask the next argument
    for arg in args:
        if pending is not None:
            out.append(MASK if pending == "secret" else _mask_url(arg))
            pending = None
            continue
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and _option(name, _SECRET_OPTIONS):
            out.append(f"{name}={MASK}" if eq else arg)
            pending = None if eq else "secret"
        elif arg.startswith("--") and _option(name, _URL_OPTIONS):
            out.append(f"{name}={_mask_url(value)}" if eq else arg)
            pending = None if eq else "url"
        elif "://" in arg:
            out.append(_mask_url(arg))  # a URL anywhere else (positional, --foo=URL)
        else:
            out.append(arg)
    return out


def hide_secrets(argv: Sequence[str] | None = None) -> bool:
    """Rewrite this process's title when its command line holds a secret.

    Returns True when the title was rewritten. Never raises: a missing
    setproctitle only leaves the title as it was.
    """
    original = list(sys.orig_argv if argv is None else argv)
    masked = mask_args(original)
    if masked == original:
        return False
    try:
        import setproctitle

        setproctitle.setproctitle(" ".join(masked))
    except Exception:  # pragma: no cover - setproctitle is a dependency
        return False
    return True


def open_std_fds() -> None:
    """Open ``/dev/null`` on each of the descriptors 0, 1 and 2 that is closed
    (a supervisor started with ``2>&-`` by a careless script or service manager).

    Otherwise the next descriptors opened (Redis connections, the signal pipe)
    take those numbers and the children inherit them: whatever user code writes
    to its stdout or stderr (a C library's warning, a subprocess's output) goes
    into a Redis connection, as commands. ``sys.stdout`` and friends that Python
    left at None for a closed descriptor get a file on it.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:  # the lowest free number: fd itself when all below are open
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, buffering=1 if mode == "w" else -1, closefd=False))  # noqa: SIM115


def supervisor() -> int:
    """``redflow-supervisor`` / ``python -m redflow_supervisor``."""
    open_std_fds()  # before anything opens a descriptor
    hide_secrets()
    early.install()  # TERM/INT/QUIT/HUP during start-up: supervisor/early.py
    # Start-up (the imports, the workflow modules, the settings, the first
    # connection) makes objects that live as long as the process: collecting
    # garbage among them only costs time (about 100 collections, some 10% of the
    # import time). The arbiter freezes them and turns the collector back on
    # before it forks.
    gc.disable()
    try:
        from .cli import main
    except early.StartupStop as stop:  # during these imports (seconds on a busy host)
        leave(early.report_stop(stop))
    leave(main())


def leave(code: int) -> NoReturn:
    """End the supervisor's process with status ``code`` once its work is done.

    The ``atexit`` handlers run (logging's flush among them, and any a workflow
    module registered), stdio is flushed, then ``os._exit``: the interpreter's
    own teardown (every module and object of the ~450 modules a supervisor
    imports freed one by one, nothing the OS would not release at once) took
    10-20 ms, most of the time from SIGTERM to exit of an idle supervisor
    (docs/benchmarks.md, "Start-up, round 2"). When a thread other than this one
    lives (a workflow module started one at import), the normal exit waits for
    it as before."""
    if threading.active_count() > 1:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
            if stream is not None:
                stream.flush()
    os._exit(code)


def ops() -> int:
    """``redflow`` / ``python -m redflow_supervisor.ops`` (and its dashboard)."""
    hide_secrets()
    from .ops.cli import main

    return main()
