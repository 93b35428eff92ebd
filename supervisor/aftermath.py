"""What becomes of a dead child's runs: the arbiter's side of run recovery.

When a child is reaped, its board entry still says which runs it held (with
their lease tokens) and which claim it had in flight; :class:`Aftermath` hands
them to the library (:mod:`redflow_mp.recovery`), which decides what each run
becomes, counts what went back, and starts ``on_failure`` (in a short-lived
process of its own, never in the arbiter) for a run the supervisor failed: a
run over ``max_run_crashes``, or a timeout on its last attempt.

Put-backs wait in a queue (:class:`PutBack`, one per call: the aborted run, each
run left behind, the claim in flight, one per shard), tried from the arbiter's
loop, shard by shard: each shard has its own backoff (a :class:`_Lane`) and its
own probe. While Redis stalls, each recovery call blocked the loop two socket
timeouts (about 10 s), and one per dead child: signals, kill deadlines and
other exits waited, and a call that gave up dropped the run to the reaper (its
crash never charged). Now:

- with one shard, while the duties find Redis out of reach (``Schedule.down``:
  the last one failed for the network, or one failed for Redis trouble has not
  gone through since) nothing is sent nor probed, and the queue is tried at
  once when they go through again;
- before a shard's calls, :class:`~supervisor.probe.Probe` PINGs its server
  with a short bound (``PROBE_TIMEOUT_S``; each server once a round, whatever
  number of shards it holds; a round stops once it blocked that bound, the
  servers not reached are probed first next round, their put-backs still due;
  the stop's last try reaches them all); no answer: nothing is sent to that shard, its
  put-backs wait (tried again after ``FIRST_RETRY_S`` doubling to
  ``MAX_RETRY_S``), and those of the shards that answer are sent at once;
- a call that fails for transient trouble (the network, a timeout, OOM, ...)
  stays queued and is sent again later with the same lease token: the scripts
  are fenced by it and resend-safe (``finalize_run.lua``'s ``doneToken``), so a
  crash is charged once, never twice; once the reaper took the run (its lease
  lapsed), the call finds the lease not ours and changes nothing;
- other errors (a key of another type) are logged and dropped, as before;
- at the end (:meth:`Aftermath.finish`, in the drain's bound) the queue is tried
  once more, and what is left is logged: a reaper puts it back once its lease lapses.

The probe bounds what a put-back costs the loop while a shard is known
unreachable; a stall that begins between the probe and the call still blocks
that one call. With ``shards > 1`` the duties' ``Schedule.down`` holds nothing:
it says some shard failed, not which; held on it, one shard down held the
put-backs of every shard, a run of a healthy shard waiting for the reaper, its
crash never charged (a run that kills its worker escaped ``max_run_crashes``).
Before the per-shard probe, ``shards > 1`` sent each put-back at once, and a
stalled shard blocked the loop about 10 s per dead child. Not probed: a run
failed here whose parent lives in another shard is followed, in the same call,
by a kick to the parent's shard (``xshard.py``); if that shard stalls, the kick
blocks that call, then is logged (the parent's recheck timer covers it).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redflow_mp import hookdue, recovery
from redflow_mp.client import Client
from redflow_mp.recovery import Abort, HeldRun, Recovered
from redflow_mp.registry import Registry
from redflow_mp.store import stores

from .board import BoardEntry
from .child import ChildSpec
from .children import Child, Helpers
from .exposition import MetricsStore
from .probe import Probe

__all__ = ["FIRST_RETRY_S", "MAX_RETRY_S", "Aftermath", "PutBack"]

log = logging.getLogger("redflow_supervisor")

#: The first wait after a put-back that Redis did not take, then doubled up to MAX_RETRY_S.
FIRST_RETRY_S = 0.25
MAX_RETRY_S = 2.0


@dataclass
class PutBack:
    """One recovery call for a dead child, kept until Redis took it."""

    kind: str  # "abort" | "run" | "claim"
    worker: int  # the dead child's slot
    cause: str
    run: HeldRun | None = None  # abort, run
    reason: Abort | None = None  # abort
    timeout: float = 0.0  # abort
    stopping: bool = False  # run
    crash: bool = False  # run: charged a crash
    token: str = ""  # claim: its lease token
    lease_ms: int = 0  # claim
    max_crashes: int = 0
    hooked: tuple[str, ...] = ()
    registry: Registry | None = None  # the workflows when it died (on_failure)
    failed_once: bool = False
    shard: int | None = None  # claim: the shard looked in (None: every shard)

    def what(self) -> str:
        if self.run is not None:
            return f"run {self.run.run_id}"
        return f"the run worker {self.worker} was claiming"


@dataclass
class _Lane:
    """One shard's put-backs: when they are tried again, and since when they wait."""

    retry_at: float = 0.0
    delay: float = FIRST_RETRY_S
    waiting_since: float | None = None  # its server did not answer the probe
    held_by_duties: bool = False  # one shard: the queue waits for a duty to go through


class Aftermath:
    """Recovers the runs of dead children for one arbiter."""

    def __init__(
        self,
        client: Client,
        helpers: Helpers,
        helper_spec: Callable[[], ChildSpec],
        metrics: MetricsStore,
        known_down: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.helpers = helpers
        self.helper_spec = helper_spec
        self.metrics = metrics
        self.probe = Probe(client)
        # shards > 1: the duties' "down" holds nothing (the module's docstring)
        self.spread = len(stores(client)) > 1
        self._known_down = known_down  # the duties' last call failed for the network
        self.pending: deque[PutBack] = deque()
        self._clock = clock
        self._lanes: dict[int, _Lane] = {}

    def child_died(
        self,
        child: Child,
        entry: BoardEntry,
        cause: str,
        *,
        registry: Registry,
        stopping: bool,
        max_crashes: int,
        lease_ms: int,
    ) -> None:
        """Queue the put-backs of ``child`` and try them now (unless Redis was
        found unreachable a moment ago): record the run it was aborting, put back
        the others (charging the one it was executing a crash unless the
        supervisor stopped it), then the claim it had in flight. A run failed here
        whose workflow has ``on_failure`` is recorded as due with its failure
        (``redflow_mp.hookdue``), and its helper removes the entry once the hook
        returned."""
        hooked = tuple(hookdue.hooked(registry))
        jobs: list[PutBack] = []
        if child.abort is not None:
            reason, target, _ = child.abort
            jobs.append(
                PutBack(
                    "abort",
                    child.slot,
                    cause,
                    run=HeldRun(target.run_id, target.token),
                    reason=Abort[reason.name],
                    timeout=target.timeout,
                    hooked=hooked,
                )
            )
        charge = not stopping and child.abort is None
        left = child.left_behind(entry.held)
        for position, h in enumerate(reversed(left)):  # innermost first, as recover_runs
            jobs.append(
                PutBack(
                    "run",
                    child.slot,
                    cause,
                    run=HeldRun(h.run_id, h.token),
                    stopping=stopping,
                    crash=charge and position == 0,
                    max_crashes=max_crashes,
                    hooked=hooked,
                )
            )
        # The child publishes each claim's lease token before sending it: a death
        # between the claim's reply and the board push leaves a run found by it.
        if entry.claim_token:
            for shard in range(len(self.client.shards)):  # its claim may be in any shard
                jobs.append(
                    PutBack(
                        "claim",
                        child.slot,
                        cause,
                        token=entry.claim_token,
                        lease_ms=lease_ms,
                        shard=shard,
                    )
                )
        for job in jobs:
            job.registry = registry
        self.pending.extend(jobs)
        if jobs:
            self.work()

    def next_due(self) -> float:
        """When the loop should try the queue again (inf: nothing waits): at once
        when the duties found Redis again after they had held the queue."""
        if not self.pending:
            return float("inf")
        waiting = {self._shard_of(job) for job in self.pending}
        return min(0.0 if self._came_back(k) else self._lane(k).retry_at for k in waiting)

    def _lane(self, shard: int) -> _Lane:
        lane = self._lanes.get(shard)
        if lane is None:
            lane = self._lanes[shard] = _Lane()
        return lane

    def _shard_of(self, job: PutBack) -> int:
        if job.run is not None:
            return self.client.shard_of_run(job.run.run_id).index
        return job.shard or 0

    def _came_back(self, shard: int) -> bool:
        return self._lane(shard).held_by_duties and not self._known_down()

    def work(self, interrupted: Callable[[], bool] | None = None, *, force: bool = False) -> None:
        """Send the queued put-backs, oldest first, of each shard whose server
        answers the probe; a shard's stop at its first transient failure (kept,
        tried again after a backoff) holds only that shard's. Stop when
        ``interrupted()`` (a signal waits), after at least one call."""
        if not self.pending:
            return
        now = self._clock()
        due = set()
        for k in {self._shard_of(job) for job in self.pending}:
            lane = self._lane(k)
            if now < lane.retry_at and not force and not self._came_back(k):
                continue
            lane.held_by_duties = not force and not self.spread and self._known_down()
            if lane.held_by_duties:
                self._unanswered(lane, k, now, "Redis does not answer the duties")
                continue
            due.add(k)
        if not due:
            return
        # a shard in neither: its server not reached in the probe's budget, still due
        up, down = self.probe.answering(due, whole=force)
        for k in down:
            self._unanswered(self._lane(k), k, now, "Redis does not answer")
        self._send_queue(up, interrupted)

    def _send_queue(self, up: set[int], interrupted: Callable[[], bool] | None) -> None:
        """Send the queued put-backs of the shards in ``up``, oldest first."""
        kept: deque[PutBack] = deque()
        sent = 0
        while self.pending:
            if sent and interrupted is not None and interrupted():
                break
            job = self.pending.popleft()
            k = self._shard_of(job)
            if k not in up:
                kept.append(job)
                continue
            try:
                error = self._send(job)
            except Exception:  # a bug must not end the parent, nor block the queue
                log.exception("%s: put-back failed; a reaper puts it back", job.what())
                error = ""
            sent += 1
            if error:
                if not job.failed_once:
                    job.failed_once = True
                    log.warning("%s: not put back yet (%s); trying again", job.what(), error)
                self._unanswered(self._lane(k), k, self._clock(), error)
                up.discard(k)  # the rest of that shard waits with it
                kept.append(job)
        kept.extend(self.pending)
        self.pending = kept
        waiting = {self._shard_of(job) for job in kept}
        for k in up - waiting:
            self._answered(self._lane(k), k)

    def _answered(self, lane: _Lane, shard: int) -> None:
        if lane.waiting_since is not None:
            log.info(
                "Redis answers again%s: the dead workers' runs were put back after %.1f s",
                f" (shard {shard})" if self.spread else "",
                self._clock() - lane.waiting_since,
            )
        lane.waiting_since = None
        lane.delay = FIRST_RETRY_S
        lane.retry_at = 0.0

    def finish(self, *, send: bool = True) -> None:
        """At the supervisor's end: try the queue once more (``send``), then log
        what is left to the reaper."""
        if send and self.pending:
            self.work(force=True)
        for job in self.pending:
            log.error(
                "%s not put back (Redis not answering): a reaper puts it back once "
                "its lease lapses%s",
                job.what(),
                ", its crash not charged" if job.crash else "",
            )
        self.pending.clear()
        self.probe.close()

    def _unanswered(self, lane: _Lane, shard: int, now: float, why: str) -> None:
        if lane.waiting_since is None:
            lane.waiting_since = now
            waiting = sum(1 for job in self.pending if self._shard_of(job) == shard)
            log.warning(
                "putting back the runs of dead workers waits for Redis%s (%d pending): %s",
                f" (shard {shard})" if self.spread else "",
                max(waiting, 1),
                why,
            )
        lane.retry_at = now + lane.delay
        lane.delay = min(lane.delay * 2, MAX_RETRY_S)

    def _send(self, job: PutBack) -> str:
        """One recovery call; the error text of transient trouble ('' when done:
        sent, refused for good, or the lease no longer ours)."""
        registry = job.registry
        assert registry is not None
        if job.kind == "abort":
            assert job.run is not None and job.reason is not None
            done = recovery.abort_run(
                self.client,
                registry,
                job.run,
                job.reason,
                job.timeout,
                job.hooked,
                retrying=True,
            )
            if done.transient:
                return done.error
            self._on_failure(done, registry)
            return ""
        if job.kind == "run":
            assert job.run is not None
            (done,) = recovery.recover_runs(
                self.client,
                [job.run],
                cause=job.cause,
                stopping=job.stopping,
                charge_crash=job.crash,
                max_crashes=job.max_crashes,
                hooked=job.hooked,
                retrying=True,
            )
            if done.transient:
                return done.error
            if done.failed:
                self._on_failure(done, registry)
            elif done.status is not None:
                self._requeued("shutdown" if job.stopping else "crash")
            return ""
        found = recovery.requeue_claim(
            self.client, job.token, job.cause, job.lease_ms, retrying=True, shard=job.shard
        )
        for done in found:
            if done.transient:
                return done.error
        for done in found:
            if done.status == "queued":
                self._requeued("crash")
        return ""

    def _requeued(self, reason: str) -> None:
        self.metrics.inc("redflow_runs_requeued_total", 1.0, reason=reason)

    def _on_failure(self, done: Recovered, registry: Registry) -> None:
        wf = registry.get(done.workflow) if done.failed else None
        if wf is not None and wf.on_failure is not None:
            self.helpers.start(self.helper_spec(), registry, done.run_id)
