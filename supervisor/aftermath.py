"""What becomes of a dead child's runs: the arbiter's side of run recovery.

When a child is reaped, its board entry still says which runs it held (with
their lease tokens) and which claim it had in flight; :class:`Aftermath` hands
them to the library (:mod:`redflow_mp.recovery`), which decides what each run
becomes, counts what went back, and starts ``on_failure`` (in a short-lived
process of its own, never in the arbiter) for a run the supervisor failed: a
run over ``max_run_crashes``, or a timeout on its last attempt.
"""

from __future__ import annotations

from collections.abc import Callable

from redflow_mp import hookdue, recovery
from redflow_mp.client import Client
from redflow_mp.recovery import Abort, HeldRun, Recovered
from redflow_mp.registry import Registry

from .board import BoardEntry
from .child import ChildSpec
from .children import Child, Helpers
from .exposition import MetricsStore

__all__ = ["Aftermath"]


class Aftermath:
    """Recovers the runs of dead children for one arbiter."""

    def __init__(
        self,
        client: Client,
        helpers: Helpers,
        helper_spec: Callable[[], ChildSpec],
        metrics: MetricsStore,
    ) -> None:
        self.client = client
        self.helpers = helpers
        self.helper_spec = helper_spec
        self.metrics = metrics

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
        """Record the run it was aborting, put back the others (charging the one it
        was executing a crash unless the supervisor stopped it), then the claim it
        had in flight. A run failed here whose workflow has ``on_failure`` is
        recorded as due with its failure (``redflow_mp.hookdue``), and its
        helper removes the entry once the hook returned."""
        hooked = hookdue.hooked(registry)
        if child.abort is not None:
            reason, target, _ = child.abort
            done = recovery.abort_run(
                self.client,
                registry,
                HeldRun(target.run_id, target.token),
                Abort[reason.name],
                target.timeout,
                hooked,
            )
            self._on_failure(done, registry)
        for done in recovery.recover_runs(
            self.client,
            [HeldRun(h.run_id, h.token) for h in child.left_behind(entry.held)],
            cause=cause,
            stopping=stopping,
            charge_crash=not stopping and child.abort is None,
            max_crashes=max_crashes,
            hooked=hooked,
        ):
            if done.failed:
                self._on_failure(done, registry)
            elif done.status is not None:
                self._requeued("shutdown" if stopping else "crash")
        # The child publishes each claim's lease token before sending it: a death
        # between the claim's reply and the board push leaves a run found by it.
        if entry.claim_token:
            for done in recovery.requeue_claim(self.client, entry.claim_token, cause, lease_ms):
                if done.status == "queued":
                    self._requeued("crash")

    def _requeued(self, reason: str) -> None:
        self.metrics.inc("redflow_runs_requeued_total", 1.0, reason=reason)

    def _on_failure(self, done: Recovered, registry: Registry) -> None:
        wf = registry.get(done.workflow) if done.failed else None
        if wf is not None and wf.on_failure is not None:
            self.helpers.start(self.helper_spec(), registry, done.run_id)
