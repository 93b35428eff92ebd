"""The shard count a keyspace records, and the check that refuses another one.

``meta`` of shard 0 records ``shards`` = N, the count every client, supervisor
and ``redflow`` command of the prefix must use (``shards`` setting); each
shard's ``meta`` also records its ``shard`` index and the ``prefix``, so a hash
tag that another application's keyspace uses is found (its ``meta`` names
another prefix or index). A keyspace with no ``shards`` field is:

* fresh (no workflows, runs, queues or cron entries in shard 0): the first
  user records its N (``HSETNX``: of two first users with different counts,
  the second is refused);
* written before shards existed: it has one shard, and ``1`` is recorded.

Changing N is :func:`redflow_mp.reshard.reshard` (``redflow migrate --shards N``).
One round trip per shard, at start only; nothing on a per-run path.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from .codec import text
from .errors import ShardsMismatchError
from .listing import read_error
from .queries import drive, one, shard_views
from .shards import MAX_SHARDS

__all__ = [
    "acheck_recorded",
    "check_recorded",
    "check_shards",
    "record_shards",
    "recorded_problem",
    "recorded_shards",
    "shard_count",
    "shards_problem",
]

FIELD_SHARDS = "shards"
FIELD_SHARD = "shard"
FIELD_PREFIX = "prefix"


def _read(redis: Any, name: str, *args: Any) -> Any:
    """One read, its refusal the library's error (``WrongTypeError`` naming the
    key, ``RedisBusyError``), as a client read's is (``queries.drive``)."""
    return drive(redis, one(name, *args))


def shard_count(client: Any) -> int:
    """The ``shards`` setting of ``client`` (1 for a client without shards)."""
    return int(getattr(client, "shard_count", 1) or 1)


def _has_data(client: Any) -> bool:
    k = client.keys
    n = _read(client.redis, "exists", k.workflows, k.runs_created, k.queues, k.cron_def)
    return int(n) > 0


def recorded_shards(client: Any) -> int | None:
    """The shard count shard 0's ``meta`` records, or None for a fresh keyspace.

    A keyspace with data but no record was written before shards existed (1), or
    by clients of this version that never ran the check (a client alone does not
    record): then the layout tells, for ``client``'s count N > 1, whether shards
    ``k > 0`` hold runs or workflow metadata of workflows placed there (N), or
    not (1).
    """
    raw = _read(client.redis, "hget", client.keys.meta, FIELD_SHARDS)
    if raw is not None:
        return _count(client.keys.meta, raw)
    if not _has_data(client):
        return None
    return _layout_count(client)


def _layout_count(client: Any) -> int:
    views = shard_views(client)
    if len(views) == 1:
        return 1
    for view in views[1:]:
        if _read(view.redis, "exists", view.keys.runs_created, view.keys.cron_def):
            return len(views)
    names = [text(n) for n in _read(client.redis, "srandmember", client.keys.workflows, 20) or []]
    for name in names:
        shard = client.shard_of_workflow(name)
        index = shard if isinstance(shard, int) else shard.index
        if index != 0:
            view = views[index]
            return len(views) if _read(view.redis, "exists", view.keys.workflow(name)) else 1
    return 1


def _shown(value: str) -> str:
    """``value``'s repr for a message, cut when it is long: a neighbour's junk in
    ``meta`` (1 MB of it made every refusal 1 MB, printed and logged whole)."""
    if len(value) <= 80:
        return repr(value)
    return f"{value[:60]!r}... ({len(value):,} characters)"


def _count(meta: str, raw: Any) -> int:
    """The shard count recorded in ``meta`` (``raw``); a value that is no count
    (written by hand or by another program) is a :class:`ShardsMismatchError`."""
    value = text(raw) if raw is not None else ""
    # ASCII digits only: str.isdigit() is also true of "²" or "①", which int() refuses
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_SHARDS:
        return int(value)
    raise ShardsMismatchError(
        f"the field {FIELD_SHARDS!r} of {meta} holds {_shown(value)}, not a shard count (1 to "
        f"{MAX_SHARDS}): "
        "written by hand or by another program? Set it back to the number of shards of the "
        f"keyspace (1 unless it was re-sharded: HSET {meta} {FIELD_SHARDS} 1)"
    )


def target_count(meta: str, raw: Any) -> int:
    """The shard count of the migration ``meta``'s ``reshardTo`` records (``raw``);
    a value that is no count (written by hand or by another program) is a
    :class:`ShardsMismatchError` naming the field: it was a ``ValueError``
    traceback in ``redflow migrate``, and the advice ``--shards abc`` elsewhere."""
    value = text(raw)
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_SHARDS:
        return int(value)
    raise ShardsMismatchError(
        f"the field 'reshardTo' of {meta} holds {_shown(value)}, not a shard count (1 to "
        f"{MAX_SHARDS}): written by hand or by another program? Set it to the shard count "
        f"of the migration that was interrupted (HSET {meta} reshardTo N), or remove it if "
        f"none was (HDEL {meta} reshardTo)"
    )


def recorded_count(meta: str, raw: Any) -> int:
    """The shard count ``meta``'s ``shards`` field holds (``raw``, not None), or a
    :class:`ShardsMismatchError` naming the field."""
    return _count(meta, raw)


def mismatch_message(prefix: str, recorded: int, wanted: int) -> str:
    return (
        f"the keyspace of prefix {prefix!r} has {recorded} shard(s), this process was "
        f"started with shards = {wanted}: use shards = {recorded}, or re-shard it "
        f"(stop every supervisor of the prefix, then `redflow migrate --prefix {prefix} "
        f"--shards {wanted}` with the same --url)"
    )


def shards_problem(client: Any, *, record: bool = True) -> str | None:
    """Why ``client``'s ``shards`` cannot serve this keyspace, or None. Records the
    count (and each shard's index and prefix) when they are not recorded yet, unless
    ``record`` is False (a read-only look: ``redflow``, the dashboard)."""
    wanted = shard_count(client)
    pending = _read(client.redis, "hget", client.keys.meta, "reshardTo")
    if pending is not None:
        target_count(client.keys.meta, pending)  # garbage: named, not advised as a count
        return (
            f"a migration of prefix {client.prefix!r} to {text(pending)} shards is under way "
            f"or was interrupted: finish it (`redflow migrate --prefix {client.prefix} "
            f"--shards {text(pending)}` with the same --url), then start again"
        )
    recorded = recorded_shards(client)
    if recorded is None:
        if not record:
            return None  # a fresh keyspace: nothing to compare with, nothing written
        client.redis.hsetnx(client.keys.meta, FIELD_SHARDS, wanted)
        recorded = _count(client.keys.meta, client.redis.hget(client.keys.meta, FIELD_SHARDS))
    elif record and client.redis.hget(client.keys.meta, FIELD_SHARDS) is None:
        client.redis.hsetnx(client.keys.meta, FIELD_SHARDS, recorded)
    if recorded != wanted:
        return mismatch_message(client.prefix, recorded, wanted)
    for index, view in enumerate(shard_views(client)):
        problem = _tag_problem(client.prefix, index, view, record)
        if problem is not None:
            return problem
    return None


def _tag_problem(prefix: str, index: int, view: Any, record: bool) -> str | None:
    meta = view.keys.meta
    kind = text(_read(view.redis, "type", meta))
    if kind not in ("none", "hash"):
        return (
            f"the key {meta} is a {kind}, not a hash: another application uses the "
            f"hash tag {view.keys.tag}; choose another prefix"
        )
    have_prefix, have_index = _read(view.redis, "hmget", meta, [FIELD_PREFIX, FIELD_SHARD])
    if have_prefix is None and have_index is None:
        if record:
            view.redis.hset(meta, mapping={FIELD_PREFIX: prefix, FIELD_SHARD: index})
        return None
    if text(have_prefix or b"") != prefix or text(have_index or b"") != str(index):
        shown_index = text(have_index or b"?")
        shown_index = shown_index if len(shown_index) <= 80 else _shown(shown_index)
        return (
            f"the hash tag {view.keys.tag} (shard {index} of prefix {prefix!r}) holds the "
            f"keyspace of prefix {_shown(text(have_prefix or b'?'))} shard "
            f"{shown_index}: another application uses it; choose another prefix"
        )
    return None


def recorded_problem(prefix: str, wanted: int, raw_shards: Any, raw_pending: Any) -> str | None:
    """Why a client with ``wanted`` shards cannot use a keyspace whose shard 0
    ``meta`` holds ``shards`` = ``raw_shards`` and ``reshardTo`` = ``raw_pending``
    (HMGET replies), or None. Nothing recorded (a fresh keyspace, or one whose
    supervisor has not started yet) is no problem: only the record is compared."""
    if raw_pending is not None:
        try:  # garbage: named, not advised as a count (nor printed whole)
            target_count(f"{{{prefix}}}:meta", raw_pending)
        except ShardsMismatchError as exc:
            return str(exc)
        return (
            f"a migration of prefix {prefix!r} to {text(raw_pending)} shards is under way "
            f"or was interrupted: finish it (`redflow migrate --prefix {prefix} "
            f"--shards {text(raw_pending)}` with the same --url), then start again"
        )
    if raw_shards is None:
        return None
    try:
        recorded = _count(f"{{{prefix}}}:meta", raw_shards)
    except ShardsMismatchError as exc:
        return str(exc)
    return None if recorded == wanted else mismatch_message(prefix, recorded, wanted)


def check_recorded(client: Any) -> None:
    """The check :func:`~redflow_mp.create_client` makes: one ``HMGET`` of shard
    0's ``meta``; raises :class:`~redflow_mp.errors.ShardsMismatchError` when the
    recorded count is not ``client``'s or a migration is pending. Reads only."""
    fields = [FIELD_SHARDS, "reshardTo"]
    raw_shards, raw_pending = _read(client.redis, "hmget", client.keys.meta, fields)
    problem = recorded_problem(client.prefix, shard_count(client), raw_shards, raw_pending)
    if problem is not None:
        raise ShardsMismatchError(problem)


async def acheck_recorded(client: Any) -> None:
    """:func:`check_recorded` for the asyncio client."""
    args = (client.keys.meta, [FIELD_SHARDS, "reshardTo"])
    try:
        raw_shards, raw_pending = await client.redis.hmget(*args)
    except ResponseError as exc:
        mapped = read_error(exc, [("hmget", args)])
        if mapped is None:
            raise
        raise mapped from exc
    problem = recorded_problem(client.prefix, shard_count(client), raw_shards, raw_pending)
    if problem is not None:
        raise ShardsMismatchError(problem)


def check_shards(client: Any) -> None:
    """Raise :class:`~redflow_mp.errors.ShardsMismatchError` when
    :func:`shards_problem` finds one."""
    problem = shards_problem(client)
    if problem is not None:
        raise ShardsMismatchError(problem)


def record_shards(client: Any, count: int) -> None:
    """Record ``count`` as the keyspace's shard count (the migration's last step)."""
    client.redis.hset(client.keys.meta, FIELD_SHARDS, count)
