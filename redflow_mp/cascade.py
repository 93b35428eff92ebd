"""Cancel cascade: canceling a run also cancels its unfinished children started by
``step.run_workflow`` / ``run_workflows`` (recorded in ``run:<id>:children`` at
enqueue; children of ``emit_workflow`` are not), recursively.

A library-level walk (each cancel is one ``cancel_run`` script, a chunk of them
per round trip), not a script: a tree of children has no bound. Called by
``Client.cancel_run`` and by the worker when a run ends ``canceled`` (its
children started after the cancel request was sent are caught there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from .codec import text
from .errors import TRANSIENT_ERRORS

__all__ = [
    "CHUNK",
    "PENDING_AGE_MS",
    "cancel_children",
    "finish_pending",
    "forget",
    "forget_args",
    "gen_text",
    "send_cancels",
]

# A bound on one walk: a runaway tree is cut here (the rest stays as it is).
MAX_CASCADE = 100_000
#: Children canceled in one round trip (one pipeline of cancel_run scripts).
CHUNK = 500

#: ``cancel_many(ids, why, parent)``: per id, (its status after the cancel or None
#: when unknown, finished already or not ``parent``'s child, whether it has
#: children of its own).
CancelMany = Callable[[list[str], str, str], list[tuple[str | None, bool]]]


def gen_text(raw: object) -> str:
    """A run's ``cascadeGen`` as read (bytes, or None when absent) as the text
    ``forget_cascades.lua`` compares."""
    return text(raw) if isinstance(raw, bytes | str) else ""


def forget_args(tag: str, walked: list[tuple[str, str]]) -> tuple[str, ...]:
    """The ``ARGV`` of ``forget_cascades``: the tag, then each run and its generation."""
    return (tag, *[x for pair in walked for x in pair])


def forget(store: Any, walked: list[tuple[str, str]]) -> None:
    """Remove the ``cascades`` entries of ``walked`` (run, ``cascadeGen`` read before
    its children were listed) of ``store``'s shard, each only if no cancel recorded
    another cascade of that run since (``forget_cascades.lua``)."""
    if walked:
        keys = store.keys
        store.scripts.run(
            "forget_cascades", (keys.cascades,), forget_args(keys.tag, walked), retry=True
        )


def cancel_children(
    scan: Callable[[str], tuple[str, list[bytes]]],
    cancel_many: CancelMany,
    run_id: str,
    reason: str | None,
    done: Callable[[list[tuple[str, str]]], object] | None = None,
) -> int:
    """Cancel the unfinished children of ``run_id`` (and theirs); returns how many
    cancels were sent. ``scan(parent)`` reads the parent's ``cascadeGen``
    (:func:`gen_text`), then lists ``run:<parent>:children`` (in the parent's
    shard), ``cancel_many(ids, why, parent)`` sends the ``cancel_run`` scripts of
    up to :data:`CHUNK` children at once (each on its child's shard: with
    ``shards > 1`` a child may live in another one) and says which have children.
    A run in the set that is not the parent's child (its ``parentRunId``: a run
    another parent started, or a client, found by an ``idempotency_key``) is
    left running, and so are its children: it is awaited, not owned.
    ``done(parents)`` is called at the end with the parents whose children were
    all sent their cancel, each with the generation read before its children
    were listed (to remove them from ``cascades``, unless a later cancel
    recorded another cascade: :func:`forget`, :func:`finish_pending`); a parent
    left by the :data:`MAX_CASCADE` cut is not among them.

    One cancel per round trip and a scan of every child cost 12.5 s for a parent
    with 100,000 children; a chunk's cancels now share a round trip, and only a
    child with children of its own is scanned."""
    why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
    stack = [run_id]
    seen = {run_id}
    sent = 0
    finished: list[tuple[str, str]] = []
    while stack and sent < MAX_CASCADE:
        parent = stack.pop()
        fresh: list[str] = []
        gen, listed = scan(parent)
        for raw in listed:
            child = text(raw)
            if child not in seen:
                seen.add(child)
                fresh.append(child)
        whole = True
        for at in range(0, len(fresh), CHUNK):
            batch = fresh[at : at + CHUNK][: MAX_CASCADE - sent]
            whole = len(batch) == len(fresh[at : at + CHUNK])
            if not batch:
                break
            results = cancel_many(batch, why, parent)
            sent += len(batch)
            for child, (status, has_children) in zip(batch, results, strict=True):
                if status is not None and has_children:
                    stack.append(child)
            if not whole:
                break
        if whole and listed:
            finished.append((parent, gen))
    if done is not None and finished:
        done(finished)
    return sent


#: How old (ms) an entry of ``cascades`` is before the supervisor finishes its
#: cascade: the canceller's own walk normally ends it within a second; an older
#: one is a canceller that died (SIGKILL) or lost Redis between the two.
PENDING_AGE_MS = 10_000
#: Entries of ``cascades`` one :func:`finish_pending` call reads (each walk is
#: bounded by :data:`MAX_CASCADE` cancels).
PENDING_PAGE = 20


def finish_pending(
    runs: Any, store: Any, age_ms: int = PENDING_AGE_MS, page: int = PENDING_PAGE
) -> list[str]:
    """Finish the cancel cascades that their canceller left unfinished: up to
    ``page`` of the entries of ``store``'s (a shard's) ``cascades`` older than
    ``age_ms`` (by Redis's clock). A run still ``canceled`` gets its cascade
    (``runs.cancel_children``, which removes the entry); one that is not any more
    (resumed, or gone) is just removed. Returns the runs whose cascade this ran.

    ``cascades`` is written by the script that ends a run with children
    ``canceled`` (``finalize`` in ``lua/_lib.lua``), in the same atomic call: the
    canceller (``Client.cancel_run``, a worker) walks the children in later
    calls, so a canceller that died in between left them running for good."""
    keys = store.keys
    secs, micros = store.redis.time()
    cutoff = int(secs) * 1000 + int(micros) // 1000 - age_ms
    ids = [text(x) for x in store.redis.zrangebyscore(keys.cascades, "-inf", cutoff, 0, page)]
    if not ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(keys.run(run_id), "status", "cascadeGen")
    fields = pipe.execute(raise_on_error=False)
    walked: list[str] = []
    left: list[str] = []  # cut at MAX_CASCADE: the next call walks them again
    gens: list[tuple[str, str]] = []
    for run_id, got in zip(ids, fields, strict=True):
        status, gen = got if isinstance(got, list) else (None, None)
        gens.append((run_id, gen_text(gen)))
        if isinstance(status, bytes) and status == b"canceled":
            try:
                sent = runs.cancel_children(run_id)
            except TRANSIENT_ERRORS:
                raise  # BUSY (a ResponseError too) is not a broken key: the walk stops
            except ResponseError:  # its children key of another type (the key check names it)
                continue
            walked.append(run_id)
            if sent >= MAX_CASCADE:
                left.append(run_id)
    # Removed here too: a walk that found no child to cancel removes nothing. Each
    # only if no cancel recorded another cascade since the read above (a resume
    # and a new cancel meanwhile: that one's canceller may have died too).
    forget(store, [pair for pair in gens if pair[0] not in left])
    return walked


def positions_by_shard(ids: list[str], shard_of: Callable[[str], Any]) -> list[list[int]]:
    """The positions in ``ids`` grouped by the index of the shard ``shard_of`` names
    (one pipeline of cancels per group), in first-seen order."""
    groups: dict[int, list[int]] = {}
    for i, run_id in enumerate(ids):
        groups.setdefault(shard_of(run_id).index, []).append(i)
    return list(groups.values())


def send_cancels(transport: Any, redis: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """A chunk of the cascade (each ``cancel_run`` call followed by the ``SCARD`` of
    the run's children) in one round trip; the replies, an error reply as its
    exception. With ``durability``: ``Transport.call_waited`` (the WAIT's reply may
    take ``durability_wait_ms`` plus the socket timeout; never resent), whose
    :class:`NotReplicatedError` ends the walk: the cancels were applied on the
    master, and the cascade entry of a canceled parent stays for the supervisor's
    :func:`finish_pending` (the cancels one by one would wait again, each). A
    redis-py pipeline read that WAIT with the 5 s socket timeout and resent the
    chunk (its retries), then each cancel alone."""
    if transport.wait_args is not None:
        return list(transport.call_waited(commands))
    with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))
