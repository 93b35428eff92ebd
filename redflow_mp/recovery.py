"""Run recovery for a host whose worker processes die, hang or are stopped.

A host (the supervisor) decides *when*: a child died, a run overran its
timeout, a handler ignored its cancellation, a child died while a claim was in
flight. These functions decide *what*, with the same Lua transitions the
workers use, each fenced by the run's lease token:

- :func:`recover_runs`: a dead child's runs go back to ``ready`` at once; the
  innermost one (the handler that was executing) is charged a crash, and fails
  after ``max_run_crashes`` (a poison pill must not loop forever).
- :func:`abort_run`: record the end of a run the host stopped: a timeout is
  retried or failed by the one retry rule (:func:`redflow_mp.retry.retry_delay_ms`),
  judged by the run's *full* workflow name as stored in Redis; an ignored
  cancellation ends ``canceled``.
- :func:`requeue_claim`: put back a run claimed with a lease token the dead
  child published before it could say which run it got.
- :func:`renew_leases`: the host's backstop renewal of every run its live
  processes hold (a handler stuck in C code stops the child's own heartbeat).

Invariants: nothing here raises for Redis trouble; a run that cannot be
recovered now is reported (``error``) and left to the reaper, whose lease
expiry finds it later. A write whose lease is no longer ours changes nothing
(``status`` None). A run that fails for good is returned with its full
workflow name, so the host can run ``on_failure`` once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import msgspec
import redis

from . import codec, xshard
from .codec import ErrorInfo, text
from .errors import TRANSIENT_ERRORS, WrongTypeError
from .registry import Registry
from .retry import retry_delay_ms
from .runs import Runs

__all__ = [
    "Abort",
    "HeldRun",
    "LeaseState",
    "Recovered",
    "abort_run",
    "recover_runs",
    "renew_leases",
    "requeue_claim",
]

log = logging.getLogger(__name__)

# Recovery must never stop its host: any Redis error is reported, not raised.
# WrongTypeError: a key the put-back needs (its queue's ready set) of another
# type; nothing was written, the reaper takes the run back once it is removed.
_REDIS_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, redis.RedisError, WrongTypeError)


class Abort(enum.Enum):
    """Why a host stopped a run's handler."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"


class HeldRun(msgspec.Struct, frozen=True):
    """A run a process holds: its id and lease token."""

    run_id: str
    token: str


class LeaseState(msgspec.Struct, frozen=True):
    """A renewal's answer: the lease is still ours; cancellation was requested."""

    kept: bool
    cancel: bool


class Recovered(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one run.

    ``status`` is the run's status after the write (``queued``, ``scheduled``,
    ``failed``, ``canceled``), or None when its lease was no longer ours.
    ``workflow`` is the full workflow name of a run that failed for good (its
    ``on_failure`` is due). ``error`` describes Redis trouble (the reaper will
    put the run back once its lease expires).
    """

    run_id: str
    status: str | None = None
    workflow: str = ""
    error: str = ""
    transient: bool = False  # ``error`` is Redis trouble that passes: worth sending again

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def recover_runs(
    runs: Runs,
    held: Sequence[HeldRun],
    *,
    cause: str,
    stopping: bool,
    charge_crash: bool,
    max_crashes: int,
    hooked: Sequence[str] = (),
    retrying: bool = False,
) -> list[Recovered]:
    """Put back the runs a dead process held, innermost first.

    ``held`` lists them outermost first (today a worker holds one run at a
    time: durable waits suspend a parent instead of nesting its child);
    ``cause`` says how the process ended ("killed by SIGKILL"), ``stopping``
    that the host stopped it on purpose.
    With ``charge_crash`` the innermost run is charged a crash (``cause`` is
    recorded as its last crash) and fails once it reached ``max_crashes``;
    every other run is requeued without a charge. ``hooked``: the workflows
    whose ``on_failure`` the host runs (a run of one failed here is recorded
    as due with its failure: ``hookdue.py``). ``retrying``: the caller keeps a
    run that meets transient trouble to send it again (and says so itself).
    """
    why = "supervisor stopping" if stopping else f"worker {cause}"
    out: list[Recovered] = []
    for position, run in enumerate(reversed(held)):
        crash = charge_crash and position == 0
        workflow = ""
        try:
            if crash:
                status = runs.scripts_for(run.run_id).finalize(
                    run.run_id, run.token, "crash", f"worker {cause}", max_crashes, hooked
                )
            else:
                status = runs.scripts_for(run.run_id).finalize(
                    run.run_id, run.token, "requeue", why, 0
                )
            if status == "failed":
                workflow = _workflow_of(runs, run.run_id)
                _kick(runs, run.run_id, status)
        except _REDIS_TROUBLE as exc:
            transient = isinstance(exc, TRANSIENT_ERRORS)
            if not (retrying and transient):
                log.error(
                    "could not put back run %s (%s); the reaper will once its lease expires",
                    run.run_id,
                    exc,
                )
            out.append(Recovered(run_id=run.run_id, error=str(exc), transient=transient))
            continue
        if status == "failed":
            log.error(
                "run %s failed: it killed its worker %d times (last: %s)",
                run.run_id,
                max_crashes,
                cause,
            )
        elif status is not None and crash:
            log.warning("run %s put back after its worker %s", run.run_id, cause)
        elif status is not None:
            log.info("run %s put back (%s)", run.run_id, why)
        out.append(Recovered(run_id=run.run_id, status=status, workflow=workflow))
    return out


def abort_run(
    runs: Runs,
    registry: Registry,
    run: HeldRun,
    reason: Abort,
    timeout: float,
    hooked: Sequence[str] = (),
    retrying: bool = False,
) -> Recovered:
    """Record the end of a run whose handler the host stopped (its process is gone).

    A timeout counts as an attempt: retried with the workflow's backoff while
    attempts remain, else failed (``RunTimeoutError``). The retry policy is
    looked up by the run's full workflow name, read from the run itself.
    """
    try:
        if reason is Abort.CANCEL:
            status = runs.scripts_for(run.run_id).finalize(run.run_id, run.token, "canceled", "", 0)
            log.info("run %s canceled (handler stopped after cancel_grace)", run.run_id)
            _kick(runs, run.run_id, status)
            return Recovered(run_id=run.run_id, status=status)
        shard = runs.shard_of_run(run.run_id)
        name, attempt, max_attempts = shard.redis.hmget(
            shard.keys.run(run.run_id), "workflow", "attempt", "maxAttempts"
        )
        workflow = text(name)
        error = codec.encode_error(
            ErrorInfo(
                type="RunTimeoutError",
                message=f"run exceeded its timeout of {timeout:g} s and "
                "was stopped by the supervisor",
                retryable=True,
            )
        )
        wf = registry.get(workflow)
        delay = retry_delay_ms(
            wf.retries if wf is not None else None, int(attempt or 1), int(max_attempts or 1)
        )
        if delay is not None:
            status = runs.scripts_for(run.run_id).finalize(
                run.run_id, run.token, "retry", error, delay
            )
        else:
            status = runs.scripts_for(run.run_id).finalize(
                run.run_id, run.token, "failed", error, 0, hooked
            )
            _kick(runs, run.run_id, status)
    except _REDIS_TROUBLE as exc:
        transient = isinstance(exc, TRANSIENT_ERRORS)
        if not (retrying and transient):
            log.error("could not record the end of run %s (%s)", run.run_id, exc)
        return Recovered(run_id=run.run_id, error=str(exc), transient=transient)
    log.warning(
        "run %s timed out after %g s: %s", run.run_id, timeout, status or "lease already lost"
    )
    return Recovered(
        run_id=run.run_id, status=status, workflow=workflow if status == "failed" else ""
    )


def requeue_claim(
    runs: Runs,
    token: str,
    cause: str,
    lease_ms: int,
    *,
    retrying: bool = False,
    shard: int | None = None,
) -> list[Recovered]:
    """Put back a run claimed with ``token`` by a process that died before it
    published which run it got (a run with a pending cancel ends ``canceled``).
    Only runs claimed in the last two ``lease_ms`` are looked at (one read bounded
    by the runs in flight); an older one is the reaper's once its lease expires.
    ``retrying``: transient trouble is returned (one entry with no run id and
    ``transient``) for the caller to send the call again, not logged. ``shard``:
    look in that shard only (None: in every shard)."""
    where = runs.shards if shard is None else [runs.shards[shard]]
    try:
        found = [
            pair
            for s in where
            for pair in s.scripts.requeue_claimed(token, f"worker {cause}", lease_ms)
        ]
    except _REDIS_TROUBLE as exc:
        if retrying and isinstance(exc, TRANSIENT_ERRORS):
            return [Recovered(run_id="", error=str(exc), transient=True)]
        log.error(
            "could not look for a run claimed by the dead worker (%s); "
            "the reaper will put it back once its lease expires",
            exc,
        )
        return []
    for run_id, status in found:
        if status == "queued":
            log.warning("run %s put back: its worker %s right after claiming it", run_id, cause)
        else:
            log.info(
                "run %s ended %s: its worker %s right after claiming it", run_id, status, cause
            )
    return [Recovered(run_id=run_id, status=status) for run_id, status in found]


def renew_leases(runs: Runs, lease_ms: int, held: Sequence[HeldRun]) -> list[LeaseState]:
    """Extend the leases of ``held`` by ``lease_ms``; per run: still ours, cancel asked."""
    pairs = [(run.run_id, run.token) for run in held]
    return [LeaseState(kept, cancel) for kept, cancel in runs.renew(lease_ms, pairs)]


def _kick(runs: Runs, run_id: str, status: str | None) -> None:
    """shards > 1: a run that finished here wakes a parent in another shard
    (``xshard.py``; a lost kick is caught by the parent's recheck timer)."""
    if runs.shard_count > 1:
        try:
            xshard.kick_parent_of(runs, run_id, status)
        except _REDIS_TROUBLE as exc:
            log.warning("run %s: could not notify its parent (%s)", run_id, exc)


def _workflow_of(runs: Runs, run_id: str) -> str:
    shard = runs.shard_of_run(run_id)
    return text(shard.redis.hget(shard.keys.run(run_id), "workflow"))
