"""The worker's waits for work and its checks of keys of the wrong type, mixed
into :class:`redflow_mp.worker.Worker`: the blocking wait on the queues' bells
(BLPOP), past ``MANY_QUEUES`` queues the check that every ready set is empty,
a bell cut back to ``BELL_CAP``, and the queues whose ready set is left out
(``keycheck.Bench``)."""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from .errors import TRANSIENT_ERRORS
from .keycheck import Bench, shared_keys
from .outage import Outage
from .queueset import MANY_QUEUES
from .registry import Registry
from .shardset import Shard
from .transport import is_busy, is_oom, is_read_only
from .worker_upkeep import IDLE_EVERY_S, Upkeep

__all__ = ["BELL_CAP", "WorkerWaits"]

#: Tokens a bell holds at most when only our scripts ring it (``BELL_CAP`` in _lib.lua).
BELL_CAP = 64

_TRIM_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, ResponseError)

log = logging.getLogger("redflow_mp.worker")


class WorkerWaits:
    """``_idle`` and the bench checks; needs the worker's state (see Worker)."""

    queues: tuple[str, ...]
    registry: Registry
    block_timeout: float
    home: Shard
    _others: tuple[Shard, ...]
    _upkeep: Upkeep | None
    _bench: Bench
    _bells: list[str]
    _bell_shard: dict[bytes, Shard]
    _rung: Shard | None
    _woken: bool
    _woken_by: bytes | str | None
    _timed_out: bool
    _scan: bool
    _wake_key: str
    _ready_keys: list[list[str]]
    _idling: Outage

    @property
    def stopping(self) -> bool:
        raise NotImplementedError

    def _nap(self, seconds: float) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        """Wait for a bell; past MANY_QUEUES queues, wait again while the waits time
        out and nothing is ready (``_nothing_ready``) instead of claiming."""
        self._wait()
        while self._nothing_ready():
            self._wait()

    def _wait(self) -> None:
        timeout = self.block_timeout
        if self._upkeep is not None:
            self._upkeep.idle()
            timeout = min(timeout, IDLE_EVERY_S)
        try:
            popped = self.home.redis.blpop(self._bench.keep(self._bells), timeout=timeout)
            self._woken = popped is not None
            self._timed_out = self._scan = popped is None
            self._woken_by = popped[0] if popped is not None else None
            if popped is not None and self._bell_shard:
                key = popped[0]
                self._rung = self._bell_shard.get(key.encode() if isinstance(key, str) else key)
            self._idling.recovered()
        except TRANSIENT_ERRORS as exc:
            self._idling.failed(exc, 0.5)
            self._nap(0.5)
        except ResponseError as exc:  # WRONGTYPE: a bell of another type; BUSY, OOM...
            if is_busy(exc) or is_read_only(exc) or is_oom(exc):  # BLPOP is a write
                self._idling.failed(exc, 0.5)
                self._nap(0.5)
                return
            if not self._bench.check(self.home.redis, self._bells[:-1], "list", "bell"):
                raise
            log.debug("idle wait refused: %s", exc)

    def _nothing_ready(self) -> bool:
        """After a wait no bell ended, whether every ready set served is empty (one
        EXISTS per shard): then the safety-net claim after each wait is skipped. Past
        MANY_QUEUES queues only, where it costs O(queues) (1,000 queues: 262 us
        against 9 us for the EXISTS). Never when told to stop (the loop must see it)."""
        if not self._timed_out or len(self.queues) <= MANY_QUEUES or self.stopping:
            return False
        self._timed_out = False
        shards = (self.home, *self._others)
        try:
            return not any(
                s.redis.exists(*keys) for s, keys in zip(shards, self._ready_keys, strict=True)
            )
        except TRANSIENT_ERRORS:
            return False  # the claim finds out (and backs off)

    def _trim_bell(self, key: bytes | str) -> None:
        """Cut a bell back to ``BELL_CAP``: tokens pushed past it (by hand, another
        program) wake idle workers for nothing, each one a claim, until drained."""
        self._woken_by = None
        if key == self._wake_key or key == self._wake_key.encode():
            return
        try:
            self.home.redis.ltrim(key, 0, BELL_CAP - 1)
        except _TRIM_TROUBLE as exc:
            log.debug("could not trim bell %r: %s", key, exc)

    def _claimable(self) -> tuple[str, ...]:
        """The queues whose ready sets (in every shard) are not left out."""
        shards = (self.home, *self._others)
        return tuple(
            q
            for q in self.queues
            if not any(self._bench.benched(s.keys.q_ready(q)) for s in shards)
        )

    def _name_shared_key(self) -> bool:
        """After a claim met WRONGTYPE and no ready set is at fault: name the
        prefix-wide key that is (logged once per recheck period), if one is."""
        found = False
        for shard in (self.home, *self._others):
            for kind, keys in shared_keys(shard.keys, [wf.name for wf in self.registry]).items():
                wrong = self._bench.check(shard.redis, keys, kind, "shared", "no run is claimed")
                found = bool(wrong) or found
        return found

    def _bench_ready_sets(self) -> bool:
        """After a claim met WRONGTYPE: leave out the queues whose ready set is not a
        sorted set (named in the log); False when none is at fault."""
        found = False
        for shard in (self.home, *self._others):
            keys = [shard.keys.q_ready(q) for q in self.queues]
            found = bool(self._bench.check(shard.redis, keys, "zset", "ready set")) or found
        return found
