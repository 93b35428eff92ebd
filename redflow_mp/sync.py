"""Registry sync: write a registry's workflow metadata and cron entries to Redis.

``sync_registry(app=...)`` writes ``workflow:<name>`` and the cron definitions
and first fire times of every registered workflow, records the app's
registration in ``wf-apps:<name>``, and withdraws the app's registration of
workflows that are gone from its registry (older than 30 s, and listed by no
live registration of the app: what each running supervisor renews with
:func:`renew_registration`); the metadata and cron entries (never runs) go with
the last app's registration.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import redis

from . import codec
from .codec import text
from .cron import CronDef, cron_id_for, next_fire_ms
from .options import check_name, timeout_to_ms
from .registry import Registry, Workflow
from .runs import Runs
from .shardset import Shard

__all__ = [
    "REFRESH_INTERVAL_MS",
    "STALE_WORKFLOW_GRACE_MS",
    "loaded_live",
    "registration_digest",
    "registry_gaps",
    "renew_registration",
    "sync_registry",
    "withdraw_stale",
]

log = logging.getLogger(__name__)

STALE_WORKFLOW_GRACE_MS = 30_000
#: A live registration expiring more than this beyond the grace was renewed while
#: the Redis clock ran ahead and went back since (Redis expires a key at an
#: absolute time on its own clock): a reader brings it to the grace from now.
CLOCK_SLACK_MS = 2_000
#: How often a running supervisor renews its app's live registration
#: (:func:`renew_registration`): well inside the grace above.
REFRESH_INTERVAL_MS = 10_000
_READ_CHUNK = 1000
_cron_decoder = msgspec.json.Decoder(CronDef)


def sync_registry(runs: Runs, registry: Registry | None = None, *, app: str) -> None:
    """Write workflow metadata and cron entries of ``registry`` for ``app``.

    Ownership: several apps (supervisors started with different ``--app``)
    may register the same workflow. Each sync records, per workflow it
    registers, ``app -> now`` in ``wf-apps:<name>``; the metadata hash holds
    the definition of the latest sync (its ``app`` field names that app), so
    apps sharing a workflow should define it alike. When ``app`` syncs a
    registry that no longer lists a workflow it registered:

    - if ``app`` synced it less than 30 s ago, nothing changes (other hosts
      of the same app may still run the previous code: a rolling deploy);
    - nor while a running supervisor of ``app`` loads it (its live
      registration, :func:`renew_registration`: hosts of one app may load
      different modules);
    - otherwise ``app`` withdraws its own registration, and the metadata and
      cron entries (never runs) are removed only when no other app still
      registers the workflow. An app never withdraws another app's
      registration, however old: a supervisor syncs at start and on HUP only,
      so an old sync time does not mean the app is gone.

    Metadata written before this rule (an ``app`` field, no ``wf-apps``
    record) counts as that app's registration at its ``updatedAt``.
    """
    if not isinstance(app, str):
        raise TypeError("app must be a str")
    if not app.strip():
        raise ValueError("sync_registry requires a non-empty app")
    app = check_name(app.strip(), "app")
    reg = registry if registry is not None else runs.registry
    if not isinstance(reg, Registry):
        raise TypeError("registry must be a Registry")
    now = runs.server_time_ms()
    defs = reg.list()
    _remove_stale_workflows(runs, {wf.name for wf in defs}, app, now)
    # One read and one transaction per shard and chunk of workflows, not two
    # round trips per workflow (5,000 workflows: 4.2 s at every start).
    by_shard: dict[int, list[Workflow[Any, Any]]] = {}
    for wf in defs:
        by_shard.setdefault(runs.shard_of_workflow(wf.name).index, []).append(wf)
    for group in by_shard.values():
        for at in range(0, len(group), _READ_CHUNK):
            _sync_workflows(runs, group[at : at + _READ_CHUNK], app, now)


def withdraw_stale(runs: Runs, names: Iterable[str], *, app: str) -> None:
    """The withdrawal half of :func:`sync_registry` for a running supervisor of
    ``app`` that loads the workflows ``names``: the app's registrations of other
    workflows go by the same rules (older than :data:`STALE_WORKFLOW_GRACE_MS`,
    listed by no live registration of the app). A supervisor calls this every
    minute: a deploy that drops a workflow restarts each host within the grace of
    the previous process's last renewal, so its start-up sync keeps the
    workflow, and nothing looked again (its cron fired until the next deploy).
    Cost when nothing is stale: one ``SMEMBERS`` of ``workflows``."""
    app = check_name(app.strip(), "app")
    _remove_stale_workflows(runs, set(names), app, runs.server_time_ms())


def registration_digest(app: str, names: Iterable[str]) -> str:
    """The id of the live registration of ``app`` loading the workflows ``names``:
    supervisors of one app that load the same modules share one record."""
    h = hashlib.sha1(app.encode(), usedforsecurity=False)
    for name in sorted(set(names)):
        h.update(b"\0" + name.encode())
    return h.hexdigest()[:20]


def renew_registration(runs: Runs, names: Sequence[str], *, app: str, digest: str) -> bool:
    """Keep ``app``'s live registration of the workflows ``names`` (``digest``: its
    :func:`registration_digest`) for :data:`STALE_WORKFLOW_GRACE_MS` more; a running
    supervisor calls this every :data:`REFRESH_INTERVAL_MS`. Returns True when the
    record was gone (first call, expired, deleted, FLUSHALL) and was written again.

    Why: the supervisors of one app may load different modules (a GPU host and a
    CPU host, both ``--app etl``). Each one's sync withdraws the app's
    registration of workflows its own registry lacks once it is older than
    :data:`STALE_WORKFLOW_GRACE_MS`, unless a live registration of the app still
    lists the workflow. Steady state: one ``PEXPIRE`` and one ``SADD`` of a member
    already there, whatever the number of workflows (renewing each workflow's
    ``wf-apps`` time read and wrote two keys per workflow per tick: 1,000
    workflows and 20 supervisors made 4,000 commands/s on an idle Redis). The
    names are written again (one pipeline) only when the record is gone, so a
    lost registration comes back within one renewal period."""
    app = check_name(app.strip(), "app")
    if not names:
        return False
    keys = runs.keys
    key = keys.app_reg(digest)
    with runs.redis.pipeline(transaction=False) as pipe:
        pipe.pexpire(key, STALE_WORKFLOW_GRACE_MS)
        pipe.sadd(keys.app_live(app), digest)
        alive, _ = pipe.execute()
    if alive:
        return False
    names = list(names)
    with runs.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for at in range(0, len(names), _READ_CHUNK):
            pipe.sadd(key, *names[at : at + _READ_CHUNK])
        pipe.pexpire(key, STALE_WORKFLOW_GRACE_MS)
        pipe.execute()
    return True


def loaded_live(runs: Runs, name: str) -> bool:
    """Whether a running supervisor loads the workflow ``name``: a live
    registration (:func:`renew_registration`) of an app that registered it lists
    it. A worker that claimed a run of a workflow it does not load puts the run
    back for such a supervisor (a rolling deploy that adds a workflow on a queue
    the old code serves too; two apps sharing a queue) instead of failing it.
    Four reads (more with several apps), only on that rare path."""
    shard = runs.shard_of_workflow(name)
    try:
        with shard.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(shard.keys.wf_apps(name))
            pipe.hmget(shard.keys.workflow(name), "app", "updatedAt")
            apps, legacy = pipe.execute()
    except redis.ResponseError:  # a key of another type: nobody is known to load it
        return False
    return any(_live_names(runs, app, [name]) for app in _registrations(name, apps, legacy))


def _live_names(runs: Runs, app: str, names: list[str]) -> set[str]:
    """Which of ``names`` a live registration of ``app`` (a running supervisor's,
    :func:`renew_registration`) lists. Registrations found expired are pruned."""
    live_key = runs.keys.app_live(app)
    try:
        digests = [text(d) for d in runs.redis.smembers(live_key)]
        if not names or not digests:
            return set()
        with runs.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.pttl(runs.keys.app_reg(digest))
                pipe.smismember(runs.keys.app_reg(digest), names)
            replies = pipe.execute()
    except redis.ResponseError as exc:
        # A key of another type (written by hand or by another program): what
        # the app's running supervisors load is unknown, so nothing is withdrawn.
        log.warning("live registrations of app %r unreadable (%s); nothing withdrawn", app, exc)
        return set(names)
    served: set[str] = set()
    gone: list[str] = []
    ahead: list[str] = []
    for i, digest in enumerate(digests):
        left, flags = int(replies[2 * i]), replies[2 * i + 1]
        if left == -2:  # no such key
            gone.append(digest)
            continue
        if left > STALE_WORKFLOW_GRACE_MS + CLOCK_SLACK_MS:
            ahead.append(digest)
        served.update(name for name, flag in zip(names, flags, strict=True) if flag)
    if gone:
        runs.redis.srem(live_key, *gone)
    if ahead:
        # Renewed at a Redis clock that was ahead: a supervisor gone then kept
        # its workflows registered (and their runs put back by workers that do
        # not load them) as long as the clock had been ahead. A live one renews
        # it within the grace, as always.
        with runs.redis.pipeline(transaction=False) as pipe:
            for digest in ahead:
                pipe.pexpire(runs.keys.app_reg(digest), STALE_WORKFLOW_GRACE_MS)
            pipe.execute()
    return served


def _registrations(name: str, raw: dict[Any, Any], legacy: list[Any]) -> dict[str, int]:
    """``app -> last sync ms`` of ``name`` (legacy owner when no record exists);
    an unreadable time counts as "now" (kept, never removed on a guess)."""
    entries = {text(a): t for a, t in raw.items()}
    if not entries and legacy[0]:
        entries = {text(legacy[0]): legacy[1]}
    out: dict[str, int] = {}
    for owner, value in entries.items():
        try:
            out[owner] = int(value)
        except (TypeError, ValueError):
            log.warning(
                "workflow %r has an unreadable sync time %r for app %r; kept",
                name,
                value,
                owner,
            )
            out[owner] = 2**62
    return out


def _remove_stale_workflows(runs: Runs, registered: set[str], app: str, now: int) -> None:
    candidates = [
        n
        for n in (text(m) for m in runs.redis.smembers(runs.keys.workflows))
        if n not in registered
    ]
    if not candidates:
        return
    # One pipeline per shard and chunk (a workflow's keys are in its shard), not
    # per workflow: a supervisor of an app that shares the prefix with apps
    # registering 5,000 workflows made 5,000 round trips at each start.
    read: dict[str, tuple[Any, Any]] = {}
    for shard, chunk in _shard_chunks(runs, candidates):
        with shard.redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.hgetall(shard.keys.wf_apps(name))
                pipe.hmget(shard.keys.workflow(name), "app", "updatedAt")
            replies = pipe.execute()
        for i, name in enumerate(chunk):
            read[name] = (replies[2 * i], replies[2 * i + 1])
    stale = []
    for name in candidates:
        regs = _registrations(name, *read[name])
        mine = regs.get(app)
        if mine is None or now - mine < STALE_WORKFLOW_GRACE_MS:
            continue  # not ours, or ours and recent enough that old hosts may serve it
        stale.append(name)
    served = _live_names(runs, app, stale) if stale else set()
    for name in stale:
        if name in served:
            continue  # a running supervisor of the app still loads it
        try:
            _withdraw(runs, name, app, now)
        except redis.WatchError:
            # Someone synced this workflow meanwhile: leave it to the next sync.
            log.debug("workflow %r changed during sync; not withdrawn", name)


def _withdraw(runs: Runs, name: str, app: str, now: int) -> None:
    """Remove ``app``'s registration of ``name``; the metadata goes with the last one."""
    shard = runs.shard_of_workflow(name)
    keys = shard.keys
    key, apps_key = keys.workflow(name), keys.wf_apps(name)
    with shard.redis.pipeline(transaction=True) as pipe:
        pipe.watch(key, apps_key)  # type: ignore[no-untyped-call]
        regs = _registrations(name, pipe.hgetall(apps_key), pipe.hmget(key, "app", "updatedAt"))
        mine = regs.pop(app, None)
        if mine is None or now - mine < STALE_WORKFLOW_GRACE_MS:
            pipe.unwatch()
            return
        if regs:
            latest = max(regs, key=lambda a: regs[a])
            pipe.multi()
            pipe.hdel(apps_key, app)
            pipe.hset(key, "app", latest)
            pipe.execute()
            log.info(
                "workflow %r: app %r no longer registers it; kept for %s",
                name,
                app,
                ", ".join(repr(a) for a in sorted(regs)),
            )
            return
        ids = _json_list(pipe.hget(key, "cronIdsJson"))
        broken = (
            _broken_cron_keys(keys, [pipe.type(k) for k, _ in _cron_keys(keys)]) if ids else set()
        )
        pipe.multi()
        pipe.delete(key, apps_key)
        if shard.index == 0:
            pipe.srem(runs.keys.workflows, name)
        if ids:
            _remove_cron_entries(pipe, keys, ids, broken)
        pipe.execute()
    if shard.index != 0:  # the `workflows` set is shard 0's
        runs.redis.srem(runs.keys.workflows, name)
    log.info("removed stale workflow metadata %r (app %r, the last to register it)", name, app)


def _sync_workflows(runs: Runs, wfs: list[Workflow[Any, Any]], app: str, now: int) -> None:
    """Write ``wfs`` (workflows of one shard) in one read and one MULTI/EXEC."""
    # with shards > 1 the workflow's keys (metadata, its cron entries, its queue in
    # `queues`) are in its shard; the `workflows` set (listing) is shard 0's
    shard = runs.shard_of_workflow(wfs[0].name)
    keys = shard.keys
    all_ids = sorted({cron_id_for(wf.name, c) for wf in wfs for c in wf.cron})
    with shard.redis.pipeline(transaction=False) as read:
        for k, _ in _cron_keys(keys):
            read.type(k)
        for wf in wfs:
            read.hmget(keys.workflow(wf.name), "cronIdsJson", "app", "updatedAt", "rateLimit")
            read.exists(keys.wf_apps(wf.name))
        if all_ids:
            read.hmget(keys.cron_def, *all_ids)
        # a cron key of the wrong type fails only its own read (TYPE says which)
        replies = read.execute(raise_on_error=False)
    n_cron_keys = len(_cron_keys(keys))
    broken = _broken_cron_keys(keys, replies[:n_cron_keys])
    replies = replies[n_cron_keys:]
    for reply in replies[: 2 * len(wfs)]:
        if isinstance(reply, Exception):
            raise reply
    stored: dict[str, Any] = {}
    if all_ids and keys.cron_def not in broken:
        if isinstance(replies[2 * len(wfs)], Exception):
            raise replies[2 * len(wfs)]
        stored = dict(zip(all_ids, replies[2 * len(wfs)], strict=True))
    if shard.index != 0:
        runs.redis.sadd(runs.keys.workflows, *(wf.name for wf in wfs))
    replan: list[str] = []
    with shard.redis.pipeline(transaction=True) as pipe:
        for i, wf in enumerate(wfs):
            (old_ids_json, old_app, old_updated, old_rate), has_apps = (
                replies[2 * i],
                replies[2 * i + 1],
            )
            if old_rate and text(old_rate) != (wf.rate_limit.text if wf.rate_limit else ""):
                replan.append(wf.name)
            _write_workflow(
                pipe,
                shard,
                wf,
                app,
                now,
                (old_ids_json, old_app, old_updated, has_apps),
                (stored, broken),
            )
        pipe.execute()
    _replan_rates(shard, replan)


def _replan_rates(shard: Shard, names: list[str]) -> None:
    """The workflows ``names`` changed their rate limit: it applies to the runs
    already waiting on a start the old one reserved (replan_rate.lua puts them
    back to be claimed, and reserve, under the new one); kept, a lifted limit
    left its backlog waiting as long as the old one had planned."""
    for name in names:
        moved, more = shard.scripts.replan_rate(name)
        while more:
            n, more = shard.scripts.replan_rate(name)
            moved += n
        if moved:
            log.info("rate limit of %r changed: %d reserved runs replanned", name, moved)


def _cron_keys(keys: Any) -> list[tuple[str, str]]:
    """The cron keys a sync writes, with the type each must have."""
    return [
        (keys.cron_def, "hash"),
        (keys.cron_next, "zset"),
        (keys.cron_last, "hash"),
        (keys.cron_skipped, "hash"),
    ]


def _broken_cron_keys(keys: Any, kinds: list[Any]) -> set[str]:
    """The cron keys of another type (``kinds``: their TYPE replies, in
    :func:`_cron_keys` order), each named in an ERROR line: a neighbour's key on
    the same Redis must not stop a supervisor's start (the sync raised
    WRONGTYPE); the cron writes that need it are left out, the rest is synced."""
    broken = set()
    for (key, want), kind in zip(_cron_keys(keys), kinds, strict=True):
        found = text(kind)
        if found in ("none", want):
            continue
        broken.add(key)
        log.error(
            "cron key %s holds a %s, not a %s (written by hand or by another program?): "
            "the cron entries it holds are not written; delete or rename it",
            key,
            found,
            want,
        )
    return broken


def _remove_cron_entries(pipe: Any, keys: Any, ids: list[str], broken: set[str]) -> None:
    """Queue the removal of the cron entries ``ids`` from the cron keys not ``broken``."""
    if keys.cron_def not in broken:
        pipe.hdel(keys.cron_def, *ids)
    if keys.cron_next not in broken:
        pipe.zrem(keys.cron_next, *ids)
    if keys.cron_last not in broken:
        pipe.hdel(keys.cron_last, *ids)
    if keys.cron_skipped not in broken:
        pipe.hdel(keys.cron_skipped, *ids)


def _same_schedule(raw: Any, record: CronDef) -> bool:
    """Whether the stored definition ``raw`` fires on ``record``'s schedule (its
    expression and timezone); an unreadable one does not."""
    if raw is None:
        return True  # a new entry: ZADD NX writes its first fire time
    try:
        old = _cron_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return (old.expression, old.timezone) == (record.expression, record.timezone)


def _write_workflow(
    pipe: Any,
    shard: Any,
    wf: Workflow[Any, Any],
    app: str,
    now: int,
    old: tuple[Any, ...],
    cron_state: tuple[dict[str, Any], set[str]],
) -> None:
    """Queue on ``pipe`` the writes of one workflow's metadata and cron entries;
    ``old``: what its metadata held (cronIdsJson, app, updatedAt, wf-apps exists);
    ``cron_state``: the cron definitions stored under its cron ids (None: none),
    and the cron keys of the wrong type (left out)."""
    stored, broken = cron_state
    old_ids_json, old_app, old_updated, has_apps = old
    keys = shard.keys
    key, apps_key = keys.workflow(wf.name), keys.wf_apps(wf.name)
    old_ids = set(_json_list(old_ids_json))
    cron_ids: list[str] = []
    cron_defs: list[tuple[str, bytes, int, bool]] = []
    for trigger in wf.cron:
        cid = cron_id_for(wf.name, trigger)
        if cid in cron_ids:
            continue
        cron_ids.append(cid)
        record = CronDef(
            id=cid,
            workflow=wf.name,
            queue=wf.queue,
            expression=trigger.expression,
            timezone=trigger.timezone,
            input_json=codec.encode_json(trigger.input).decode(),
            max_concurrency=wf.max_concurrency,
            max_attempts=wf.retries.max_attempts,
            timeout_ms=timeout_to_ms(wf.timeout) if wf.timeout else 0,
            priority=wf.priority,
        )
        cron_defs.append(
            (
                cid,
                msgspec.json.encode(record),
                next_fire_ms(trigger.expression, trigger.timezone, now),
                _same_schedule(stored.get(cid), record),
            )
        )
    cron_json = msgspec.json.encode(
        [
            {
                "expression": c.expression,
                "timezone": c.timezone,
                "input": c.input,
                **({"id": c.id} if c.id else {}),
            }
            for c in wf.cron
        ]
    )
    pipe.hset(
        key,
        mapping={
            "name": wf.name,
            "queue": wf.queue,
            "maxConcurrency": wf.max_concurrency,
            "app": app,
            "updatedAt": now,
            "cronJson": cron_json,
            "retriesJson": msgspec.json.encode(wf.retries),
            "cronIdsJson": msgspec.json.encode(cron_ids),
            "timeoutMs": timeout_to_ms(wf.timeout) if wf.timeout else 0,
            "priority": wf.priority,
            "rateLimit": wf.rate_limit.text if wf.rate_limit else "",
        },
    )
    if not has_apps and old_app and text(old_app) != app:
        # Metadata from before wf-apps: keep its owner's registration.
        pipe.hsetnx(apps_key, text(old_app), old_updated or now)
    pipe.hset(apps_key, app, now)
    if shard.index == 0:
        pipe.sadd(keys.workflows, wf.name)
    pipe.sadd(keys.queues, wf.queue)
    gone = sorted(old_ids - set(cron_ids))
    if gone:
        _remove_cron_entries(pipe, keys, gone, broken)
    for cid, record_json, first_fire, same in cron_defs:
        if keys.cron_def not in broken:
            pipe.hset(keys.cron_def, cid, record_json)
        # An unchanged schedule keeps its next fire time (a restart or HUP must
        # not move it); one whose expression or timezone changed under the same
        # explicit id takes its new one: kept, a yearly schedule changed to every
        # minute waited up to a year for its first fire.
        if keys.cron_next not in broken:
            pipe.zadd(keys.cron_next, {cid: first_fire}, nx=same)


def registry_gaps(runs: Runs, names: list[str]) -> list[str]:
    """Which of the workflows ``names`` have lost what a sync wrote: their
    metadata hash, or a cron entry (``cron:def`` or ``cron:next``) that the
    stored metadata names. What a FLUSHALL, a restart without persistence or a
    failover to an empty replica leaves: no cron fires again and no
    ``run_by_name`` finds the workflow until a sync writes them again.

    Judged on what is stored (whichever app synced it last), never on this
    registry's definitions, so two apps that define a workflow differently
    never make each other sync again. Two pipelined round trips per shard and
    chunk of 1,000 workflows."""
    gaps: list[str] = []
    for shard, chunk in _shard_chunks(runs, names):
        keys = shard.keys
        with shard.redis.pipeline(transaction=False) as read:
            for name in chunk:
                read.hmget(keys.workflow(name), "name", "cronIdsJson")
            stored = read.execute()
        crons: list[tuple[str, list[str]]] = []
        for name, (has_name, ids_json) in zip(chunk, stored, strict=True):
            if has_name is None:
                gaps.append(name)
            elif ids := _json_list(ids_json):
                crons.append((name, ids))
        if not crons:
            continue
        with shard.redis.pipeline(transaction=False) as read:
            for _, ids in crons:
                read.hmget(keys.cron_def, *ids)
                read.zmscore(keys.cron_next, ids)
            found = read.execute()
        for i, (name, _) in enumerate(crons):
            defs, nexts = found[2 * i], found[2 * i + 1]
            if any(d is None for d in defs) or any(n is None for n in nexts):
                gaps.append(name)
    return gaps


def _shard_chunks(runs: Runs, names: list[str]) -> Iterator[tuple[Shard, list[str]]]:
    """``names`` (workflows) grouped by the shard holding their keys, in chunks of
    at most _READ_CHUNK: one pipeline each, never a round trip per workflow."""
    by_shard: dict[int, list[str]] = {}
    for name in names:
        by_shard.setdefault(runs.shard_of_workflow(name).index, []).append(name)
    for group in by_shard.values():
        shard = runs.shard_of_workflow(group[0])
        for at in range(0, len(group), _READ_CHUNK):
            yield shard, group[at : at + _READ_CHUNK]


def _json_list(raw: Any) -> list[str]:
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
