"""The fenced cron leader lock (``lock:cron``) of every shard: acquire, renew, release.

Only the leader fires crons (``crontick.py``); ``fire_cron`` compares the lock's
token, so a leader whose lock expired and was taken over is fenced out. The
supervisor's leader duty ticks it; the reaper, promoter and retention are
idempotent and need no lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import redis
from redis.exceptions import LockError

from .codec import text
from .errors import TRANSIENT_ERRORS
from .ids import new_token
from .store import stores

__all__ = ["LeaderLock"]

# The logger of maintenance.py, where this code lived: log configurations and
# filters that name "redflow_mp.maintenance" keep seeing its lines.
log = logging.getLogger("redflow_mp.maintenance")


def _wrong_type(exc: redis.ResponseError) -> bool:
    return "WRONGTYPE" in str(exc)


#: How much further ahead than its holder's TTL (or, for a token of a version that
#: did not name it, than this supervisor's TTL plus a minute) a lock may expire
#: before a contender moves its expiry to that TTL from now (:data:`_UNSTICK`).
CLOCK_SLACK_MS = 2000
UNNAMED_SLACK_MS = 60000

#: A lock a contender could not take: when it expires further ahead than its
#: holder's TTL (named by its token, "<token>/<ttl ms>") allows, it was set or
#: renewed while the Redis clock ran ahead and went back since (Redis expires a
#: key at an absolute time on its own clock; a replica is sent that time), and
#: its holder, if gone, kept every supervisor from leading that much longer (a
#: day ahead: no cron fired for a day). Its expiry becomes the holder's TTL from
#: now: a live holder renews it as before, a dead one's lapses.
#: KEYS[1] the lock; ARGV[1] the TTL of a token that names none, ARGV[2] its
#: slack, ARGV[3] the slack of a named TTL. Reply: 1 when moved, else 0.
_UNSTICK = """
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then return 0 end
local ttl, slack = tonumber(string.match(v, '/(%d+)$')), tonumber(ARGV[3])
if not ttl then ttl, slack = tonumber(ARGV[1]), tonumber(ARGV[2]) end
if redis.call('PTTL', KEYS[1]) > ttl + slack then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
"""


class LeaderLock:
    """The fenced cron leader lock (``lock:cron``): acquire, renew, release.

    A redis-py :class:`redis.lock.Lock` on our hash-tagged key (one key, so it
    stays Cluster-legal) holding our token: acquired with ``SET NX PX``,
    renewed with ``reacquire()`` (back to the full TTL, only while the key
    still holds our token), released with ``release()`` (deletes the key only
    if it holds our token). ``fire_cron`` compares the same token, so a leader
    whose lock expired and was taken over is fenced out of cron. Its scripts
    are redis-py's (EVALSHA, loaded on NOSCRIPT), not our function library:
    they touch only this key and need nothing of the run keyspace.

    With several shards, leadership is shard 0's ``lock:cron``; the leader
    then also takes, with the same token, the ``lock:cron`` of every other
    shard (the key that shard's ``fire_cron`` compares, in that shard's slot),
    and fires a shard's crons only while it holds that shard's copy
    (:meth:`holds`). A leader that lost shard 0's lock releases its copies at its
    next tick; otherwise a new leader gets a shard's copy once the old leader's
    copy expired (at most ``ttl_ms`` later), so fencing stays exact per shard.
    """

    def __init__(self, client: Any, ttl_ms: int) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        # The TTL rides in the token: a contender can tell a lock left too far
        # ahead by a Redis clock that went back from a holder's longer TTL.
        self.token = f"{new_token()}/{ttl_ms}"
        self.held = False
        # thread_local=False: the token is this object's, whichever thread ticks.
        self._locks = [
            view.redis.lock(
                view.keys.lock_cron,
                timeout=ttl_ms / 1000.0,
                blocking=False,
                thread_local=False,
            )
            for view in stores(client)
        ]
        self._lock = self._locks[0]
        self._held = [False] * len(self._locks)
        self._unstick = [view.redis.register_script(_UNSTICK) for view in stores(client)]

    def holds(self, shard: int) -> bool:
        """Whether this leader may fire the crons of shard ``shard`` now."""
        return self.held and self._held[shard]

    def tick(self, guard: Callable[[int], AbstractContextManager[Any]] | None = None) -> bool:
        """Acquire or renew; returns whether this process is the leader now.
        ``guard(i)``: wraps the calls of lock copy ``i`` > 0 (the supervisor's
        ``ServerStalls.call``: a copy whose server stalled this tick is not called,
        its error kept like a refusal's)."""
        if self.held:
            try:
                self._lock.reacquire()
            except LockError:  # the key expired or holds another leader's token
                self.held = False
                log.warning("cron leadership lost")
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                # Overwritten with another type under us: no token of ours is
                # there any more, as above. Raised, it left this supervisor the
                # leader for good (foreign_keys skips a lock it holds: the key was
                # never named) and every due cron failed at every tick.
                self.held = False
                log.warning("cron leadership lost: %s holds another type of value", self._lock.name)
        else:
            self.held = self._acquire(0)
            if self.held:
                log.info("became cron leader")
        self._held[0] = self.held
        for i in range(1, len(self._locks)):
            if self.held:
                try:
                    with guard(i) if guard is not None else contextlib.nullcontext():
                        self._held[i] = self._tick_copy(i)
                except TRANSIENT_ERRORS:  # that shard down: its crons wait, not the others'
                    self._held[i] = False
            elif self._held[i]:  # leadership lost: hand the copy back at once
                with contextlib.suppress(LockError):
                    self._locks[i].release()
                self._held[i] = False
        return self.held

    def _tick_copy(self, i: int) -> bool:
        lock = self._locks[i]
        if self._held[i]:
            try:
                lock.reacquire()
                return True
            except LockError:
                pass
            except redis.ResponseError as exc:  # another type (see tick)
                if not _wrong_type(exc):
                    raise
                return False
        return self._acquire(i)

    def _acquire(self, i: int) -> bool:
        """Take lock ``i``; when another token holds it, bring an expiry left too
        far ahead by a Redis clock that went back to its holder's TTL (_UNSTICK)."""
        lock = self._locks[i]
        if lock.acquire(token=self.token):
            return True
        moved = self._unstick[i](
            keys=[lock.name], args=[self.ttl_ms, UNNAMED_SLACK_MS, CLOCK_SLACK_MS]
        )
        if moved:
            log.warning(
                "cron leader lock %s expired further ahead than its holder's TTL (the Redis "
                "clock went back?): it now expires within that TTL",
                lock.name,
            )
        return False

    def foreign_keys(self) -> list[tuple[str, str]]:
        """The lock keys this lock lacks that no leader can hold either, with what
        they hold: a key of another type, or a string without expiry (a leader
        sets ``PX`` and renews it, so its lock always has one). Written by hand or
        by another program, such a key keeps every supervisor from leading (no
        cron fires) until it is removed; nothing else would say so."""
        views = stores(self.client)
        out = []
        for i, lock in enumerate(self._locks):
            if self.holds(i):
                continue
            with views[i].redis.pipeline(transaction=False) as pipe:
                pipe.type(lock.name)
                pipe.pttl(lock.name)
                kind, pttl = pipe.execute()
            kind = text(kind)
            if kind not in ("none", "string"):
                out.append((str(lock.name), f"a {kind}"))
            elif kind == "string" and int(pttl) == -1:
                out.append((str(lock.name), "a string without expiry"))
        return out

    def release(self) -> None:
        if self.held:
            for lock, held in zip(self._locks, self._held, strict=True):
                if held:
                    with contextlib.suppress(LockError):  # expired: nothing to hand back
                        lock.release()
            self.held = False
            self._held = [False] * len(self._locks)
