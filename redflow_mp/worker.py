"""The worker loop: claim a run, execute it, finish it; one run at a time.

Used in-process (tests, scripts) and inside every supervisor child (it is not
a command: ``python -m redflow_mp.worker`` says which ones to use). The loop
owns its client's connections, serves a list of queues and stops cleanly on
:meth:`Worker.stop` (from another thread or a signal handler: it only sets a
flag and pushes a wake-up).

Steady state costs one script call per run: the finish of the run just
executed is sent together with the claim of the next (``claim_run.lua``). When
no run is ready the worker blocks on the queues' bell lists (BLPOP), so an
idle worker costs no Redis commands beyond one blocking call per
``block_timeout``.

Network errors never kill the loop: it backs off (up to 5 s), resends the pending
finish, and a lost claim with its token (``lostclaim.py``: its run starts at once).
Each retry loop logs its trouble once, every 10 s while it lasts, and when it ends
(``outage.py``). ``maintenance=True``: see ``worker_upkeep.py``; the idle waits:
``worker_waits.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from . import hookdue, xshard
from .client import Client, set_default_client
from .errors import TRANSIENT_ERRORS, WrongTypeError
from .executor import Executor, Outcome, OutcomeMode, finish_args
from .foreign import defer_ms, held_after_loss, served_elsewhere
from .ids import new_token
from .keycheck import Bench
from .lease import LeaseKeeper, say_lost
from .lostclaim import LostClaim
from .metrics import FINAL, Metrics
from .options import check_name
from .outage import Outage
from .registry import Registry
from .scripts import Claimed, Finish
from .shardpass import ShardPass
from .shardset import Shard
from .worker_hooks import NoHooks as _NoHooks
from .worker_hooks import WorkerHooks
from .worker_upkeep import Upkeep
from .worker_waits import BELL_CAP, WorkerWaits

__all__ = ["BELL_CAP", "Worker", "WorkerHooks"]

#: The ``workflow`` label of metrics about runs of workflows this worker does not know.
UNREGISTERED_LABEL = "(unregistered)"

#: How long a canceled run's worker tries to cancel its children through Redis trouble.
CASCADE_PATIENCE = 60.0
#: Workflows per shard :meth:`Worker._synced` looks for in Redis (the first there counts).
OWN_PROBES = 8
_CLAIM_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, WrongTypeError)

log = logging.getLogger(__name__)

# OutcomeMode's members as globals: an Enum class's attribute is read through
# EnumType.__getattr__'s hook in Python 3.11 (about 850 CPU instructions a read).
_LOST, _CANCELED, _DEFER = OutcomeMode.LOST, OutcomeMode.CANCELED, OutcomeMode.DEFER
_FAILED, _SUSPEND = OutcomeMode.FAILED, OutcomeMode.SUSPEND
_SUCCEEDED = OutcomeMode.SUCCEEDED
# Finish's own __new__ is Python (NamedTuple: tuple.__new__ of the fields in a frame
# of its own); the steady state's finish calls what it calls (~1,000 fewer a run).
_new_tuple: Any = tuple.__new__

#: Wait before resending a suspend or finish Redis refused (a key of the wrong type).
REFUSED_RETRY = 5.0

#: How often a waiting worker looks at its stop flag (:meth:`Worker._nap`).
_NAP_SLICE = 0.05


class _LeftBehind(Exception):
    """A stopping worker leaves a run Redis refuses to suspend or finish (a key of the
    wrong type): it stays running and leased, on the host's books."""


#: Longest blocking wait when some shards have no worker blocked on their bells
#: (``shards > 1``, fewer workers than shards): their runs wait about this long.
UNWATCHED_BLOCK_TIMEOUT = 0.1


class Worker(WorkerWaits):
    """Claims and executes runs of ``queues`` until stopped.

    Args:
        client: the client whose connections and namespace the worker uses.
        queues: queues to serve; default: the queues of the registry's workflows.
        registry: workflows this worker can execute (default: the client's).
        lease_ms: lease length; renewed every ``lease_ms / 3`` (``/ 5``: maintenance).
        block_timeout: longest blocking wait for work, in seconds.
        maintenance: also promote due runs and reap expired leases, stall-guarded
            (``worker_upkeep.py``; for a worker used without a supervisor).
        hooks: callbacks for a hosting process.
        max_runs: stop after this many runs (0 = no limit).
        home_shard: with ``shards > 1``, the shard whose bells the worker blocks on
            (default 0); every claim pass tries it first, then the other shards,
            one claim each, stopping at the first run found.
        shards_watched: with ``shards > 1`` on a Redis Cluster, every shard has a
            worker blocked on its bells (a supervisor with ``procs >= shards``).
            When False (the default), the other shards are looked at after each
            blocking wait, cut to :data:`UNWATCHED_BLOCK_TIMEOUT`. On one server
            the worker blocks on the bells of every shard at once.
        wake_token: names the worker's wake key (default: its own, random); a
            supervisor gives its children one, to wake them all (:func:`wake_workers`).
    """

    def __init__(
        self,
        client: Client,
        *,
        queues: Sequence[str] | None = None,
        registry: Registry | None = None,
        lease_ms: int = 5000,
        block_timeout: float = 1.0,
        maintenance: bool = False,
        hooks: WorkerHooks | None = None,
        max_runs: int = 0,
        metrics: Metrics | None = None,
        home_shard: int = 0,
        shards_watched: bool = False,
        wake_token: str | None = None,
    ) -> None:
        self.client = client
        self.registry = registry if registry is not None else client.registry
        qs = list(queues) if queues is not None else self.registry.queues()
        if isinstance(queues, str):
            raise TypeError("queues must be a list of queue names, not a str")
        if not qs:
            raise ValueError("a worker needs at least one queue (none given, none registered)")
        self.queues = tuple(dict.fromkeys(check_name(q, "queue") for q in qs))
        if isinstance(lease_ms, bool) or not isinstance(lease_ms, int) or lease_ms < 100:
            raise ValueError("lease_ms must be an int >= 100")
        self.lease_ms = lease_ms
        self.block_timeout = min(4.0, max(0.01, float(block_timeout)))
        shards = client.shards
        self.home = shards[home_shard % len(shards)]
        # home first, then the others in index order after it
        self._others = tuple(
            shards[(self.home.index + i) % len(shards)] for i in range(1, len(shards))
        )
        # One server (not a cluster): every shard shares one connection, so one
        # BLPOP can wait on the bells of all of them and no shard goes unwatched.
        self._one_server = all(s.transport is self.home.transport for s in self._others)
        if self._others and not shards_watched and not self._one_server:
            self.block_timeout = min(self.block_timeout, UNWATCHED_BLOCK_TIMEOUT)
        self.maintenance = maintenance
        self.hooks: WorkerHooks = hooks if hooks is not None else _NoHooks()
        self._failed: Outcome | None = None  # failed for good: on_failure is due
        self._failed_token = ""  # the lease token of that failure (hookdue.done)
        self.max_runs = max_runs
        self.metrics = metrics
        self.runs_done = 0
        self._upkeep = Upkeep(client, lease_ms) if maintenance else None
        tick = self._upkeep.tick if self._upkeep is not None else None
        self.keeper = LeaseKeeper(client.renew, lease_ms, tick)
        self.executor = Executor(client, self.registry, self.keeper, lease_ms, metrics)
        # A plain flag: stop() runs in signal handlers, and Event.set() takes the lock
        # an interrupted Event.wait() in the same thread may hold (it hung). _nap polls.
        self._stop_asked = False
        home_keys = self.home.keys  # one BLPOP: the bells and the wake key in one slot
        self._wake_key = home_keys.worker_wake(wake_token or new_token())
        watched = (self.home, *self._others) if self._one_server else (self.home,)
        self._bells = [s.keys.q_bell(q) for s in watched for q in self.queues] + [self._wake_key]
        # which shard a bell belongs to: the next claim pass starts there
        self._bell_shard = {s.keys.q_bell(q).encode(): s for s in watched[1:] for q in self.queues}
        self._rung: Shard | None = None
        self._bench = Bench()  # keys of the wrong type, left out for a while
        self._woken = False
        self._woken_by: bytes | str | None = None  # the bell that woke the last wait
        self._timed_out = False  # the last wait ended with no bell rung
        self._scan = False  # the next claim reads every queue (queueset.py: the safety net)
        self._turn = 0  # ties go to the queue at this position of the list (_claim)
        self._ready_keys = [
            [s.keys.q_ready(q) for q in self.queues] for s in (self.home, *self._others)
        ]
        self._current: Claimed | None = None
        self._ran: tuple[str, float] | None = None  # the last execution's label and time
        self._said_foreign: dict[str, float] = {}  # foreign.served_elsewhere's log times
        self._own: dict[int, str] = {}  # run(): per shard, a workflow of ours Redis had
        self._pass = ShardPass()  # shards > 1: the shards down, a shard unanswered
        self._claims = Outage(log, "claiming runs")  # one line per outage, not per retry
        self._idling = Outage(log, "waiting for runs")

    # ------------------------------------------------------------- control

    def stop(self) -> None:
        """Ask the loop to stop after the current run (thread- and signal-safe)."""
        self._stop_asked = True

    def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` or until :meth:`stop` (polls the flag every
        :data:`_NAP_SLICE` s; takes no lock a signal handler could find held)."""
        end = time.monotonic() + seconds
        while not self._stop_asked:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_NAP_SLICE, left))

    def wake(self) -> None:
        """Interrupt an idle blocking wait (not from a signal handler)."""
        try:
            self.home.redis.lpush(self._wake_key, "1")
            self.home.redis.pexpire(self._wake_key, 60_000)
        except TRANSIENT_ERRORS:
            pass

    @property
    def stopping(self) -> bool:
        return self._stop_asked or self.hooks.should_stop()

    # ------------------------------------------------------------- the loop

    def run(self) -> None:
        """Serve until :meth:`stop` (or ``max_runs``); finishes the current run first."""
        set_default_client(self.client)
        self._own = self._synced()
        try:
            self._serve()
        except _LeftBehind:
            pass  # its run stays on the host's books (``started``, never ``finished``)
        finally:
            self._ended()  # a run left behind: its time still counts
            self.keeper.stop()
            self.executor.close()

    def _synced(self) -> dict[int, str]:
        """Per shard (its index), a workflow of this worker homed there whose
        metadata Redis holds now (its supervisor synced it): gone later, that shard
        lost it (:meth:`_foreign`). At most :data:`OWN_PROBES` reads per shard, one
        pipeline each, once."""
        homed: dict[int, list[str]] = {}
        for wf in self.registry:
            names = homed.setdefault(self.client.shard_of_workflow(wf.name).index, [])
            if len(names) < OWN_PROBES:
                names.append(wf.name)
        own: dict[int, str] = {}
        for index, names in homed.items():
            shard = self.client.shards[index]
            try:
                with shard.redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.exists(shard.keys.workflow(name))
                    found = pipe.execute()
            except TRANSIENT_ERRORS:
                continue
            except redis.ResponseError:
                continue
            present = [n for n, hit in zip(names, found, strict=True) if hit]
            if present:
                own[index] = present[0]
        return own

    def _serve(self) -> None:
        """The loop of :meth:`run`."""
        pending: Finish | None = None
        pending_outcome: Outcome | None = None
        # The run whose finish rides on the next claim call: the host keeps it on
        # its books until that call returns, so a death in between loses nothing.
        holding: Claimed | None = None
        backoff = 0.05
        lost = LostClaim()
        while True:
            # (the stopping property's and lost.next_token's bodies: two calls less a run)
            stop = (
                self._stop_asked
                or self.hooks.should_stop()
                or (self.max_runs and self.runs_done >= self.max_runs)
            )
            if stop and pending is None:
                lost.give_back((self.home, *self._others), self.lease_ms)
                break
            if stop:
                token, resend = "", False
            elif lost.token:
                token, resend = lost.token, True
            else:
                token, resend = new_token(), False
            if token:
                self.hooks.claiming(token)
            try:
                result, claimed = self._claim(token, pending, resend)
                self._woken = self._scan = False
            except _CLAIM_TROUBLE as exc:
                lost.failed(token, exc)
                backoff = self._claim_failed(exc, backoff)
                continue
            lost.token = token if self._pass.unanswered and claimed is None else ""
            backoff = 0.05
            self._claims.recovered()
            if pending is not None:
                self._after_finish(pending, result, pending_outcome, holding)
            pending, pending_outcome, holding = None, None, None
            if claimed is not None:
                outcome = self._execute(claimed)
                if outcome.mode is _SUCCEEDED:  # the steady state: _settle's, in this frame
                    self.hooks.finishing(claimed)
                    pending = _new_tuple(
                        Finish, (_SUCCEEDED, claimed.id, claimed.token, outcome.payload, 0)
                    )  # Finish(_SUCCEEDED, claimed.id, claimed.token, outcome.payload)
                    pending_outcome, holding = outcome, claimed
                    del outcome  # held by pending_outcome alone (executor._unshared)
                    continue
                pending, pending_outcome, holding = self._settle_other(claimed, outcome)
                continue
            if token:
                self.hooks.claiming("")
                if self._woken_by is not None:  # a bell woke us for nothing
                    self._trim_bell(self._woken_by)
                self._idle()

    def _settle_other(
        self, claimed: Claimed, outcome: Outcome
    ) -> tuple[Finish | None, Outcome | None, Claimed | None]:
        """An execution that did not simply succeed: suspended or run again, then
        settled; its finish to send with the next claim, its outcome and its run
        (held, marked finishing by ``_settle``), or nothing left to send."""
        outcome = self._suspend_or_resume(claimed, outcome)
        pending, pending_outcome = self._settle(claimed, outcome)
        if pending is None:
            self._ended()  # its finish written (or none): its time alone
            self.hooks.finished(claimed)
            self._on_failure()
            return None, None, None
        return pending, pending_outcome, claimed

    def _foreign(self, claimed: Claimed) -> bool:
        """A run of a workflow this worker does not load but a running supervisor
        does (other code or app on the queue), or one put on ``default`` while Redis
        had lost the registrations: put back, not failed (foreign.py)."""
        said = self._said_foreign
        if not served_elsewhere(self.client, claimed.workflow, said) and not held_after_loss(
            self.client, claimed, self._own, said
        ):
            return False  # nobody has it: it fails (UnknownWorkflowError)
        self.hooks.started(claimed, None)
        self._apply_now(Finish("defer", claimed.id, claimed.token, b"", defer_ms()))
        return True

    def _claim_failed(self, exc: Exception, backoff: float) -> float:
        """A claim (or the finish riding on it) failed: say why, wait ``backoff``, return
        the next one. Told to stop, a finish refused (a key of the wrong type) is not
        resent: :class:`_LeftBehind` (transient trouble is ridden out)."""
        if isinstance(exc, WrongTypeError) and self._stop_asked:
            log.error("%s; stopping: the run is left to be put back", exc)
            raise _LeftBehind()
        if not isinstance(exc, WrongTypeError):
            self._claims.failed(exc, backoff)
        elif not self._bench_ready_sets() and not self._name_shared_key():
            log.error("claim failed: %s; retrying in %.2f s", exc, backoff)
        if self._stop_asked:  # a finish still to deliver: the nap
            time.sleep(backoff)  # would not wait, and the loop would spin
        else:
            self._nap(backoff)
        return min(5.0, backoff * 2)

    def _claim(self, token: str, pending: Finish | None, again: bool) -> tuple[str, Claimed | None]:
        """Apply ``pending`` and claim. ``token`` empty: finish only; ``again``: a
        claim with ``token`` got no reply. With shards > 1 the finish rides on the
        claim sent to its run's shard; the pass then tries the shard whose bell woke
        the worker, the home shard and the others, one claim each, until a run is
        found (``shardpass.py``: a lost reply is resent to its shard at once)."""
        # _order's body (one call less a run): ties go to the queue at _turn
        queues = self._claimable() if self._bench else self.queues
        self._turn = (self._turn + 1) % max(1, len(queues))
        if not queues or not token:  # every queue left out (a ready set of the wrong
            # type), or a finish only
            if pending is None:
                return "", None
            shard = self.client.shard_of_run(pending.run_id) if self._others else self.home
            return shard.scripts.claim(self.queues, self.lease_ms, "", pending)
        if not self._others:
            return self.home.scripts.claim(
                queues, self.lease_ms, token, pending, woken=self._woken, turn=self._turn,
                scan=self._scan, resend=again,
            )  # fmt: skip
        rung = self._rung or self.home  # the shard whose bell woke us (one server)
        self._rung = None
        first = rung if pending is None else self.client.shard_of_run(pending.run_id)
        owed = first if pending is not None else None  # carries the finish: never skipped

        def send(shard: Shard, resend: bool) -> tuple[str, Claimed | None]:
            if shard is first:
                return shard.scripts.claim(
                    queues, self.lease_ms, token, pending, woken=self._woken and first is rung,
                    turn=self._turn, scan=self._scan, resend=resend,
                )  # fmt: skip
            _r, claimed = shard.scripts.claim(
                queues, self.lease_ms, token, turn=self._turn, scan=self._scan, resend=resend
            )
            return "", claimed

        ranked = {s.index: s for s in (first, rung, self.home, *self._others)}.values()
        return self._pass.run(ranked, owed, again, send)

    def _kick(self, claimed: Claimed, status: str | None) -> None:
        """shards > 1: wake the parent, in another shard, of a run that ended here."""
        if not claimed.parent_run_id or status not in ("succeeded", "failed", "canceled"):
            return
        try:
            xshard.kick_parent(self.client, claimed.parent_run_id, claimed.id, status)
        except TRANSIENT_ERRORS as exc:
            log.warning("run %s: could not notify its parent (%s)", claimed.id, exc)

    def _execute(self, claimed: Claimed) -> Outcome:
        if self._ran is not None:  # an execution before this one (a resumed wait)
            self._ended()
        wf = self.registry.get(claimed.workflow)
        if wf is None and self._foreign(claimed):
            return Outcome(OutcomeMode.LOST)  # put back: nothing left to write
        timeout = (
            claimed.timeout_ms / 1000.0
            if claimed.timeout_ms
            else (wf.timeout if wf is not None else None)
        )
        self._current = claimed
        metrics = self.metrics
        label = claimed.workflow if wf is not None else UNREGISTERED_LABEL  # as _label
        if metrics is not None:
            at = claimed.available_at
            metrics.run_started(label, max(0.0, time.time() - at / 1000.0) if at else None)
        self.hooks.started(claimed, timeout)
        began = time.perf_counter()
        try:
            return self.executor.execute_plain(claimed, wf)
        finally:
            if metrics is not None:  # observed by _ended, with its finish's count if it rides
                self._ran = (label, time.perf_counter() - began)
            self._current = None
            self.runs_done += 1

    def _suspend_or_resume(self, claimed: Claimed, outcome: Outcome) -> Outcome:
        """A run that reached a durable wait: suspend it (``suspend_run``), or, when
        the wait's condition holds by now, execute it again at once (same lease,
        same attempt). Returns the outcome to settle (LOST: nothing left to write)."""
        while outcome.mode is _SUSPEND and outcome.wait is not None:
            self.hooks.finishing(claimed)  # this execution ended: not timed out now
            status = self._apply_suspend(claimed, outcome)
            if status != "resume":
                if status == "canceled":
                    self._record(claimed.workflow, "canceled", status)
                    self._cascade(claimed.id)
                    if self._others:
                        self._kick(claimed, status)
                elif status == "suspended" and self.metrics is not None:
                    self.metrics.inc("redflow_runs_suspended_total", workflow=claimed.workflow)
                elif status == "lease-lost":
                    say_lost(log, self.client, claimed.id, "before it could suspend")
                return Outcome(OutcomeMode.LOST)
            self.hooks.finished(claimed)
            outcome = self._execute(claimed)
        return outcome

    def _apply_suspend(self, claimed: Claimed, outcome: Outcome) -> str:
        assert outcome.wait is not None
        outage = Outage(log, f"suspending run {claimed.id}")
        while True:
            try:
                status = self.client.scripts_for(claimed.id).suspend(
                    claimed.id, claimed.token, outcome.wait, self.lease_ms
                )
                outage.recovered()
                return status
            except TRANSIENT_ERRORS as exc:  # resend-safe: an applied one says the status
                outage.failed(exc)
                time.sleep(0.2)
            except WrongTypeError as exc:
                # `timers` of another type: nothing was written; the run stays
                # running and leased until the key is removed (never lost), or
                # until this worker is told to stop: then it leaves the run.
                self._refused(claimed.id, "suspend", exc)

    def _refused(self, run_id: str, what: str, exc: WrongTypeError) -> None:
        """Redis refused ``what`` (suspend, finish) of ``run_id``: wait
        :data:`REFUSED_RETRY` before the caller resends it. Told to stop (TERM,
        :meth:`stop`), before or during the wait: raise :class:`_LeftBehind`
        (a graceful stop of a supervisor ended only at its ``graceful_timeout``
        with a SIGKILL of the child, for a run it could not write anyway)."""
        if not self._stop_asked:
            log.error("run %s could not %s: %s; retrying in %g s", run_id, what, exc, REFUSED_RETRY)
            self._nap(REFUSED_RETRY)
        if self._stop_asked:
            log.error(
                "run %s could not %s: %s; stopping: the run is left to be put back",
                run_id,
                what,
                exc,
            )
            raise _LeftBehind(run_id)

    def _cascade(self, run_id: str) -> None:
        """The run ended canceled: cancel its unfinished run_workflow children through
        Redis trouble (nothing else does: one left suspended holds its slot for good)."""
        deadline = time.monotonic() + CASCADE_PATIENCE
        while True:
            try:
                self.client.cancel_children(run_id)
                return
            except TRANSIENT_ERRORS as exc:
                if self._stop_asked or time.monotonic() >= deadline:
                    log.warning("run %s: could not cancel its children (%s)", run_id, exc)
                    return
                self._nap(0.2)  # a cancel sent twice is harmless

    def _settle(self, claimed: Claimed, outcome: Outcome) -> tuple[Finish | None, Outcome | None]:
        """Turn an outcome into a pending finish, or apply it now when it needs follow-up."""
        if outcome.mode is _LOST:
            if outcome.facts is not None:  # an execution (not one put back unrun)
                say_lost(log, self.client, claimed.id, "and its result was discarded")
            return None, None
        # The handler has ended: on the host's books its run is finishing from
        # here on (never timed out or aborted while a write rides out Redis
        # trouble), whichever call writes its end.
        self.hooks.finishing(claimed)
        if outcome.mode is _CANCELED:
            status = self._apply_now(finish_args(claimed, outcome))
            self._record(claimed.workflow, "canceled", status)
            self._cascade(claimed.id)
            if self._others:
                self._kick(claimed, status)
            return None, None
        finish = finish_args(claimed, outcome)
        if outcome.mode is _DEFER:
            # Rare (Redis trouble outlasted a write's ride-out): its own call,
            # not a mode of the hot path's claim_run.
            self._apply_now(finish)
            return None, None
        if (
            outcome.mode is _FAILED
            and outcome.workflow is not None
            and outcome.workflow.on_failure is not None
        ):
            # recorded as due with the failure (hookdue.py): removed once it returned
            status = self._apply_now(finish, (claimed.workflow,))
            self._record(claimed.workflow, finish.mode, status)
            if self._others:
                self._kick(claimed, status)
            if status == "failed":
                self._failed = outcome  # its hook runs once the run is off the books
                self._failed_token = finish.token
            return None, None
        return finish, outcome

    def _on_failure(self) -> None:
        """``on_failure`` of the run just failed for good (written, off the host's
        books: its outcome stands), told to the host, which may bound its time."""
        outcome, self._failed = self._failed, None
        if outcome is None:
            return
        if outcome.facts is None:
            return
        run_id = outcome.facts.info.id
        # its deadline from its start (the host's limit), kept ahead while it runs
        with hookdue.Beat(self.client, run_id):
            self.hooks.failure_hook(True)
            try:
                self.executor.call_on_failure(outcome)
            finally:
                self.hooks.failure_hook(False)
        hookdue.done(self.client, run_id, self._failed_token)  # returned or raised

    def _apply_now(self, finish: Finish, hooked: tuple[str, ...] = ()) -> str | None:
        run_id = finish.run_id
        outage = Outage(log, f"finishing run {run_id}")
        while True:
            try:
                status = self.client.scripts_for(run_id).finalize(
                    run_id, finish.token, finish.mode, finish.payload, finish.delay_ms, hooked
                )
                outage.recovered()
            except TRANSIENT_ERRORS as exc:
                outage.failed(exc)
                time.sleep(0.2)
                continue
            except WrongTypeError as exc:
                # (`leases` of another type) nothing was written: keep the run
                # until the key is removed instead of crashing the child, or
                # until this worker is told to stop: then it leaves the run.
                self._refused(run_id, "finish", exc)
                continue
            if status is None:
                say_lost(log, self.client, run_id, "before its result was written")
            return status

    def _after_finish(
        self,
        finish: Finish,
        result: str,
        outcome: Outcome | None,
        holding: Claimed | None,
    ) -> None:
        """The claim call that carried ``finish`` (of ``outcome``) said ``result``:
        count it, and take its run (``holding``) off the host's books."""
        if result in FINAL and outcome is not None and outcome.facts is not None:
            # the steady state: the time and the finish's count in one update
            # (_ended's body: one call less a run)
            ran, self._ran = self._ran, None
            if ran is not None and self.metrics is not None:
                self.metrics.run_ended(ran[0], ran[1], result)
        elif result == "lease-lost":
            say_lost(log, self.client, finish.run_id, "before its result was written")
            self._ended()
        elif outcome is None or outcome.facts is None:
            self._ended()
        else:
            self._ended()
            self._record(outcome.facts.info.workflow, finish.mode, result)
        if holding is not None:
            if self._others:
                self._kick(holding, result)
            self.hooks.finished(holding)

    def _ended(self, status: str = "") -> None:
        """The "run ended" update of the last execution: its time, and the count of
        its finish under a final ``status`` (``Metrics.run_ended``: one lock)."""
        ran, self._ran = self._ran, None
        if ran is not None and self.metrics is not None:
            self.metrics.run_ended(ran[0], ran[1], status)

    def _record(self, workflow: str, mode: str, status: str | None) -> None:
        """Count a finish whose script reply said ``status`` (None: lease lost)."""
        metrics = self.metrics
        if metrics is None or not status:
            return
        label = self._label(workflow)
        if status in ("succeeded", "failed", "canceled"):
            metrics.inc_wf("redflow_runs_finished_total", label, status)
        elif mode == "retry":
            metrics.inc("redflow_run_retries_total", workflow=label)

    def _label(self, workflow: str) -> str:
        """The metrics label of ``workflow``: its name if registered here, else one
        shared label (a run's workflow name is whatever its enqueuer wrote, and
        every distinct label value is a series kept until the process ends)."""
        return workflow if self.registry.get(workflow) is not None else UNREGISTERED_LABEL

    def run_until_idle(self, timeout: float = 30.0) -> int:
        """Test helper: process runs until none is ready; returns how many ran."""
        done = 0
        deadline = time.monotonic() + timeout
        pending = None
        while time.monotonic() < deadline:
            _result, claimed = self._claim(new_token(), pending, False)
            pending = None
            if claimed is None:
                break
            outcome = self._suspend_or_resume(claimed, self._execute(claimed))
            pending, _ = self._settle(claimed, outcome)
            self._ended()
            if pending is None:
                self.hooks.finished(claimed)
                self._on_failure()
            else:
                status = self._apply_now(pending)
                pending = None
                if self._others:
                    self._kick(claimed, status)
                self.hooks.finished(claimed)
            done += 1
        return done

    def close(self) -> None:
        self.keeper.stop()
        self.executor.close()


NOT_A_COMMAND = """\
{name} is part of the redflow-mp library, not a command.
  Run workflows:      redflow-supervisor --app APP --module MODULE
                      (or python -m redflow_supervisor; --help documents every setting)
  Inspect and operate: redflow runs list | redflow --help
                      (or python -m redflow_supervisor.ops)
  In-process worker:  from redflow_mp import Worker; Worker(client).run()"""


if __name__ == "__main__":  # python -m redflow_mp.worker: say where the commands are
    import sys

    print(NOT_A_COMMAND.format(name="redflow_mp.worker"), file=sys.stderr)
    raise SystemExit(2)
