"""Withdrawing an app's stale workflow registrations (:func:`~redflow_mp.sync.sync_registry`'s
rules): the registrations of workflows the app's registry no longer lists, older
than :data:`STALE_WORKFLOW_GRACE_MS` and listed by no live registration of the app.

Which workflows an app registers is listed per shard in ``app-wfs:<app>`` (a
superset: every sync adds the names it registers in the transaction that writes
their ``wf-apps`` entry, a withdrawal removes the name in the transaction that
removes the entry). The registry duty reads that index (its cost: what the app
registered), not every workflow of the prefix: with 10,000 workflows of other
apps on the same Redis it sent 20,001 commands (35 ms of Redis CPU) per
supervisor per minute. The start-up sync (and a HUP's) still reads every
workflow name and lists in the index the app's registrations it lacks (written
before it existed, or lost with it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import redis

from .codec import text
from .cronswap import broken_cron_keys, cron_keys, own_cron_ids, remove_cron_entries
from .runs import Runs
from .shardset import Shard

log = logging.getLogger(__name__)

STALE_WORKFLOW_GRACE_MS = 30_000
#: A live registration expiring more than this beyond the grace was renewed while
#: the Redis clock ran ahead and went back since (Redis expires a key at an
#: absolute time on its own clock): a reader brings it to the grace from now.
CLOCK_SLACK_MS = 2_000
_READ_CHUNK = 1000


def remove_stale_workflows(
    runs: Runs, registered: set[str], app: str, now: int, *, every: bool
) -> None:
    """Withdraw ``app``'s stale registrations of workflows not in ``registered``:
    of every workflow (``every``: one read of ``workflows``, and the app's
    registrations found listed in its index), or of those its index lists."""
    indexed = None if every else _indexed(runs, app)
    if indexed is None:  # (an index of another type: every workflow, as before it)
        every = True
    names = (
        (text(m) for m in runs.redis.smembers(runs.keys.workflows)) if indexed is None else indexed
    )
    candidates = sorted({n for n in names if n not in registered})
    if not candidates:
        return
    read = _read(runs, candidates)
    stale, unlisted, mine_all = [], [], []
    for name in candidates:
        mine = registrations(name, *read[name]).get(app)
        if mine is None:
            if not every:
                unlisted.append(name)  # in the index, no registration: dropped from it
            continue
        mine_all.append(name)
        if now - mine >= STALE_WORKFLOW_GRACE_MS:
            stale.append(name)  # ours and old enough that no old host may serve it
    if every:
        _list(runs, app, mine_all)
    served = live_names(runs, app, stale) if stale else set()
    for name in [*unlisted, *(n for n in stale if n not in served)]:
        try:
            _withdraw(runs, name, app, now)
        except redis.WatchError:
            # Someone synced this workflow meanwhile: leave it to the next sync.
            log.debug("workflow %r changed during sync; not withdrawn", name)


def _list(runs: Runs, app: str, names: list[str]) -> None:
    """List ``names`` (registrations of ``app`` found reading every workflow) in
    its index (an index of another type: logged, left as it is)."""
    for shard, chunk in shard_chunks(runs, names):
        key = shard.keys.app_wfs(app)
        try:
            shard.redis.sadd(key, *chunk)
        except redis.ResponseError as exc:
            if not index_refused(exc):
                raise
            warn_index(key, exc)


def _read(runs: Runs, names: list[str]) -> dict[str, tuple[Any, Any]]:
    """The ``wf-apps`` entries and metadata owner of each of ``names``: one
    pipeline per shard and chunk (a workflow's keys are in its shard), not per
    workflow (a supervisor of an app that shares the prefix with apps registering
    5,000 workflows made 5,000 round trips at each start)."""
    read: dict[str, tuple[Any, Any]] = {}
    for shard, chunk in shard_chunks(runs, names):
        with shard.redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.hgetall(shard.keys.wf_apps(name))
                pipe.hmget(shard.keys.workflow(name), "app", "updatedAt")
            replies = pipe.execute()
        for i, name in enumerate(chunk):
            read[name] = (replies[2 * i], replies[2 * i + 1])
    return read


def _indexed(runs: Runs, app: str) -> list[str] | None:
    """The names in ``app``'s index of each shard, read a page at a time, or None
    when one is of another type (logged; the caller reads every workflow); a name
    in the index of a shard that does not hold its keys (moved by ``redflow
    migrate --shards``) leaves it there (the start-up sync lists it in its own)."""
    out: list[str] = []
    for shard in runs.shards:
        key = shard.keys.app_wfs(app)
        cursor: Any = 0
        while True:
            try:
                cursor, page = shard.redis.sscan(key, cursor, count=_READ_CHUNK)
            except redis.ResponseError as exc:
                if not index_refused(exc):
                    raise
                warn_index(key, exc)
                return None
            names = [text(n) for n in page]
            moved = [n for n in names if runs.shard_of_workflow(n).index != shard.index]
            if moved:
                shard.redis.srem(key, *moved)
            out += (n for n in names if n not in moved)
            if not int(cursor):
                break
    return out


def index_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a command for its key's type (WRONGTYPE)."""
    return isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc)


def warn_index(key: str, exc: BaseException) -> None:
    """Say that ``key``, an ``app-wfs`` index, is of another type, and what it costs."""
    log.warning(
        "%s is not a set (written by hand or by another program: %s): the app's "
        "workflows are not listed in it, and the registry duty reads every workflow "
        "of the prefix instead (the cost the index saves); delete it (DEL), the "
        "app's next start lists them in it again",
        key,
        exc,
    )


def execute_sparing_index(pipe: Any, tag: str) -> list[Any]:
    """``pipe.execute()`` of a MULTI where a write of an ``app-wfs`` index that
    Redis refuses for its key's type is logged and left out (the index is an aid:
    the rest of the transaction is applied all the same, and the error raised out
    of it stopped the app's sync, its start with it); another error raises."""
    head = f"{tag}:app-wfs:"
    stack = [args for args, _ in pipe.command_stack]
    replies: list[Any] = pipe.execute(raise_on_error=False)
    refused: dict[str, Exception] = {}
    for i, (args, reply) in enumerate(zip(stack, replies, strict=True)):
        if not isinstance(reply, Exception):
            continue
        key = text(args[1]) if len(args) > 1 else ""
        if key.startswith(head) and index_refused(reply):
            refused.setdefault(key, reply)  # (one warning a key, not one a workflow)
            continue
        pipe.annotate_exception(reply, i + 1, args)  # (as execute() names it)
        raise reply
    for key, exc in refused.items():
        warn_index(key, exc)
    return replies


def live_names(runs: Runs, app: str, names: list[str]) -> set[str]:
    """Which of ``names`` a live registration of ``app`` (a running supervisor's,
    :func:`~redflow_mp.sync.renew_registration`) lists. Registrations found expired are pruned."""
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


def registrations(name: str, raw: dict[Any, Any], legacy: list[Any]) -> dict[str, int]:
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


def _withdraw(runs: Runs, name: str, app: str, now: int) -> None:
    """Remove ``app``'s registration of ``name``; the metadata goes with the last one."""
    shard = runs.shard_of_workflow(name)
    keys = shard.keys
    key, apps_key = keys.workflow(name), keys.wf_apps(name)
    with shard.redis.pipeline(transaction=True) as pipe:
        pipe.watch(key, apps_key)  # type: ignore[no-untyped-call]
        regs = registrations(name, pipe.hgetall(apps_key), pipe.hmget(key, "app", "updatedAt"))
        mine = regs.pop(app, None)
        index = keys.app_wfs(app)
        if mine is None:  # listed in the index by no registration (lost, by hand)
            pipe.multi()
            pipe.srem(index, name)
            execute_sparing_index(pipe, keys.tag)
            return
        if now - mine < STALE_WORKFLOW_GRACE_MS:
            pipe.unwatch()
            return
        if regs:
            latest = max(regs, key=lambda a: regs[a])
            pipe.multi()
            pipe.hdel(apps_key, app)
            pipe.srem(index, name)
            pipe.hset(key, "app", latest)
            execute_sparing_index(pipe, keys.tag)
            log.info(
                "workflow %r: app %r no longer registers it; kept for %s",
                name,
                app,
                ", ".join(repr(a) for a in sorted(regs)),
            )
            return
        ids = json_list(pipe.hget(key, "cronIdsJson"))
        broken = (
            broken_cron_keys(keys, [pipe.type(k) for k, _ in cron_keys(keys)]) if ids else set()
        )
        if ids and keys.cron_def not in broken:
            ids = own_cron_ids(name, ids, pipe.hmget(keys.cron_def, *ids))
        pipe.multi()
        pipe.delete(key, apps_key)
        pipe.srem(index, name)
        if shard.index == 0:
            pipe.srem(runs.keys.workflows, name)
        if ids:
            remove_cron_entries(pipe, keys, ids, broken)
        execute_sparing_index(pipe, keys.tag)
    if shard.index != 0:  # the `workflows` set is shard 0's
        runs.redis.srem(runs.keys.workflows, name)
    log.info("removed stale workflow metadata %r (app %r, the last to register it)", name, app)


def shard_chunks(runs: Runs, names: list[str]) -> Iterator[tuple[Shard, list[str]]]:
    """``names`` (workflows) grouped by the shard holding their keys, in chunks of
    at most _READ_CHUNK: one pipeline each, never a round trip per workflow."""
    by_shard: dict[int, list[str]] = {}
    for name in names:
        by_shard.setdefault(runs.shard_of_workflow(name).index, []).append(name)
    for group in by_shard.values():
        shard = runs.shard_of_workflow(group[0])
        for at in range(0, len(group), _READ_CHUNK):
            yield shard, group[at : at + _READ_CHUNK]


def json_list(raw: Any) -> list[str]:
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
