"""Lease keeping: the heartbeat thread of a worker process.

A claimed run carries a lease: its token in the run hash's ``lease`` field and
its expiry (server ms) in the ``leases`` ZSET, ``lease_ms`` ahead.
:class:`LeaseKeeper` renews the leases of every run this process holds every
``lease_ms / 3`` with one fenced script call, and reports back per run: lease
lost (another worker took the run over: stop, write nothing) or cancellation
requested (set ``ctx.cancelled``).

The heartbeat only proves the process lives. A handler stuck in C code holding
the GIL stops this thread too; the supervisor's parent therefore also extends
the leases of runs held by its live children (SPEC §4).

Fork safety: the thread is started lazily by the first :meth:`hold` in the
process that uses it and never survives a fork (a forked child builds its own
keeper); it talks to Redis on its own thread-local connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .errors import TRANSIENT_ERRORS
from .outage import Outage

_CHECK_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, ValueError)

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)


class _Held(msgspec.Struct):
    """A lease held (one a run): a Struct, whose ``__init__`` is C code (a slots
    dataclass's is Python)."""

    token: str
    on_lost: Callable[[], None]
    on_cancel: Callable[[], None]
    on_renewed: Callable[[float], None] | None = None


class LeaseKeeper:
    """Renews the leases of the runs this process holds, from a daemon thread."""

    def __init__(
        self,
        renew: Callable[[int, list[tuple[str, str]]], list[tuple[bool, bool]]],
        lease_ms: int,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self._renew = renew  # Runs.renew: one renew_lease call per shard
        self._lease_ms = lease_ms
        # ``tick`` (a standalone worker's reaping, worker_upkeep.py): called after
        # each beat, every lease/5, under the reaper's stall-guard gap of lease/3.
        self._tick = tick
        beat = lease_ms / (5000.0 if tick is not None else 3000.0)
        # At most hourly: a huge lease (1e17 ms) would overflow Event.wait.
        self._interval = min(max(0.01, beat), 3600.0)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(
        self,
        run_id: str,
        token: str,
        on_lost: Callable[[], None],
        on_cancel: Callable[[], None],
        on_renewed: Callable[[float], None] | None = None,
    ) -> None:
        with self._lock:
            self._held[run_id] = _Held(token, on_lost, on_cancel, on_renewed)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="redflow-lease-keeper", daemon=True
            )
            self._thread.start()

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def held(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(run_id, h.token) for run_id, h in self._held.items()]

    def renew_now(self) -> None:
        """Renew every held lease once (also called by the thread)."""
        with self._lock:
            snapshot = list(self._held.items())
        if not snapshot:
            return
        pairs = [(run_id, h.token) for run_id, h in snapshot]
        sent = time.monotonic()
        results = self._renew(self._lease_ms, pairs)
        for (run_id, h), (kept, cancel) in zip(snapshot, results, strict=True):
            if not kept:
                with self._lock:
                    current = self._held.get(run_id)
                if current is not h:
                    continue  # finished (and released) while the renewal was in flight
                log.warning(
                    "lease of run %s lost: no longer held by this worker (taken back by "
                    "the reaper, maybe by another worker since, or the run is gone from Redis)",
                    run_id,
                )
                self.release(run_id)
                h.on_lost()
            else:
                if h.on_renewed is not None:
                    h.on_renewed(sent)
                if cancel:
                    h.on_cancel()

    def _loop(self) -> None:
        outage = Outage(log, "renewing leases")  # one line per outage, not per beat
        while not self._stop.wait(self._interval):
            try:
                self.renew_now()
                outage.recovered()
            except TRANSIENT_ERRORS as exc:  # fencing protects the run
                outage.failed(exc)
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
            if self._tick is not None:
                try:
                    self._tick()
                except Exception as exc:  # the idle loop's call says more
                    log.debug("maintenance from the lease keeper failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None


def say_lost(logger: logging.Logger, client: Any, run_id: str, then: str) -> None:
    """Warn that a worker lost run ``run_id`` (``then``: what it could not do):
    ``lease lost``, or ``gone from Redis`` when the run's record is gone (deleted,
    evicted, or an empty restart: one read, on this rare path only)."""
    why = "lease lost"
    try:
        shard = client.shard_of_run(run_id)
        if not shard.redis.exists(shard.keys.run(run_id)):
            why = "gone from Redis (deleted, evicted, or Redis restarted without its data)"
    except _CHECK_TROUBLE:
        pass
    logger.warning("run %s: %s %s", run_id, why, then)
