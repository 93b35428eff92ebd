"""Building blocks of the fault cases: private Redis servers, supervisors with
the ledger wired in, a producer thread that enqueues the workload while faults
happen, a progress sampler for recovery times, and the final settle + check.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from redis import Redis

from redflow_mp import Client, RedflowError, create_client
from tests.faults import diagnose, invariants, ledger
from tests.faults.workload import LIMITS, WORKFLOWS
from tests.faults.workload_waits import WAIT_WORKFLOWS
from tests.helpers import texts
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer

__all__ = [
    "ONE_WORKLOAD_CHILD",
    "RESULTS",
    "SHORT",
    "WAIT_MODULES",
    "CaseResult",
    "Faults",
    "Producer",
    "Progress",
    "Sender",
    "WaitWatcher",
    "wait_for",
]

# Arguments of a one-child supervisor on the fault workload (start-up refusal tests).
ONE_WORKLOAD_CHILD = ("--app", "x", "--procs", "1", "--module", "tests.faults.workload")

#: Short settings (lease 1 s, reaper 100 ms, kill_grace 0.5 s, restart backoff
#: 0.1-0.5 s), which every case used to run with; a case about a short lease names
#: them (``args=SHORT``) next to its variant with the defaults.
SHORT = (
    "--lease-ms",
    "1000",
    "--reaper-interval-ms",
    "100",
    "--kill-grace",
    "0.5",
    "--restart-backoff",
    "0.1",
    "--restart-backoff-max",
    "0.5",
)

# Modules of a supervisor that serves the durable-wait workflows too.
WAIT_MODULES = ("tests.faults.workload", "tests.faults.workload_waits")
ALL_WORKFLOWS = {**WORKFLOWS, **WAIT_WORKFLOWS}

TERMINAL = (b"succeeded", b"failed", b"canceled")
_NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError)


def wait_for(
    predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until truthy (returned) or raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except _NETWORK:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


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


class ExitWatcher:
    """Notes in the ledger (``exit``) when a child of a watched supervisor is gone.

    A child its supervisor SIGKILLs (a timeout past kill_grace) writes no
    ``handler-end``; this gives its execution an end for the checker. Polled
    every 10 ms, so the time is an upper bound of the death, a few ms late.
    """

    def __init__(self, ledger_dir: Path) -> None:
        self.ledger = ledger.Ledger(ledger_dir)
        self.sups: list[Supervisor] = []
        self._known: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-exits", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            for sup in list(self.sups):
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(sup.pid).children():
                        self._known.setdefault(child.pid, child)
            self._sweep()

    def _sweep(self) -> None:
        for pid, proc in list(self._known.items()):
            try:
                gone = not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            if gone:
                self.ledger.append("exit", pids=[pid])
                del self._known[pid]

    def close(self) -> None:
        """Stop watching; children seen and gone by now are in the ledger."""
        self._stop.set()
        self._thread.join(5)
        self._sweep()
        self.ledger.close()


class Progress:
    """Samples the number of finished runs every 20 ms (own connection, survives outages)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.keys = [f"{{{prefix}}}:runs:status:{s}" for s in ("succeeded", "failed", "canceled")]
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-progress", daemon=True)

    def start(self) -> Progress:
        self._thread.start()
        return self

    def _loop(self) -> None:
        r = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while not self._stop.wait(0.02):
                try:
                    with r.pipeline(transaction=False) as pipe:
                        for k in self.keys:
                            pipe.zcard(k)
                        done = sum(pipe.execute())
                except (*_NETWORK, redis.ResponseError):
                    continue
                self.samples.append((time.monotonic(), done))
        finally:
            r.close()

    def done(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def first_progress_after(self, t: float) -> float | None:
        """Seconds from ``t`` until the finished count first rose above its value at ``t``."""
        base: int | None = None
        for at, done in self.samples:
            if at <= t:
                base = done
                continue
            if base is None:
                base = done
                continue
            if done > base:
                return at - t
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Plan:
    """The workload: ``n`` runs over the workflows, some with idempotency keys."""

    n: int
    seed: int = 7
    mix: Sequence[tuple[str, float]] = (
        ("fx-chain", 0.5),
        ("fx-limited", 0.15),
        ("fx-parent", 0.15),
        ("fx-flaky", 0.15),
        ("fx-slow", 0.05),
    )
    keyed: float = 0.3
    duplicate: float = 0.05

    def items(self) -> list[tuple[str, Any, str | None]]:
        rng = random.Random(self.seed)
        names = [name for name, _ in self.mix]
        weights = [w for _, w in self.mix]
        out: list[tuple[str, Any, str | None]] = []
        keys: list[tuple[str, str]] = []
        key: str | None
        for i in range(self.n):
            if keys and rng.random() < self.duplicate:
                wf, key = rng.choice(keys)
                out.append((wf, i, key))
                continue
            wf = rng.choices(names, weights)[0]
            key = f"k-{self.seed}-{i}" if rng.random() < self.keyed else None
            if key:
                keys.append((wf, key))
            out.append((wf, i, key))
        return out


class Producer:
    """Enqueues a :class:`Plan` from a thread at ``rate`` runs/s, retrying through
    outages; each acknowledged run id goes to the ledger (``enqueued``)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        plan: Plan,
        ledger_dir: Path,
        rate: float,
        timeout: float | None = None,
        items: Sequence[tuple[str, Any, str | None]] | None = None,
        shards: int = 1,
    ) -> None:
        self.client: Client = create_client(url, prefix=prefix, default=False, shards=shards)
        self.timeout = timeout
        self.plan = plan
        self.items = list(items) if items is not None else plan.items()
        self.ledger = ledger.Ledger(ledger_dir)
        self.rate = rate
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.retries = 0
        self._thread = threading.Thread(target=self._loop, name="faults-producer", daemon=True)
        self._stop = threading.Event()

    def start(self) -> Producer:
        self._thread.start()
        return self

    def _enqueue(self, wf: str, value: Any, key: str | None) -> str:
        delay = 0.05
        deadline = time.monotonic() + 120
        while True:
            try:
                return self.client.enqueue_workflow(
                    ALL_WORKFLOWS[wf], value, idempotency_key=key, timeout=self.timeout
                ).id
            except (*_NETWORK, RedflowError) as exc:
                self.retries += 1
                if len(self.errors) < 50:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _loop(self) -> None:
        started = time.monotonic()
        for i, (wf, value, key) in enumerate(self.items):
            if self._stop.is_set():
                return
            due = started + i / self.rate if self.rate > 0 else started
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            run_id = self._enqueue(wf, value, key)
            self.ledger.append("enqueued", run=run_id, wf=wf, key=key)
            self.ids.append(run_id)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish enqueueing in time"
        assert len(self.ids) == len(self.items), f"enqueued {len(self.ids)} of {len(self.items)}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()
        self.ledger.close()


class Sender:
    """Sends events from a thread, retrying through outages; logs each acknowledged
    ``send_event`` to the ledger (``event-sent``, the payload's event id ``eid``).
    A send whose reply was lost is retried with the same payload (``eid``)."""

    def __init__(self, url: str, prefix: str, ledger_dir: Path, rate: float = 0.0) -> None:
        self.client: Client = create_client(url, prefix=prefix, default=False)
        self.ledger = ledger.Ledger(ledger_dir)
        self.pause = 1.0 / rate if rate > 0 else 0.0
        self.queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self.sent = 0
        self.refused: list[str] = []
        self.retries = 0
        self._thread = threading.Thread(target=self._loop, name="faults-sender", daemon=True)
        self._thread.start()

    def put(self, run_id: str, event: str, eid: str) -> None:
        self.queue.put((run_id, event, eid))

    def _send(self, run_id: str, event: str, eid: str) -> bool:
        """send_event, retried through outages. send_event is not idempotent and
        raises after a lost reply: before sending again, look whether the event
        was stored (pending, or consumed by a step) and do not send it twice."""
        delay = 0.05
        deadline = time.monotonic() + 120
        unsure = False
        while True:
            try:
                if unsure and self._stored(run_id, event, eid):
                    return True
                return self.client.send_event(run_id, event, {"eid": eid})
            except (*_NETWORK, RedflowError):
                self.retries += 1
                unsure = True
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _stored(self, run_id: str, event: str, eid: str) -> bool:
        r = self.client.redis
        keys = self.client.keys
        needle = f'"eid":"{eid}"'
        if any(needle in item for item in texts(r.lrange(keys.run_events(run_id, event), 0, -1))):
            return True
        escaped = needle.replace('"', '\\"')  # the payload as a string inside a step record
        return any(escaped in rec for rec in texts(r.hvals(keys.run_steps(run_id))))

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                run_id, event, eid = item
                if self.pause:
                    time.sleep(self.pause)  # pacing (a backlog across a fault)
                acked = self._send(run_id, event, eid)
                self.ledger.append("event-sent", run=run_id, event=event, eid=eid, acked=acked)
                if acked:
                    self.sent += 1
                else:
                    self.refused.append(eid)
            finally:
                self.queue.task_done()

    def drain(self, timeout: float) -> None:
        """Wait until every event put so far was sent (or refused)."""
        wait_for(lambda: self.queue.unfinished_tasks == 0, timeout, "the events to be sent")

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(10)
        self.client.close()
        self.ledger.close()


class WaitWatcher:
    """Runs the checker's live I9 (:func:`invariants.check_waits`) every 0.2 s:
    no suspended run whose condition holds stays suspended past the bound.
    ``paused()`` covers a fault (nothing can wake during it) and the bound after it."""

    def __init__(self, url: str, prefix: str, bound_ms: int = invariants.WAKE_BOUND_MS) -> None:
        self.url = url
        self.prefix = prefix
        self.bound_ms = bound_ms
        self.violations: dict[str, str] = {}
        self.snapshots = 0
        self.most_suspended = 0
        self._quiet_until = 0.0
        self._pauses = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-waits", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            self._quiet_until = time.monotonic() + self.bound_ms / 1000.0

    def _loop(self) -> None:
        r = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        key = f"{{{self.prefix}}}:runs:status:suspended"
        try:
            interval = 0.2
            while not self._stop.wait(interval):
                if self._pauses or time.monotonic() < self._quiet_until:
                    continue
                began = time.monotonic()
                try:
                    self.most_suspended = max(self.most_suspended, int(r.zcard(key)))
                    found = invariants.check_waits(r, self.prefix, self.bound_ms)
                except (*_NETWORK, redis.ResponseError):
                    continue
                # with many runs suspended a snapshot is costly: at most a third of the time
                interval = max(0.2, 2 * (time.monotonic() - began))
                if self._pauses or time.monotonic() < self._quiet_until:
                    continue  # a fault began during the snapshot
                self.snapshots += 1
                for text in found:
                    run_id = text.split(" run ", 1)[-1].split()[0].rstrip(":")
                    self.violations.setdefault(run_id, text)
        finally:
            r.close()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return list(self.violations.values())


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
        args = ["--enable-debug-command", "local", *extra]
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
            except _NETWORK:
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


def busy_children(sup: Supervisor) -> list[tuple[psutil.Process, str]]:
    """(process, run id) of children whose title says they are running a run."""
    out = []
    try:
        kids = psutil.Process(sup.pid).children()
    except psutil.Error:
        return []
    for p in kids:
        try:
            title = " ".join(p.cmdline())
            if " running " in title and p.status() != psutil.STATUS_ZOMBIE:
                out.append((p, title.split()[-1]))
        except psutil.Error:
            continue
    return out


def running_leases(
    raw: redis.Redis, prefix: str, ids: Sequence[str] | None = None
) -> dict[str, bytes]:
    """{run id: lease token} of running runs with a live lease (all of them, or of
    ``ids``): the run hash's ``lease`` field, while its ``leases`` score is not past."""
    tag = "{" + prefix + "}"
    if ids is None:
        ids = texts(raw.zrange(f"{tag}:runs:status:running", 0, -1))
    secs, micros = raw.time()
    now = secs * 1000 + micros // 1000
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(f"{tag}:run:{run_id}", "lease")
            pipe.zscore(f"{tag}:leases", run_id)
        replies = pipe.execute()
    out = {}
    for i, run_id in enumerate(ids):
        token, expiry = replies[2 * i], replies[2 * i + 1]
        if token and expiry is not None and expiry >= now:
            out[run_id] = token
    return out


def taken_over(raw: redis.Redis, prefix: str, snapshot: dict[str, bytes]) -> bool:
    """True once every run of ``snapshot`` (running under a lease at the fault) is
    finished, leased under another token, or moved on by a new execution:
    ``suspended`` (a parent of ``fx-parent`` waits for its child, which a loaded
    machine with a 5 s lease left behind hundreds of queued runs: case 2 timed out
    after 20 s waiting for the stranded runs) or ``scheduled`` (a retry's backoff).
    The reaper puts a stranded run back ``queued``: that is not taken over yet."""
    tag = "{" + prefix + "}"
    ids = list(snapshot)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(f"{tag}:run:{run_id}", "status")
            pipe.hget(f"{tag}:run:{run_id}", "lease")
        replies = pipe.execute()
    for i, run_id in enumerate(ids):
        status, token = replies[2 * i], replies[2 * i + 1]
        if status in TERMINAL or status in (b"suspended", b"scheduled"):
            continue
        if token is None or token == snapshot[run_id]:
            return False
    return True


def restart_redis(server: RedisServer, down_for: float) -> tuple[float, float]:
    """SIGKILL ``server``, keep it down ``down_for`` s, start it on the same port and
    data dir; returns (monotonic time of the kill, of the restart)."""
    server.kill()
    t_down = time.monotonic()
    if server.proc is not None and server.proc.stderr is not None:
        server.proc.stderr.close()  # RedisServer.kill leaves the pipe open
    server.proc = None
    wait_for(lambda: time.monotonic() - t_down >= down_for, down_for + 5, "the outage")
    server.start()
    return t_down, time.monotonic()
