"""Cron entries after the Redis clock went back.

The next fire time of a cron entry is computed from the Redis clock when it
fires (``fire_cron.lua``) and stored as an absolute time in ``cron:next``. A
clock that ran ahead and then went back (a host booted with a wrong clock and
set right by NTP, a VM restored from a snapshot, a failover to a server whose
clock is behind the old one's) left every entry that fired meanwhile scheduled
from the clock that was ahead: a per-minute cron fired at a clock a day ahead
waited a day, firing nothing, and a registry sync keeps a stored fire time of an
unchanged schedule.

:func:`rewind_page` reads a page of ``cron:next`` and the entries' definitions,
computes each schedule's first fire time after the server's time, and has
``rewind_crons.lua`` move the entries stored later than that back to it (fenced
by the leader token; never to a fire time already fired, nor to the entry's
latest skipped one: ``cron:skipped``). The supervisor's cron
duty walks all entries when it becomes the leader and when the server's clock
ran back against its own monotonic clock. Cost per page: one pipelined ``TIME``,
``ZRANGE`` and ``HMGET`` of at most :data:`PAGE` entries, a next fire time per
entry (croniter: about 0.2 ms), one script call with a ZSCORE per entry moved.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .codec import text
from .cron import CronDef, next_fire_ms

__all__ = ["PAGE", "rewind_page"]

#: Cron entries read per call.
PAGE = 200

_decoder = msgspec.json.Decoder(CronDef)


def rewind_page(
    store: Any, leader_token: str, offset: int, page: int = PAGE
) -> tuple[int, list[str]] | None:
    """One page, from rank ``offset``, of ``store``'s (a shard's) ``cron:next``:
    the entries whose next fire time lies beyond the first one their schedule
    has after the server's time are moved back to it. Returns (the offset of the
    next page, 0 after the last one; the cron ids moved), or None when this is
    not the leader (nothing written)."""
    keys = store.keys
    with store.redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrange(keys.cron_next, offset, offset + page - 1, withscores=True)
        (seconds, micros), entries = pipe.execute()
    if not entries:
        return 0, []
    now = int(seconds) * 1000 + int(micros) // 1000
    ids = [text(member) for member, _ in entries]
    raws = store.redis.hmget(keys.cron_def, ids)
    pairs: list[tuple[str, int, str]] = []
    for cron_id, (_, score), raw in zip(ids, entries, raws, strict=True):
        if raw is None or not score > now:
            continue  # no definition (the tick removes it), or due already
        try:
            cdef = _decoder.decode(raw)
            fire = next_fire_ms(cdef.expression, cdef.timezone, now)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            continue  # unreadable here: the cron tick names it
        if fire < score:
            pairs.append((cron_id, fire, cdef.workflow))
    following = offset + len(entries) if len(entries) == page else 0
    if not pairs:
        return following, []
    moved = store.scripts.rewind_crons(leader_token, pairs)
    if moved is None:
        return None
    return following, moved
