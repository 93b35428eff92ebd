"""What every ``redflow`` command shares: where it connects, how it reports.

Owns the target resolution (flags, then ``REDFLOW_URL``/``REDFLOW_PREFIX``, then
``REDIS_URL``, then the defaults), the connection (a :class:`redflow_mp.Client`
on its own registry), the :class:`Session` a command gets, the exit statuses and
the two exceptions commands raise, the "where did it look" lines a command that
finds nothing prints, and the error report of :func:`report_error`.

Also owns the dashboard's sign-in state (used by ``webapp.py``): the sessions
(:class:`SignIns`, in this process's memory) and the failed token checks
(:class:`Throttle`, per client address and in all, by :class:`LoginLimits`).

Invariant: nothing printed holds a password: URLs are shown masked
(:func:`redflow_mp.transport.mask_url`) and error text goes through :func:`scrub`.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

from redflow_mp import queries
from redflow_mp.client import Client, create_client
from redflow_mp.codec import RunState
from redflow_mp.connection import auth_hint, tls_hint
from redflow_mp.registry import Registry
from redflow_mp.shardmeta import recorded_shards, shards_problem
from redflow_mp.shards import shard_index_of_run
from redflow_mp.transport import check_url, mask_url

from ..embedded import EmbeddedRedis
from ..logs import mask_secrets
from . import render

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "SESSION_IDLE",
    "SESSION_MAX",
    "TOKEN_ENV",
    "Failure",
    "LoginLimits",
    "Session",
    "SignIns",
    "Throttle",
    "UsageError",
    "client_key",
    "connect",
    "nothing_found",
    "open_target",
    "other_prefixes",
    "print_err",
    "report_error",
    "require_run",
    "resolve_target",
    "run_id_refusal",
    "scrub",
    "where_looked",
]

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "redflow"
TOKEN_ENV = "RF_DASHBOARD_TOKEN"

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3


def run_id_refusal(run_id: str) -> str | None:
    """Why no run can have the id ``run_id`` (a shard suffix that is not one:
    ``<ulid>~x``, ``~01``, ``~`` alone), else None. The library raises
    ``ValueError`` for such an id; the CLI refuses it as a usage error and the
    dashboard with a 400, not a traceback (a 500 logged at every request)."""
    try:
        shard_index_of_run(run_id, 1)
    except ValueError as exc:
        return str(exc)
    return None


class UsageError(Exception):
    """A bad combination of arguments (exit status 2)."""


class Failure(Exception):
    """An operation that could not be done (exit status 1); the message says why."""


def print_err(message: str) -> None:
    """Print ``redflow: message`` on standard error, with the password of any Redis
    URL in it masked (also one given for another option than ``--url``), each line
    cleaned for the terminal (:func:`render.clean`): an error may quote what Redis
    holds, such as the status of a run a neighbour wrote."""
    lines = mask_secrets(message).split("\n")
    print(
        "redflow: " + "\n".join(render.clean(line) for line in lines), file=sys.stderr, flush=True
    )


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
        for key, values in parse_qs(parts.query).items():
            if key.lower().endswith("password"):  # password, ssl_password (a key's passphrase)
                found += values
    except ValueError:
        return []
    return [s for s in found if len(s) >= 3]


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``."""
    text = text.replace(url, mask_url(url))
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def connection_options(ns: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``cluster`` and ``sentinel_master`` for :func:`connect`: flags, then
    REDFLOW_CLUSTER / REDFLOW_SENTINEL_MASTER."""
    environ = os.environ if env is None else env
    cluster = bool(getattr(ns, "cluster", False)) or _env_flag(environ, "REDFLOW_CLUSTER")
    master = getattr(ns, "sentinel_master", None) or environ.get("REDFLOW_SENTINEL_MASTER")
    return {"cluster": cluster, "sentinel_master": master or None, "shards": _shards(ns, environ)}


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A yes/no environment variable, as the supervisor's settings read one: a value
    that is neither (``maybe``, a typo) is an error, not a silent no."""
    raw = environ.get(name, "")
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    shown = raw if len(raw) <= 40 else raw[:40] + f"... ({len(raw)} characters)"
    raise UsageError(f"${name} must be true or false (1/0, yes/no, on/off), not {shown!r}")


def _shards(ns: argparse.Namespace, environ: Mapping[str, str]) -> int | None:
    raw = getattr(ns, "shards", None)
    if raw is None:
        raw = environ.get("REDFLOW_SHARDS") or None
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--shards must be a whole number >= 1, not {raw!r}") from None
    if value < 1:
        raise UsageError(f"--shards must be a whole number >= 1, not {raw!r}")
    return value


def connect(
    url: str,
    prefix: str,
    *,
    cluster: bool = False,
    sentinel_master: str | None = None,
    shards: int | None = None,
    check: bool = True,
) -> Client:
    """A client for the ops commands: a single server, any node of a cluster, or a
    ``redis+sentinel://`` group. ``shards`` None takes the count the keyspace
    records; a count that differs from it is refused (naming ``redflow migrate
    --shards``) unless ``check`` is False (the migration itself)."""
    try:  # the library's check: a value without a scheme is not echoed (a password?)
        check_url(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    client = _client(url, prefix, cluster, sentinel_master, shards or 1)
    try:
        if shards is None:
            recorded = recorded_shards(client) or 1
            if recorded != 1:
                client.close()
                client = _client(url, prefix, cluster, sentinel_master, recorded)
        if check:
            problem = shards_problem(client, record=False)  # read-only: writes nothing
            if problem is not None:
                raise Failure(problem)
    except BaseException:
        client.close()
        raise
    return client


def _client(
    url: str, prefix: str, cluster: bool, sentinel_master: str | None, shards: int
) -> Client:
    # ``shards`` is passed only when it is not 1: the one-shard call is unchanged.
    extra: dict[str, Any] = {"shards": shards} if shards != 1 else {}
    try:
        return create_client(
            url,
            prefix=prefix,
            default=False,
            registry=Registry(),
            cluster=cluster,
            sentinel_master=sentinel_master,
            verify_shards=False,  # the session's own read-only check (shards_problem)
            **extra,
        )
    except ValueError as exc:
        text = scrub(str(exc), url)
        if text.startswith(("prefix ", "bad Redis URL ")):  # says what it is about already
            raise UsageError(text) from None
        raise UsageError(f"bad Redis URL {mask_url(url)}: {text}") from None


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
                prefix = prefix.split("~", 1)[0]  # shard k > 0 of a prefix: {<prefix>~<salt>}
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


def nothing_found(session: Session) -> None:
    """Print (on standard error) where a command that found nothing looked."""
    for line in where_looked(session):
        print_err(line)


def require_run(session: Session, run_id: str) -> RunState:
    """The run, or a :class:`Failure` saying where it was looked for."""
    state = queries.get_run_any(session.client, run_id)
    if state is None:
        raise Failure(
            f"run {render.clean(run_id)} not found (unknown id, or removed by retention); "
            + "; ".join(where_looked(session))
        )
    return state


# ------------------------------------------------------------------ target


def open_target(ns: argparse.Namespace) -> tuple[str, str, EmbeddedRedis | None]:
    """The URL and prefix to use, and the embedded Redis started or reused for them."""
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
    print_err(embedded.describe())
    return url, prefix, embedded


def report_error(exc: BaseException, url: str) -> int:
    """Print ``exc`` (passwords masked) and return its exit status."""
    text, shown = scrub(str(exc), url), mask_url(url)
    if isinstance(exc, UsageError):
        print_err(text)
        return EXIT_USAGE
    if isinstance(exc, redis.AuthenticationError):
        print_err(f"Redis at {shown} refused the credentials: {text}{auth_hint(url, exc)}")
    elif isinstance(exc, redis.exceptions.NoPermissionError):
        print_err(
            f"Redis at {shown} refused a command to this user: {text} "
            '(docs/operations.md, "Redis ACL", lists what a user needs)'
        )
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        print_err(f"cannot reach Redis at {shown}: {text}{tls_hint(url, exc)}")
    elif isinstance(exc, redis.RedisError):
        print_err(f"Redis error at {shown}: {text}")
    else:
        print_err(text)
    return EXIT_FAIL


# ------------------------------------------------------- dashboard sign-in

SESSION_IDLE = 2 * 3600.0  # seconds a session lasts unused
SESSION_MAX = 12 * 3600.0  # seconds a session lasts after sign-in, however used
MAX_SESSIONS = 1000  # past it, a sign-in ends the session unused the longest


@dataclass(frozen=True)
class LoginLimits:
    """How failed token checks are slowed. The ``*_free`` failures pass; from the
    last of them on, each failure makes its address (or every client) wait
    ``first_wait`` seconds, doubling, up to ``*_max_wait``. Counts start again
    after ``forget_after`` seconds without a failure, and a success clears its
    address's count."""

    client_free: int = 5
    global_free: int = 50
    first_wait: float = 1.0
    client_max_wait: float = 900.0
    global_max_wait: float = 60.0
    forget_after: float = 900.0
    max_clients: int = 10_000


class Throttle:
    """Failure counts per address and in all: ``[failures, last failure, wait until]``."""

    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._clients: dict[str, list[float]] = {}
        self._all = [0.0, 0.0, 0.0]

    def wait(self, client: str, now: float) -> float:
        """Seconds ``client`` must wait before its next token check (0: none)."""
        with self._lock:
            entry = self._clients.get(client)
            mine = entry[2] - now if entry else 0.0
            return max(0.0, mine, self._all[2] - now)

    def failed(self, client: str, now: float) -> None:
        lim = self.limits
        with self._lock:
            if client not in self._clients and len(self._clients) >= lim.max_clients:
                stale = [k for k, v in self._clients.items() if now - v[1] > lim.forget_after]
                for key in stale or [min(self._clients, key=lambda k: self._clients[k][1])]:
                    del self._clients[key]
            entry = self._clients.setdefault(client, [0.0, 0.0, 0.0])
            for item, free, cap in (
                (entry, lim.client_free, lim.client_max_wait),
                (self._all, lim.global_free, lim.global_max_wait),
            ):
                if now - item[1] > lim.forget_after:
                    item[0] = 0.0
                item[0] += 1
                item[1] = now
                over = int(item[0]) - free
                if over >= 0:
                    item[2] = now + min(cap, lim.first_wait * 2 ** min(over, 30))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


class SignIns:
    """Signed-in sessions: SHA-256 of the cookie's id -> ``[started, last used]``."""

    def __init__(self, idle: float, most: float) -> None:
        self.idle, self.most = idle, most
        self._lock = threading.Lock()
        self._live: dict[str, list[float]] = {}

    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode("latin-1", "replace")).hexdigest()

    def start(self, now: float) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            for key in [k for k, v in self._live.items() if not self._fresh(v, now)]:
                del self._live[key]
            if len(self._live) >= MAX_SESSIONS:
                del self._live[min(self._live, key=lambda k: self._live[k][1])]
            self._live[self._key(sid)] = [now, now]
        return sid

    def _fresh(self, times: list[float], now: float) -> bool:
        return now - times[0] < self.most and now - times[1] < self.idle

    def use(self, sid: str, now: float) -> bool:
        """Whether ``sid`` is a live session (and mark it used)."""
        key = self._key(sid)
        with self._lock:
            times = self._live.get(key)
            if times is None:
                return False
            if not self._fresh(times, now):
                del self._live[key]
                return False
            times[1] = now
            return True

    def end(self, sid: str) -> None:
        with self._lock:
            self._live.pop(self._key(sid), None)


def client_key(environ: Mapping[str, Any]) -> str:
    """Whose failures a request counts in: ``REMOTE_ADDR``, an IPv6 address by its /64."""
    addr = str(environ.get("REMOTE_ADDR", ""))
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
