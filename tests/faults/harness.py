"""The per-test harness of the fault cases (:class:`Faults`): private Redis
servers, supervisors with the ledger wired in, the workload's threads
(:mod:`tests.faults.drivers`), and the final settle + check; the closing table's rows.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from redis import Redis

from tests.faults import diagnose, invariants, ledger
from tests.faults.drivers import NETWORK, TERMINAL, Plan, Producer, Progress, Sender, WaitWatcher
from tests.faults.processes import ExitWatcher, debug_args
from tests.faults.workload import LIMITS
from tests.helpers import texts
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer

__all__ = ["RESULTS", "CaseResult", "Faults", "faults_harness"]


@dataclass
class CaseResult:
    """One row of the closing table."""

    case: str
    runs: int
    lost: int
    reexecuted: int
    recovery_s: float | None
    note: str = ""


RESULTS: list[CaseResult] = []


@dataclass
class Faults:
    """Per-test harness: servers, supervisors, producer, ledger, final check."""

    tmp: Path
    prefix: str
    servers: list[RedisServer] = field(default_factory=list)
    sups: list[Supervisor] = field(default_factory=list)
    producers: list[Producer] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    exits: ExitWatcher | None = None
    senders: list[Sender] = field(default_factory=list)
    watcher: WaitWatcher | None = None

    def __post_init__(self) -> None:
        self.ledger_dir = self.tmp / "ledger"
        self.ledger_dir.mkdir(exist_ok=True)
        self.ledger = ledger.Ledger(self.ledger_dir)
        self.env = {ledger.ENV: str(self.ledger_dir), **self.env}

    # ---------------------------------------------------------------- servers

    def redis(self, *extra: str, data_dir: str | None = None) -> RedisServer:
        args = [*debug_args(), *extra]
        server = RedisServer(args, data_dir=data_dir).start()
        self.servers.append(server)
        return server

    # ------------------------------------------------------------ supervisors

    def supervisor(
        self,
        url: str,
        *,
        procs: int = 2,
        modules: Sequence[str] = ("tests.faults.workload",),
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        prefix: str | None = None,
        app: str = "faults",
        watch_exits: bool = False,
    ) -> Supervisor:
        """A supervisor of the fault workload with the product's DEFAULT settings
        (SPEC §5: lease 5 s, reaper 500 ms, kill_grace 5 s, restart backoff 1-30 s)
        plus ``args``: users run the defaults, so a case proves recovery with them
        unless it is about a setting (``SHORT`` is the suite's old short set)."""
        sup = Supervisor(
            url,
            prefix or self.prefix,
            self.tmp / f"supervisor-{len(self.sups)}.log",
            procs=procs,
            modules=modules,
            app=app,
            args=list(args),
            env={**self.env, **(env or {})},
        )
        self.sups.append(sup.start())
        if watch_exits:
            if self.exits is None:
                self.exits = ExitWatcher(self.ledger_dir)
            self.exits.sups.append(sup)
        return sup

    def group_pids(self, sup: Supervisor) -> list[int]:
        """The supervisor's parent and its live children."""
        pids = [sup.pid]
        with contextlib.suppress(psutil.Error):
            pids += [p.pid for p in psutil.Process(sup.pid).children(recursive=True)]
        return pids

    def fault(self, kind: str, pids: Sequence[int] = (), **fields: Any) -> float:
        """Record a fault in the ledger; returns the monotonic time it was recorded.

        The checker uses kill/stop/cont times and each fault's span: ``seconds=``
        when its length is known, else until a ``<kind>-end`` fault is recorded.
        """
        self.ledger.append("fault", kind=kind, pids=list(pids), **fields)
        return time.monotonic()

    def stop(self, pids: Sequence[int], group: int | None = None, **fields: Any) -> float:
        """SIGSTOP ``pids`` (the process group ``group`` when given) and record it:
        the ``stop`` fault just before the signal, ``stop-landed`` once sending it
        returned (the checker's bound on writes sent before the stop); returns the
        monotonic time of the ``stop`` record."""
        t = self.fault("stop", pids, **fields)
        if group is not None:
            os.killpg(group, signal.SIGSTOP)
        else:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
        self.ledger.append("stop-landed", pids=list(pids))
        return t

    def kill_group(self, sup: Supervisor) -> float:
        pids = self.group_pids(sup)
        t = self.fault("kill", pids)
        sup.kill_group(signal.SIGKILL)
        assert sup.proc is not None
        sup.proc.wait(timeout=10)
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(timeout=10)
        return t

    # ---------------------------------------------------------------- workload

    def producer(
        self,
        url: str,
        n: int,
        *,
        rate: float = 0.0,
        seed: int = 7,
        timeout: float | None = None,
        items: Sequence[tuple[str, Any, str | None]] | None = None,
        shards: int = 1,
    ) -> Producer:
        """A producer of ``n`` runs of the standard mix, or of ``items``
        ((workflow, input, idempotency key), ``n`` ignored); ``shards``: the
        prefix's recorded count (its client refuses another)."""
        prod = Producer(
            url, self.prefix, Plan(n, seed=seed), self.ledger_dir, rate, timeout, items, shards
        )
        self.producers.append(prod)
        return prod

    def sender(self, url: str, rate: float = 0.0) -> Sender:
        """An event sender; ``rate`` paces it (events/s, 0 = as fast as it can)."""
        snd = Sender(url, self.prefix, self.ledger_dir, rate)
        self.senders.append(snd)
        return snd

    def watch_waits(self, url: str, bound_ms: int = invariants.WAKE_BOUND_MS) -> WaitWatcher:
        """Start the live I9 check (its findings go into :meth:`finish`'s report)."""
        self.watcher = WaitWatcher(url, self.prefix, bound_ms)
        return self.watcher

    def sample(self, url: str) -> Progress:
        prog = Progress(url, self.prefix).start()
        self.progress.append(prog)
        return prog

    def unfinished(self, raw: Redis) -> int:
        """Runs in Redis (or acknowledged) that are not terminal yet."""
        return len(self.unfinished_ids(raw))

    def unfinished_ids(self, raw: Redis) -> list[str]:
        """The ids of :meth:`unfinished`'s runs.

        The list of runs and their statuses are two reads: a parent may start a
        child (``emit_workflow``) and end between them, its status read terminal
        and the child never read. The list is read again after the statuses: a
        run it gained was created before a status read saw its parent end, and
        counts as unfinished (the next poll reads its status)."""
        tag = "{" + self.prefix + "}"
        created = f"{tag}:runs:created"
        ids = set(texts(raw.zrange(created, 0, -1)))
        for prod in self.producers:
            ids.update(prod.ids)
        order = sorted(ids)
        with raw.pipeline(transaction=False) as pipe:
            for run_id in order:
                pipe.hget(f"{tag}:run:{run_id}", "status")
            statuses = pipe.execute()
        late = sorted(set(texts(raw.zrange(created, 0, -1))) - ids)
        return [i for i, s in zip(order, statuses, strict=True) if s not in TERMINAL] + late

    def settle(self, raw: Redis, timeout: float) -> bool:
        """Wait until every run is terminal; False once ``timeout`` seconds passed
        with no run finishing (the check will say why).

        The deadline counts from the last progress, not from the call: a fixed one
        failed cases on a loaded machine (a load of 15-20 on 2 cores) with every run
        still moving at 15-25 executions a second and a few hundred left. A run
        that is stuck still fails the case: once the others are done, nothing
        finishes for ``timeout`` seconds (the pytest timeout bounds the whole)."""
        best: int | None = None
        since = time.monotonic()
        while True:
            try:
                left = self.unfinished(raw)
            except NETWORK:
                left = None
            if left == 0:
                return True
            if left is not None and (best is None or left < best):
                best, since = left, time.monotonic()
            if time.monotonic() - since >= timeout:
                return False
            time.sleep(0.1)

    def assert_no_crash(self) -> None:
        """No supervisor exited and no process of theirs crashed (tracebacks, worker deaths)."""
        for sup in self.sups:
            log = sup.log()
            assert sup.proc is not None and sup.proc.poll() is None, f"supervisor died:\n{log}"
            bad = [
                line
                for line in log.splitlines()
                if "Traceback" in line or " crashed" in line or ") died: " in line
            ]
            assert not bad, f"{sup.log_path.name}: processes crashed: {bad[:5]}\n{log[-3000:]}"

    def stop_all(self) -> None:
        for sup in self.sups:
            if sup.proc is not None and sup.proc.poll() is None:
                sup.stop()

    def check(self, raw: Redis) -> invariants.Report:
        live: list[str] = []
        if self.watcher is not None:
            live = self.watcher.stop()
            self.watcher = None
        return invariants.check(
            raw, self.prefix, self.ledger_dir, limits=LIMITS, live_violations=live
        )

    def finish(
        self,
        raw: Redis,
        case: str,
        *,
        recovery_s: float | None,
        settle_timeout: float = 60.0,
        note: str = "",
        context: Callable[[], str] | None = None,
    ) -> invariants.Report:
        """Settle, stop the supervisors (drain), check every invariant, record the row.

        A run left unfinished is described (``diagnose.describe_runs``: where
        Redis keeps it, as the server ``raw`` reads says) at the settle deadline,
        supervisors still running, and again at the check, with ``context()``
        (e.g. who the sentinels name as master) and the supervisors' log tails."""
        settled = self.settle(raw, settle_timeout)
        marks = {"settle returned": ledger.mono_ns()}
        at_deadline = ""
        if not settled:
            stuck = self._safe(lambda: self.unfinished_ids(raw))
            at_deadline = self._safe(lambda: diagnose.describe_runs(raw, self.prefix, stuck))
            at_deadline += "\n" + (self._safe(context) if context is not None else "")
        self.stop_all()
        marks["supervisors stopped"] = ledger.mono_ns()
        if self.exits is not None:
            self.exits.close()  # every exit is in the ledger before the check reads it
            self.exits = None
        report = self.check(raw)
        RESULTS.append(
            CaseResult(
                case, report.runs, len(report.lost), len(report.reexecuted), recovery_s, note
            )
        )
        print(f"\n[{case}] settled={settled} recovery={recovery_s}\n{report.summary()}")
        if at_deadline:
            print(
                f"--- unfinished runs at the settle deadline (supervisors running)\n{at_deadline}"
            )
        if report.stuck:
            if settled:
                print("--- settle saw every run it read terminal; not these (unread, or changed)")
            print(
                "--- unfinished runs at the check (supervisors stopped)\n"
                + self._safe(lambda: diagnose.describe_runs(raw, self.prefix, report.stuck))
            )
            if context is not None:
                print(self._safe(context))
            print(
                self._safe(lambda: diagnose.ledger_timeline(self.ledger_dir, report.stuck, marks))
            )
        if not settled or report.stuck:
            for sup in self.sups:
                print(f"--- {sup.log_path.name} (tail)\n{sup.log()[-4000:]}")
        return report

    def finish_ok(
        self,
        raw: Redis,
        case: str,
        *,
        recovery_s: float | None,
        settled: bool | None = None,
        **finish: Any,
    ) -> invariants.Report:
        """:meth:`finish`, then assert every invariant held and every run succeeded;
        ``settled``: the case's own :meth:`settle` before, asserted after the report
        (which says why, when it timed out)."""
        report = self.finish(raw, case, recovery_s=recovery_s, **finish)
        report.assert_ok(all_succeeded=True)
        if settled is not None:
            assert settled, f"{case}: runs still unfinished at the settle deadline"
        return report

    @staticmethod
    def _safe(fn: Callable[[], Any]) -> Any:
        """A diagnostic's result, or its error as text (it must not hide the failure)."""
        try:
            return fn()
        except Exception as exc:
            return f"<diagnostic failed: {type(exc).__name__}: {exc}>"

    def close(self) -> None:
        for prod in self.producers:
            prod.close()
        for snd in self.senders:
            snd.close()
        if self.watcher is not None:
            self.watcher.stop()
        for prog in self.progress:
            prog.stop()
        if self.exits is not None:
            self.exits.close()
        for sup in self.sups:
            with contextlib.suppress(Exception):
                sup.stop()
        for server in self.servers:
            server.cleanup()
        self.ledger.close()


@contextlib.contextmanager
def faults_harness(tmp: Path, prefix: str) -> Iterator[Faults]:
    fx = Faults(tmp, prefix)
    try:
        yield fx
    finally:
        fx.close()
