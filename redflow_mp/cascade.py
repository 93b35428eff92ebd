"""Cancel cascade: canceling a run also cancels its unfinished children started by
``step.run_workflow`` / ``run_workflows`` (recorded in ``run:<id>:children`` at
enqueue; children of ``emit_workflow`` are not), recursively.

A library-level walk (each cancel is one ``cancel_run`` script, a chunk of them
per round trip), not a script: a tree of children has no bound. Called by
``Client.cancel_run`` and by the worker when a run ends ``canceled`` (its
children started after the cancel request was sent are caught there).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from .codec import text
from .errors import TRANSIENT_ERRORS

__all__ = [
    "CHUNK",
    "PASS_BUDGET",
    "PENDING_AGE_MS",
    "Budget",
    "Pager",
    "Scan",
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


#: ``scan(parent)``: the parent's ``cascadeGen`` (:func:`gen_text`), its
#: ``cascadeAt`` (text, '' when absent) and a pager of its children set:
#: ``pager(cursor)`` -> (next SSCAN cursor, a page of ids, the set's SCARD).
Pager = Callable[[int], tuple[int, list[bytes], int]]
Scan = Callable[[str], tuple[str, str, Pager]]

#: Passes over one parent's children a walk makes at most when the set grew
#: while it walked it (a child added meanwhile may be missed by a pass).
REWALKS = 3


def _resume_point(gen: str, at: str) -> tuple[int, int | None, str, str, str]:
    """Where a walk of ``gen`` goes on, from ``cascadeAt`` ``at``: (SSCAN cursor,
    SCARD when the cascade began or None, the fingerprint of that cursor's page
    then ('' = not checked: :func:`_print`), the last id sent in that page, the last id of an
    older walk that sorted every child: '' when none)."""
    at_gen, _, rest = at.partition(":")
    if not rest or at_gen != gen:
        return 0, None, "", "", ""
    if ":" not in rest:  # (run ids hold no ':') written by a walk that sorted every child
        return 0, None, "", "", rest
    parts = rest[1:].split(":")
    if len(parts) == 3:  # (without the page's first id)
        parts.insert(2, "")
    try:
        return int(parts[0]), int(parts[1]), parts[2], parts[3], ""
    except (ValueError, IndexError):
        return 0, None, "", "", ""


def cancel_children(
    scan: Scan,
    cancel_many: CancelMany,
    run_id: str,
    reason: str | None,
    done: Callable[[list[tuple[str, str]]], object] | None = None,
    mark: Callable[[str, str, str], object] | None = None,
    limit: int | None = None,
) -> int:
    """Cancel the unfinished children of ``run_id`` (and theirs); returns how many
    cancels were sent (at most ``limit``, and at most :data:`MAX_CASCADE`).
    ``scan(parent)`` reads the parent's generation and ``cascadeAt`` and gives a
    pager of ``run:<parent>:children`` (:data:`Scan`, in the parent's shard);
    ``cancel_many(ids, why, parent)`` sends the ``cancel_run`` scripts of up to
    :data:`CHUNK` children at once (each on its child's shard: with ``shards >
    1`` a child may live in another one) and says which have children. A run in
    the set that is not the parent's child (its ``parentRunId``: a run another
    parent started, or a client, found by an ``idempotency_key``) is left
    running, and so are its children: it is awaited, not owned. ``done(parents)``
    is called at the end with the parents whose children were all sent their
    cancel, each with the generation read before its children were listed (to
    remove them from ``cascades``, unless a later cancel recorded another
    cascade: :func:`forget`, :func:`finish_pending`); a parent left by the cut
    is not among them.

    Resumable, a page at a time: a parent's children are walked an SSCAN page
    after another (each page in id order), and a walk cut in them calls
    ``mark(parent, gen, "!<cursor>:<card>:<print>:<last>")`` with the cursor of
    the page it was in, the set's size when the cascade began, a fingerprint of
    that page (:func:`_print`) and the last child of it sent its cancel (``cascade_at.lua`` stores
    it as the parent's ``cascadeAt``); the next walk of that generation reads
    from that page on, after that child, if that page still has that
    fingerprint; else from the first page again: the cursor was another
    server's (a restart or a failover between two walks: the new one's hash
    seed placed the members elsewhere, and those now before the cursor were
    never sent their cancel).
    Before, each walk listed and sorted the whole set and went on after the last
    id sent: O(children) at each pass of the supervisor's duty (every 5 s), and a
    child added between passes whose id sorted below that id was never sent its
    cancel. A pass may miss a child added while it walks (SSCAN): a walk that
    ends with the set larger than when the cascade began walks it again (at most
    :data:`REWALKS` times; cancels already applied are no-ops). The ``!`` sorts
    before every run id: an older version reading it (a rolling deploy) walks
    from the first child again, as it did before it could resume.

    One cancel per round trip and a scan of every child cost 12.5 s for a parent
    with 100,000 children; a chunk's cancels now share a round trip, and only a
    child with children of its own is scanned."""
    why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
    walk = _Walk(cancel_many, why, MAX_CASCADE if limit is None else min(limit, MAX_CASCADE))
    walk.seen.add(run_id)
    stack = [run_id]
    finished: list[tuple[str, str]] = []
    while stack and walk.sent < walk.bound:
        parent = stack.pop()
        gen, at, pager = scan(parent)
        if walk.parent(parent, gen, at, pager, stack, mark):
            finished.append((parent, gen))
    if done is not None and finished:
        done(finished)
    return walk.sent


class _Walk:
    """One :func:`cancel_children` walk: the cancels sent so far, up to ``bound``."""

    def __init__(self, cancel_many: CancelMany, why: str, bound: int) -> None:
        self.cancel_many, self.why, self.bound = cancel_many, why, bound
        self.sent = 0
        self.seen: set[str] = set()

    def send(self, fresh: list[str], parent: str, stack: list[str]) -> int:
        """Send the cancels of ``fresh`` (children of ``parent``) while the bound
        allows; stack those with children; returns how many were sent."""
        n = 0
        while n < len(fresh) and self.sent < self.bound:
            batch = fresh[n : n + min(CHUNK, self.bound - self.sent)]
            results = self.cancel_many(batch, self.why, parent)
            self.sent += len(batch)
            n += len(batch)
            for child, (status, has_children) in zip(batch, results, strict=True):
                if status is not None and has_children:
                    stack.append(child)
        return n

    def parent(
        self,
        parent: str,
        gen: str,
        at: str,
        pager: Pager,
        stack: list[str],
        mark: Callable[[str, str, str], object] | None,
    ) -> bool:
        """Walk ``parent``'s children from where ``at`` says; True when every one
        was sent its cancel (and the set exists), False when cut (marked)."""
        cursor, began, first, after, legacy = _resume_point(gen, at)
        listed, rounds = False, 0
        while True:
            page_at, page_after = cursor, after
            cursor, raw, card = pager(cursor)
            listed = listed or bool(raw) or card > 0
            began = card if began is None else began
            page = sorted({text(x) for x in raw})
            if first and _print(page) != first:
                # not the page the cut walk was in: the cursor was another server's
                # (a restart, a failover: its hash seed placed the members elsewhere)
                # or the set was resized; from the first page again (sent: no-ops)
                cursor, first, after = 0, "", ""
                continue
            first, names = "", page
            if after:
                names, after = names[bisect_right(names, after) :], ""
            if legacy:  # an older walk sent every id up to this one
                names = [x for x in names if x > legacy]
            fresh = [x for x in names if x not in self.seen]
            self.seen.update(fresh)
            n = self.send(fresh, parent, stack)
            if n < len(fresh) or (cursor and self.sent >= self.bound):  # cut
                if mark is not None and n < len(fresh):
                    last = fresh[n - 1] if n else page_after
                    mark(parent, gen, f"!{page_at}:{began}:{_print(page)}:{last}")
                elif mark is not None and page:  # this page done: the next walk skips it
                    mark(parent, gen, f"!{page_at}:{began}:{_print(page)}:{page[-1]}")
                elif mark is not None:
                    mark(parent, gen, f"!{cursor}:{began}::")
                return False
            if cursor:
                continue
            rounds += 1
            if card <= began or rounds >= REWALKS:
                return listed
            began, legacy = card, ""  # it grew: walk it again (cancels sent are no-ops)


def _print(page: list[str]) -> str:
    """A fingerprint of an SSCAN page (its ids sorted): the same cursor of the
    same set on the same server gives the same page."""
    return hashlib.sha1("\n".join(page).encode(), usedforsecurity=False).hexdigest()[:16]


class Budget:
    """The cancels a pass of the cascade duty may still send, shared by its
    entries and shards (:data:`PASS_BUDGET`)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


#: How old (ms) an entry of ``cascades`` is before the supervisor finishes its
#: cascade: the canceller's own walk normally ends it within a second; an older
#: one is a canceller that died (SIGKILL) or lost Redis between the two.
PENDING_AGE_MS = 10_000
#: Entries of ``cascades`` one :func:`finish_pending` call reads (each walk is
#: bounded by :data:`MAX_CASCADE` cancels, and a pass by its :class:`Budget`).
PENDING_PAGE = 20
#: Cancels one pass of the cascade duty sends at most, all entries and shards
#: together (about 2 s of the arbiter's loop by the scale review's 0.4 ms a
#: cancel); a cascade cut by it goes on at the next pass, where it stopped.
PASS_BUDGET = 5_000


def finish_pending(
    runs: Any,
    store: Any,
    age_ms: int = PENDING_AGE_MS,
    page: int = PENDING_PAGE,
    budget: Budget | None = None,
) -> list[str]:
    """Finish the cancel cascades that their canceller left unfinished: up to
    ``page`` of the entries of ``store``'s (a shard's) ``cascades`` older than
    ``age_ms`` (by Redis's clock). A run still ``canceled`` gets its cascade
    (``runs.cancel_children``, which removes the entry); one that is not any more
    (resumed, or gone) is just removed. Returns the runs whose cascade this ran.
    With ``budget``, the walks send at most ``budget.left`` cancels (taken from
    it); the entries it did not reach stay for the next call.

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
    left: list[str] = []  # cut: the next call goes on with them
    gens: list[tuple[str, str]] = []
    for run_id, got in zip(ids, fields, strict=True):
        if budget is not None and budget.left <= 0:
            break  # the rest wait for the next pass
        status, gen = got if isinstance(got, list) else (None, None)
        gens.append((run_id, gen_text(gen)))
        if isinstance(status, bytes) and status == b"canceled":
            limit = MAX_CASCADE if budget is None else min(budget.left, MAX_CASCADE)
            try:
                sent = runs.cancel_children(run_id, None, limit)
            except TRANSIENT_ERRORS:
                raise  # BUSY (a ResponseError too) is not a broken key: the walk stops
            except ResponseError:  # its children key of another type (the key check names it)
                continue
            walked.append(run_id)
            if budget is not None:
                budget.left -= sent
            if sent >= limit:  # cut: its walk goes on where it stopped (cascadeAt)
                left.append(run_id)
    # Removed here too: a walk that found no child to cancel removes nothing. Each
    # only if no cancel recorded another cascade since the read above (a resume
    # and a new cancel meanwhile: that one's canceller may have died too).
    forget(store, [pair for pair in gens if pair[0] not in left])
    if left:  # behind the other old ones (still old): a huge tree starves none
        store.redis.zadd(keys.cascades, dict.fromkeys(left, cutoff), xx=True, gt=True)
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
