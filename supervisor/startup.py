"""Start-up of a supervisor: the queues it serves, and its first connection.

:func:`connect` builds the arbiter's client and syncs the registry, riding out
a Redis that is still starting (up to 15 s), and turns refused credentials or a
Redis that never answers into a clear exit message (no traceback, no restart
loop); it refuses a keyspace written by an older redflow-mp (keyspace v1:
``redflow migrate`` converts it), and one whose hash tag another application
uses for keys of the same names (:func:`foreign_keys_problem`, every shard's
tag), and a ``shards`` setting other than the count the keyspace records
(:mod:`redflow_mp.shardmeta`: the message names ``redflow migrate --shards``); a bad URL or a
Sentinel service nobody monitors is an exit message too. :func:`resolve_queues`
refuses to start with nothing to serve; an ACL user without the prefix's
channels or BLPOP is refused (:func:`check_permissions`). A Redis that may evict keys
(``maxmemory-policy`` other than ``noeviction``) is warned about
(:func:`eviction_warning`).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import AuthorizationError, NoPermissionError, ResponseError

from redflow_mp.client import Client, create_client
from redflow_mp.connection import auth_hint, tls_hint
from redflow_mp.errors import (
    TRANSIENT_ERRORS,
    RedflowError,
    RedisBusyError,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
)
from redflow_mp.migrate import keyspace_problem
from redflow_mp.queries import shard_views
from redflow_mp.registry import Registry
from redflow_mp.replies import refused
from redflow_mp.shardmeta import shards_problem
from redflow_mp.sync import registration_digest, renew_registration
from redflow_mp.transport import mask_url

from .settings import Settings, client_keywords

__all__ = ["BadSettings", "connect", "end_of_startup", "resolve_queues", "resync"]

log = logging.getLogger("redflow_supervisor")

_CONNECT_PATIENCE = 15.0
#: What the start rides out: transient trouble, and a refusal that :func:`_transient` maps.
_RIDDEN: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, ResponseError)
#: What a failed sync after a reload is logged for (the parent keeps running).
_RESYNC_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, redis.RedisError)


class BadSettings(SystemExit):
    """A setting that cannot work, found while connecting (a malformed Redis URL: an
    unknown scheme or option, a database that is no number). The command exits
    with status 2, as for every other bad setting, which systemd's
    ``RestartPreventExitStatus=2`` does not restart (status 1 was restarted in a
    loop)."""


def resolve_queues(settings: Settings, registry: Registry) -> tuple[str, ...]:
    """``--queues``, or every queue of the registered workflows."""
    queues = settings.queues or tuple(registry.queues())
    if not queues:
        raise SystemExit(
            "redflow-supervisor: no queues to serve: the modules define no workflows "
            "and --queues is empty"
        )
    return tuple(queues)


def connect(settings: Settings, registry: Registry, queues: Sequence[str]) -> Client:
    """The arbiter's client, with ``registry`` synced for ``settings.app``; a
    keyspace written by an older redflow-mp (v1) on ``queues`` or the registry's
    workflows stops the start with a message naming ``redflow migrate``."""
    s = settings
    client = _first_client(s, registry)
    deadline = time.monotonic() + _CONNECT_PATIENCE
    delay = 0.1
    while True:
        try:
            problem = keyspace_problem(client, queues, [wf.name for wf in registry])
            if problem is None:
                problem = foreign_keys_problem(client)
            if problem is None:
                problem = shards_problem(client)
            if problem is not None:
                client.close()
                raise SystemExit(f"redflow-supervisor: {problem}")
            client.sync_registry(registry, app=s.app)
            register_live(client, registry, s.app)
            # Built here once, before any child is forked: the scripts' sources (read
            # and cut from lua/*.lua) and the server's script cache. Every child
            # inherits the sources and finds the scripts loaded, instead of building
            # and loading them itself before its first claim.
            client.scripts.ensure_loaded()
            check_permissions(client)
            warning = eviction_warning(client, s.url)
            if warning is not None:
                log.warning("%s", warning)
            return client
        except (redis.AuthenticationError, AuthorizationError) as exc:
            client.close()
            raise SystemExit(
                f"redflow-supervisor: Redis at {mask_url(s.url)} refused the credentials: "
                f"{exc}{auth_hint(s.url, exc)}"
            ) from None
        except NoPermissionError as exc:
            client.close()
            raise SystemExit(
                f"redflow-supervisor: Redis at {mask_url(s.url)} refused a command to this "
                f'user: {exc} (docs/operations.md, "Redis ACL", lists what a user needs)'
            ) from None
        except _RIDDEN as exc:
            # A plain command or pipeline refused (OOM, BUSY, MISCONF) reaches here
            # as redis-py's raw error: mapped as a script call's refusal is.
            trouble = _transient(exc, s.url)
            if trouble is None:
                raise
            if time.monotonic() >= deadline:
                client.close()
                raise _given_up(s.url, trouble) from None
            log.warning("Redis at %s %s (%s); retrying", mask_url(s.url), _what(trouble), trouble)
            time.sleep(delay)
            delay = min(2.0, delay * 2)
        except RedflowError as exc:  # e.g. a cluster URL whose node is not in cluster mode
            client.close()
            raise SystemExit(f"redflow-supervisor: {exc}") from None


def _transient(exc: Exception, url: str) -> Exception | None:
    """``exc`` as the transient trouble the start rides out, or None (raise it)."""
    if not isinstance(exc, ResponseError) or isinstance(exc, TRANSIENT_ERRORS):
        return exc
    return refused(exc, "the start (its keyspace checks and registry sync)", mask_url(url))


def _what(exc: Exception) -> str:
    if isinstance(exc, RedisReadOnlyError | redis.ReadOnlyError):
        return "accepts no writes"
    if isinstance(exc, RedisOutOfMemoryError | RedisBusyError):
        return "refuses writes"
    return "unreachable"


def _given_up(url: str, exc: Exception) -> SystemExit:
    """The exit message once Redis stayed out of reach (or refused writes) too long."""
    if isinstance(exc, RedisOutOfMemoryError | RedisBusyError):
        return SystemExit(f"redflow-supervisor: {exc}")
    if isinstance(exc, RedisReadOnlyError | redis.ReadOnlyError):
        return SystemExit(
            f"redflow-supervisor: Redis at {mask_url(url)} accepts no writes: {exc} "
            "(give the master's URL, or a redis+sentinel:// URL)"
        )
    return SystemExit(
        f"redflow-supervisor: cannot reach Redis at {mask_url(url)}: {exc}{tls_hint(url, exc)}"
    )


#: The namespace keys whose type a redflow keyspace fixes (``keys.py``).
_KEY_TYPES = {"workflows": b"set", "runs:created": b"zset", "queues": b"set", "meta": b"hash"}


def foreign_keys_problem(client: Client) -> str | None:
    """A message when keys of the prefix's hash tag that redflow owns hold another
    type: another application uses the same ``{<prefix>}`` hash tag (and key
    names). Sharing a tag (a slot) is harmless, sharing key names is not."""
    names = list(_KEY_TYPES)
    for view in shard_views(client):  # every shard's hash tag
        with view.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.type(f"{view.keys.tag}:{name}")
            types = pipe.execute()
        for name, kind in zip(names, types, strict=True):
            kind = kind if isinstance(kind, bytes) else str(kind).encode()
            if kind not in (b"none", _KEY_TYPES[name]):
                return (
                    f"the key {view.keys.tag}:{name} is a {kind.decode()}, not a "
                    f"{_KEY_TYPES[name].decode()}: another application uses the hash tag "
                    f"{view.keys.tag}; choose another --prefix"
                )
    return None


def check_permissions(client: Client) -> None:
    """Send, once per shard, the commands the children need that the start-up
    does not otherwise send: a PUBLISH to a ``run-done`` channel (nobody listens
    on ``-``) and a 10 ms BLPOP of a key nobody writes (idle workers wait on
    their queues' bells). An ACL user without the prefix's channels or without
    BLPOP (``-@blocking``) is refused here (``NoPermissionError``, which
    :func:`connect` names), not at the end of each run (the finish's PUBLISH) or
    at each child's first idle wait (a crash, five restarts, FATAL)."""
    for view in shard_views(client):
        view.redis.publish(view.keys.run_done("-"), "")
        view.redis.blpop([view.keys.worker_wake("-")], timeout=0.01)


def eviction_warning(client: Client, url: str) -> str | None:
    """A warning when Redis may evict keys at its memory limit (any
    ``maxmemory-policy`` but ``noeviction``): run hashes, idempotency keys or the
    cron lock deleted by Redis mean runs lost or run twice. Every shard's server
    is asked (with ``shards > 1`` on a cluster, a prefix's runs live on several
    masters). The policy is read from ``INFO memory`` (``maxmemory_policy``),
    which every user needs anyway (docs/operations.md, Redis ACL), so the check
    also works where ``CONFIG`` is renamed or disabled (managed services, which
    often default to ``volatile-lru``) and for a named ACL user without it
    (``CONFIG GET`` would be refused there, and land in the ACL LOG at every
    start). None when every policy is ``noeviction`` or INFO does not name it."""
    views = shard_views(client)
    seen: set[str] = set()  # servers (INFO run_id) asked
    evicting: dict[str, str] = {}  # which shard's server -> its policy
    for k, view in enumerate(views):
        try:
            memory: dict[str, Any] = dict(view.redis.info("memory"))
            server: dict[str, Any] = dict(view.redis.info("server"))
        except redis.RedisError:
            continue
        if str(server.get("run_id")) in seen:
            continue
        seen.add(str(server.get("run_id")))
        raw = memory.get("maxmemory_policy")
        policy = raw.decode() if isinstance(raw, bytes) else str(raw or "noeviction")
        if policy != "noeviction":
            evicting[f"shard {k}'s server, port {server.get('tcp_port')}"] = policy
    if not evicting:
        return None
    where = mask_url(url)
    if len(views) > 1:
        where += " (" + ", ".join(evicting) + ")"
    policies = ", ".join(sorted(set(evicting.values())))
    return (
        f"Redis at {where} has maxmemory-policy {policies}: at its memory "
        "limit it deletes keys, and a deleted run, lease or idempotency key means a run "
        "lost or run twice; set maxmemory-policy noeviction (then a full Redis refuses "
        "writes, which redflow rides out) or give Redis memory to spare"
    )


def _first_client(s: Settings, registry: Registry) -> Client:
    try:
        return _client(s, registry)
    except ValueError as exc:  # a malformed URL: a bad setting
        raise BadSettings(f"redflow-supervisor: {exc}") from None
    except RedflowError as exc:  # an unknown Sentinel service
        raise SystemExit(f"redflow-supervisor: {exc}") from None


def _client(s: Settings, registry: Registry) -> Client:
    return create_client(
        **client_keywords(s), registry=registry, default=False, verify_shards=False
    )


def register_live(client: Client, registry: Registry, app: str) -> None:
    """Write ``app``'s live registration of ``registry`` now, before any child is
    forked (the registration duty renews it from its first tick on): workers of
    other code on the same queues put back runs of these workflows only while a
    live registration lists them, and in a rolling deploy they claim the new
    workflows' runs as soon as this supervisor's children exist."""
    names = sorted(wf.name for wf in registry.list())
    renew_registration(client, names, app=app, digest=registration_digest(app, names))


def resync(client: Client, settings: Settings, registry: Registry) -> tuple[str, ...]:
    """After a reload (SIGHUP): freeze ``registry``, resolve its queues (SystemExit
    when there are none), make it the client's and sync it (a failed sync is
    logged; the next reload or restart syncs again)."""
    registry.freeze()
    queues = resolve_queues(settings, registry)
    client.registry = registry
    try:
        client.sync_registry(registry, app=settings.app)
        register_live(client, registry, settings.app)
    except _RESYNC_TROUBLE as exc:
        # A plain command's refusal (OOM at maxmemory, MISCONF...) is redis-py's raw
        # error: it ended the parent in a traceback in the middle of a HUP.
        log.warning("registry sync after reload failed: %s", exc)
    except RedflowError as exc:
        # A definition the sync refuses (a cron input past max_payload_bytes): at
        # start the same is fatal; here it ended the parent in a traceback.
        log.error(
            "registry sync after reload refused: %s; Redis keeps what the last sync "
            "wrote (fix the definition and reload)",
            exc,
        )
    return queues


def end_of_startup() -> None:
    """Before the first fork: when start-up ran with the collector paused
    (``entry.supervisor``), freeze what it made (modules, workflows, settings,
    connections: all live as long as the process) and resume collecting. A
    frozen object is never traversed by a collection again, in this process or
    in the children, which therefore also keep sharing its memory pages (the
    use ``gc.freeze`` is documented for). Start-up's few unreachable cycles
    (hundreds of objects, made once) are frozen with it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
