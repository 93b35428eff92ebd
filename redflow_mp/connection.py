"""Where a client's connections go: one server, a Redis Cluster, or a Sentinel group.

Every key of a prefix carries the hash tag ``{<prefix>}`` (``keys.py``), so on a
Redis Cluster all of an app's keys, scripts and ``run-done`` channels live in
one slot, served by one master at a time. A cluster client therefore does not
spread commands over nodes: it **pins** every connection (the redis-py client's
pool, the per-thread hot-path connections, the pub/sub connection) to the
master that serves the prefix's slot. Pipelines, ``MULTI``, locks, ``BLPOP``,
``EVALSHA``/``FCALL`` and pub/sub then work exactly as on one server, each
command still goes to the node its declared keys route to, and ``NOSCRIPT``
reloads the script on that node.

- Which node: found with redis-py's :class:`~redis.cluster.RedisCluster` (its
  ``CLUSTER SLOTS`` view, ``get_node_from_key``) at the first connection and
  whenever the pinned node cannot be reached. A ``MOVED`` reply (failover,
  resharding) re-pins to the node it names: the command was not run, so it is
  resent there, and every other connection of the process reconnects before its
  next command (a generation counter). ``CLUSTERDOWN``/``TRYAGAIN``/``ASK``
  (a slot being moved or a failover in progress: nothing was run) are retried
  with backoff for up to :data:`CLUSTER_PATIENCE` seconds.
- Whether it is a cluster: ``INFO cluster`` on the first connection
  (``cluster_enabled:1``), unless ``cluster=True`` says so (then a server not in
  cluster mode is an error).
- Sentinel: ``redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel://`` for TLS to the data servers). redis-py's
  :class:`~redis.sentinel.Sentinel` finds the master at every (re)connection,
  and a connection to a master demoted to replica fails (``READONLY``) and
  reconnects to the new one. The user and password authenticate to the data
  servers; sentinels are asked without (Redis's default for sentinels): a
  sentinel that requires a password is refused at once, as is a service none knows.
  The URL is parsed here; the Sentinel clients are ``sentinels.py``'s.

Fork safety is redis-py's (its pools check the pid) plus the transports' own
per-pid connections; the routing state is plain data and is valid in a child.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis import exceptions as rexc
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from .closing import connected as _connected
from .errors import RedflowError, RedisClusterDownError

__all__ = [
    "CLUSTER_PATIENCE",
    "REDIRECT_ERRORS",
    "Router",
    "Target",
    "check_url_options",
    "mask_url",
    "misplaced_userinfo",
    "parse_target",
    "routed_connection_class",
    "tls_hint",
    "with_redirects",
]

#: Seconds a command keeps being retried while a cluster answers CLUSTERDOWN,
#: TRYAGAIN or ASK (a failover or a slot migration in progress). Longer than a
#: failover takes with the default cluster-node-timeout (15 s) would be better,
#: but a caller blocked this long should rather see the error and retry itself.
CLUSTER_PATIENCE = 10.0

#: Replies that mean "not run here, try again" on a cluster.
REDIRECT_ERRORS = (rexc.AskError, rexc.ClusterDownError, rexc.TryAgainError)
#: The error a script gets when it touches a key it did not declare whose slot is
#: being migrated and that is not (or no longer) on this node: the script stopped
#: there, at its first line (luafiles.SLOT_PROBE), before any write. Matched where
#: Redis puts it, not anywhere in the text (a script's own error naming it is not
#: retried): Redis 7 "Script attempted to access a non local key in a cluster
#: node script: ...", Redis 6.2 "Error running script (call to f_...):
#: @user_script:5: @user_script: 5: Lua script attempted to access ...", Valkey 9
#: "Attempted to access a non local key in a cluster node script: ...".
_NON_LOCAL = re.compile(
    r"(?:error running script \(call to [^)]*\): @user_script:\d+: (?:@user_script: \d+: )?)?"
    r"(?:lua )?(?:script )?attempted to access a non local key in a cluster node"
)
_PIPELINE_ERROR = "of pipeline caused error: "


def redirect(exc: rexc.ResponseError) -> tuple[str, int] | str | None:
    """What a cluster's error reply asks for: ``(host, port)`` for MOVED (the slot's
    master now), ``"retry"`` for "moving or failing over: try again" (CLUSTERDOWN,
    TRYAGAIN, ASK, a script stopped at a key being moved), None for any other
    error. redis-py >= 5.1 maps the codes to classes; 5.0 leaves them in the text."""
    if isinstance(exc, rexc.MovedError):
        return str(exc.host), int(exc.port)
    if isinstance(exc, REDIRECT_ERRORS):
        return "retry"
    text = str(exc)
    # A pipeline's error names its command first ("Command # 1 (HGETALL k) of
    # pipeline caused error: ASK 7726 h:p"; redis.asyncio 5.0 quotes args as a
    # tuple): on redis-py 5.0 a read during a slot move raised ASK to the caller.
    text = text.rpartition(_PIPELINE_ERROR)[2].removeprefix("('").removesuffix("',)")
    if text.startswith("MOVED "):
        host, _, port = text.split()[-1].rpartition(":")
        return (host, int(port)) if port.isdigit() else None
    if text.startswith(("ASK ", "TRYAGAIN", "CLUSTERDOWN")) or _NON_LOCAL.match(text.lower()):
        return "retry"
    return None


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

#: ``durability`` values: "none" acknowledges a write when the master has it;
#: "wait" when one replica has it too (WAIT 1); "waitaof" when the master and
#: one replica have it fsynced to their append-only files (WAITAOF 1 1, Redis >= 7.2).
DURABILITIES = ("none", "wait", "waitaof")
#: Commands whose writes a durable transport waits for: every run-state transition
#: is one script call.
DURABLE_COMMANDS = frozenset({"EVALSHA", "EVAL", "FCALL", b"EVALSHA", b"EVAL", b"FCALL"})
#: Default milliseconds WAIT / WAITAOF wait for the replica.
DEFAULT_WAIT_MS = 1000
#: The longest ``durability_wait_ms``: a minute. A write waits that long, then
#: fails with ``NotReplicatedError`` (a step write rides such errors out for
#: max(10 s, 3 leases) only; a 10**400 ms wait overflowed the read's timeout).
MAX_WAIT_MS = 60_000


class NotReplicatedError(RedflowError, rexc.TimeoutError):
    """A write was done on the master but no replica confirmed it in time
    (``durability = "wait"``): whether it survives a failover is unknown, as after
    a network timeout (it is one of the network errors: retried where those are)."""


def check_durability(durability: object, wait_ms: object) -> tuple[str, int]:
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}")
    if not isinstance(wait_ms, int) or isinstance(wait_ms, bool) or not 1 <= wait_ms <= MAX_WAIT_MS:
        shown = repr(wait_ms) if not isinstance(wait_ms, int) or wait_ms < 10**12 else "more"
        raise ValueError(
            f"durability_wait_ms must be an int of milliseconds from 1 to {MAX_WAIT_MS}, "
            f"not {shown}"
        )
    return str(durability), wait_ms


def wait_command(durability: str, wait_ms: int) -> tuple[Any, ...] | None:
    """The command sent after each durable write (None for "none")."""
    if durability == "wait":
        return ("WAIT", 1, wait_ms)
    if durability == "waitaof":
        return ("WAITAOF", 1, 1, wait_ms)
    return None


def check_replicated(reply: Any, durability: str, wait_ms: int, where: str) -> None:
    """Raise :class:`NotReplicatedError` unless the WAIT/WAITAOF reply confirms."""
    if durability == "wait":
        if int(reply) >= 1:
            return
        raise NotReplicatedError(
            f"no replica of {where} confirmed the write within {wait_ms} ms (durability = "
            '"wait"): it may be lost if the master fails now'
        )
    local, replicas = (int(x) for x in reply)
    if local >= 1 and replicas >= 1:
        return
    raise NotReplicatedError(
        f"the write was fsynced by {local} master and {replicas} replicas of {where} within "
        f'{wait_ms} ms (durability = "waitaof" needs 1 and 1: appendonly yes on both)'
    )


_T = TypeVar("_T")


def out_of_patience(router: Router, exc: rexc.ResponseError) -> RedisClusterDownError:
    """The error once a cluster answered "not run here, try again" (or moved the
    slot again and again) for all of :data:`CLUSTER_PATIENCE`: transient, like a
    connection lost. Raised as the redirect itself (a ``ResponseError``), it was
    taken as the caller's own failure: a step write failed its run on its one
    attempt, a worker's claim ended the worker."""
    return RedisClusterDownError(
        f"the Redis Cluster at {router.describe()} kept answering {str(exc).split(' ', 1)[0]} "
        f"for {CLUSTER_PATIENCE:g} s (a failover, a master out of reach, a slot being "
        f"moved); the command was not run ({exc})"
    )


def url_fields(parse: Callable[[str], Any], url: str) -> dict[str, Any]:
    """redis-py's connection fields of ``url`` (``parse``: its ``parse_url``); its
    error for a bad port ("Port out of range 0-65535", no URL, no setting named)
    is a ValueError naming the URL, password masked."""
    try:
        return dict(parse(url))
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {mask_url(url)}: {exc}") from None


def check_url_options(base: Any, url_kwargs: dict[str, Any], url: str) -> None:
    """Refuse a query option the connection does not take (a misspelt one, or a TLS
    option on ``redis://``) now, in a clear error, instead of at the first command
    in redis-py's ``TypeError``. Building a connection object opens no socket.
    Refuse a database path that is no number too: redis-py ignores it (db 0)."""
    parts = urlsplit(url)
    db = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss") and db and not db.isdigit():
        raise ValueError(
            f"the path of the Redis URL {mask_url(url)} names the database, a number "
            f"(redis://host:6379/0), not {db!r}"
        )
    try:
        base(**url_kwargs)
    except TypeError as exc:
        found = re.search(r"argument '([^']+)'", str(exc))
        name = found.group(1) if found else str(exc)
        hint = " (TLS options need rediss://)" if name.startswith("ssl") else ""
        raise ValueError(
            f"unknown option {name!r} in the Redis URL {mask_url(url)}{hint}"
        ) from None


def misplaced_userinfo(url: str) -> int | None:
    """Where the user info of ``url`` ends (the index of its last ``@``) when a URL
    parser cannot see it, else None.

    A password holding ``/``, ``?`` or ``#`` that is not percent-encoded
    (``redis://:se/cret@host``) ends the parser's host part at that character, so
    the password lands in the port, path, query or fragment: it would be printed by
    any masking that trusts the parser, and redis-py's own error quotes part of it
    ("Port could not be cast to integer value as 'se'"). A ``@`` inside a
    ``?password=`` value, or in a ``unix://`` socket path, is not user info.
    """
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


def mask_url(url: str) -> str:
    """``url`` with any password (user info, ``?password=``, or any query option whose
    name ends in ``password``: ``ssl_password``, a client key's passphrase) replaced by ``***``
    (also for ``redis+sentinel://`` URLs with several hosts, and for a password whose
    ``/``, ``?`` or ``#`` is not percent-encoded: :func:`misplaced_userinfo`).
    Text without ``://`` is no URL we can read the parts of (the bare password
    where a URL should be, ``redis//:pw@host`` with the colon forgotten): only its
    length is shown."""
    if "://" not in url:
        return f"<not a URL, {len(url)} characters>"
    end = misplaced_userinfo(url)
    if end is not None:
        url = url.partition("://")[0] + "://***" + url[end:]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    elif at:  # no ':': a password whose ':' was forgotten (`redis://secret@host`)
        netloc = f"***@{hosts}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            key, sep, _value = piece.partition("=")
            pairs.append(f"{key}=***" if sep and key.lower().endswith("password") else piece)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def tls_hint(url: str, exc: BaseException) -> str:
    """A hint to append to a failure to connect to ``url`` when its cause may be TLS
    on one side only, else "". A ``rediss://`` URL to a server without TLS times
    out (the server takes the TLS hello for the start of an inline command and
    waits for its end), which otherwise reads as a network problem."""
    if not isinstance(exc, rexc.ConnectionError | rexc.TimeoutError):
        return ""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("rediss"):
        return (
            " (this rediss:// URL speaks TLS: a server without TLS on that port never "
            "answers the handshake; use redis:// for it)"
        )
    return ""


def auth_hint(url: str, exc: BaseException) -> str:
    """A hint to append to a refusal of the credentials (``AuthenticationError``)
    when ``url`` gives no password, else "". The server's own words (``HELLO must
    be called with the client already authenticated``, ``invalid username-password
    pair``) read as a wrong password, though none was sent: it was forgotten, or
    its ``:`` was (``redis://secret@host`` names a user ``secret``)."""
    if not isinstance(exc, rexc.AuthenticationError) or "://" not in url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if misplaced_userinfo(url) is not None or parts.password is not None:
        return ""
    if any(p.partition("=")[0].lower() == "password" for p in parts.query.split("&")):
        return ""
    where = "a user name but no password" if parts.username else "no password"
    return (
        f" (the URL gives {where}: put it in the URL's user info after a ':', with no "
        "user name before it for requirepass, and give the URL as REDFLOW_URL, which "
        "ps does not show)"
    )


@dataclass(frozen=True)
class Target:
    """What a URL (and the ``cluster`` / ``sentinel_master`` settings) points at."""

    kind: str  # "server" (a server or a cluster node: detected) or "sentinel"
    url: str
    cluster: bool = False  # True: a cluster, no detection
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    #: A cluster URL naming several nodes (``redis://n1:7000,n2:7000/0``): every one
    #: of them, asked in turn until one answers (``url`` then names the first alone).
    seeds: tuple[tuple[str, int], ...] = ()


def _sentinel_netloc(netloc: str, url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """The user, password and sentinel addresses of a ``redis+sentinel://`` netloc."""
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379"
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ValueError(f"bad sentinel address {item!r} in {mask_url(url)}")
        sentinels.append((host, int(port)))
    return username, password, sentinels


def parse_target(url: str, *, cluster: bool = False, sentinel_master: str | None = None) -> Target:
    """Parse ``url``; a ``redis+sentinel://`` URL without a service name takes
    ``sentinel_master``. Raises ``ValueError`` naming what is wrong (password masked)."""
    if not isinstance(cluster, bool):
        raise TypeError("cluster must be a bool")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in SENTINEL_SCHEMES:
        if sentinel_master is not None:
            raise ValueError(
                f"sentinel_master is set but {mask_url(url)} is not a redis+sentinel:// URL"
            )
        if cluster and scheme == "unix":
            raise ValueError("cluster = true needs a redis:// or rediss:// URL, not unix://")
        # a comma in the hosts, not in a password (a legal userinfo character)
        if scheme in ("redis", "rediss") and "," in urlsplit(url).netloc.rpartition("@")[2]:
            return _cluster_seeds(url)
        return Target("server", url, cluster=cluster)
    if cluster:
        raise ValueError("cluster = true and a redis+sentinel:// URL exclude each other")
    parts = urlsplit(url)
    username, password, sentinels = _sentinel_netloc(parts.netloc, url)
    path = [p for p in parts.path.split("/") if p]
    service = unquote(path[0]) if path else None
    db = 0
    if len(path) > 1:
        if not path[1].isdigit() or len(path) > 2:
            raise ValueError(f"bad database in {mask_url(url)}: expected /service_name[/db]")
        db = int(path[1])
    if service is None:
        service = sentinel_master
    elif sentinel_master is not None and sentinel_master != service:
        raise ValueError(
            f"{mask_url(url)} names the service {service!r} but sentinel_master is "
            f"{sentinel_master!r}"
        )
    if not service:
        raise ValueError(
            f"{mask_url(url)} names no Sentinel service: add /service_name to the URL "
            "or set sentinel_master"
        )
    return Target(
        "sentinel",
        url,
        sentinels=tuple(sentinels),
        service=service,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss+sentinel",
    )


def _cluster_seeds(url: str) -> Target:
    """A ``redis://[user:pass@]n1:port,n2:port[/db]`` URL: a cluster reached through
    any node that answers (a single node in the URL, down at start-up, left the
    client unable to start; the comma form failed in redis-py's "Port could not be
    cast to integer")."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "6379"
        if not host.strip("[]") or not port.isdigit():
            raise ValueError(f"bad cluster node address {item!r} in {mask_url(url)}")
        seeds.append((host.strip("[]"), int(port)))
    first_host, first_port = seeds[0]
    shown = f"[{first_host}]" if ":" in first_host else first_host
    netloc = f"{userinfo}{at}{shown}:{first_port}"
    first = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return Target("server", first, cluster=True, seeds=tuple(seeds))


class Router:
    """Where the slot of ``route_key`` is served now, shared by one transport's
    connections (thread-safe). ``generation`` grows at every re-pin: a
    connection opened under an older one reconnects before its next command."""

    def __init__(
        self,
        url: str,
        route_key: str,
        *,
        forced: bool,
        options: dict[str, Any],
        seeds: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.url = url
        self.seeds = seeds
        self.route_key = route_key
        self.slot = key_slot(route_key.encode())
        self.forced = forced
        self.options = options
        self.cluster: bool | None = True if forced else None
        self.address: tuple[str, int] | None = None
        self.generation = 0
        self._nodes: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        where = mask_url(self.url)
        if self.cluster:
            node = f"{self.address[0]}:{self.address[1]}" if self.address else "?"
            return f"{where} (cluster; slot {self.slot} of {self.route_key} on {node})"
        return where

    def discover(self) -> tuple[str, int]:
        """Ask the cluster (the URL's node, then every node known) which master
        serves the slot; re-pin there."""
        make: Callable[..., ClusterNode] = ClusterNode  # untyped in redis-py
        opts = {k: v for k, v in self.options.items() if k != "health_check_interval"}
        last: Exception | None = None
        # every node seen before, then the URL's, one at a time
        for seed in [*([make(h, p)] for h, p in self.candidates()), None]:
            try:
                rc = RedisCluster.from_url(self.url, startup_nodes=seed, **opts)
                node_of: Callable[[str], Any] = rc.get_node_from_key  # untyped in redis-py
                all_nodes: Callable[[], list[Any]] = rc.get_nodes
            except (rexc.RedisClusterException, rexc.ConnectionError, rexc.TimeoutError) as exc:
                last = exc
                continue
            try:
                node = node_of(self.route_key)
                found = (str(node.host), int(node.port))
                nodes = [(str(n.host), int(n.port)) for n in all_nodes()]
            finally:
                rc.close()
            return self.pinned(found, nodes)
        raise self.failed(last)

    def failed(self, exc: Exception | None) -> Exception:
        """The error when no node told where the slot is: a server not in cluster
        mode is a :class:`RedflowError` (a setting to fix), anything else a
        connection error (passes: retried where network errors are)."""
        if "not enabled" in str(exc):  # "Cluster mode is not enabled on this node"
            return RedflowError(f"Redis at {mask_url(self.url)} is not usable as a cluster: {exc}")
        return rexc.ConnectionError(
            f"no node of the cluster at {mask_url(self.url)} says where slot {self.slot} is: {exc}"
        )

    def known_nodes(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._nodes)

    def candidates(self) -> list[tuple[str, int]]:
        """The nodes to ask where the slot is: every node seen, then the URL's."""
        known = self.known_nodes()
        return known + [seed for seed in self.seeds if seed not in known]

    def pinned(self, found: tuple[str, int], nodes: list[tuple[str, int]]) -> tuple[str, int]:
        """Record a discovery: the slot's master and every node seen."""
        with self._lock:
            self._nodes = nodes
            if found != self.address:
                self.address = found
                self.generation += 1
            return found

    def moved(self, host: str, port: int) -> None:
        """A MOVED reply named the slot's new master."""
        with self._lock:
            if (host, port) != self.address:
                self.address = (host, port)
                self.generation += 1


def routed_connection_class(base: type[Any], router: Router) -> type[Any]:
    """``base`` (redis-py's TCP or TLS connection class) made to connect to the
    router's node, detect a cluster on its first connection, and reconnect when
    the router re-pinned. redis-py 6+ connects through ``connect_check_health``,
    5.x through ``connect``: whichever the class has is the one wrapped."""
    method = "connect_check_health" if hasattr(base, "connect_check_health") else "connect"

    def routed_connect(self: Any, *args: Any, **kwargs: Any) -> None:
        if _connected(self):
            return
        connect = getattr(super(Routed, self), method)
        if router.cluster is None:  # first connection of this transport: detect
            connect(*args, **kwargs)
            try:
                self.send_command("INFO", "cluster")
                info = self.read_response()
            except rexc.ResponseError:  # NOPERM: a user without INFO; say cluster = true
                info = b""
            text = info.decode() if isinstance(info, bytes) else str(info)
            router.cluster = "cluster_enabled:1" in text
            if not router.cluster:
                return
            self.disconnect()
        if not router.cluster:
            connect(*args, **kwargs)
            return
        if router.address is None:
            router.discover()
        # recorded first: the handshake's own commands go through send_packed_command
        self._route_generation = router.generation
        assert router.address is not None
        self.host, self.port = router.address
        try:
            connect(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError):
            # the pinned master is gone: ask the cluster for the slot's master now
            router.discover()
            self._route_generation = router.generation
            self.host, self.port = router.address
            connect(*args, **kwargs)

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        if router.cluster and self._route_generation != router.generation:
            self.disconnect()
        super(Routed, self).send_packed_command(command, check_health)

    name = f"Routed{base.__name__}"
    Routed: type[Any] = type(
        name,
        (base,),
        {
            "_route_generation": -1,
            method: routed_connect,
            "send_packed_command": send_packed_command,
            "__qualname__": name,
        },
    )
    return Routed


def with_redirects(
    router: Router | None, send: Callable[[], _T], on_moved: Callable[[], None]
) -> _T:
    """``send()``, following MOVED (re-pin, then resend) and retrying CLUSTERDOWN /
    TRYAGAIN / ASK with backoff for up to :data:`CLUSTER_PATIENCE` seconds, then
    raising :class:`~redflow_mp.errors.RedisClusterDownError` (transient). A
    redirected command was not run, so resending it is safe for any command."""
    if router is None or not router.cluster:
        return send()
    deadline = time.monotonic() + CLUSTER_PATIENCE
    delay = 0.02
    while True:
        try:
            return send()
        except rexc.ResponseError as exc:
            kind = redirect(exc)
            if kind is None:
                raise
            if time.monotonic() >= deadline:
                raise out_of_patience(router, exc) from exc
            if kind == "retry":
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            else:
                router.moved(*kind)
                on_moved()


class RoutedRedis(redis.Redis):
    """A redis-py client whose commands follow MOVED and wait out CLUSTERDOWN /
    TRYAGAIN (see :func:`with_redirects`); pipelines see those errors as they are
    (the next command re-pins)."""

    router: Router | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        send: Callable[..., Any] = super().execute_command  # untyped in redis-py
        return with_redirects(self.router, lambda: send(*args, **options), lambda: None)
