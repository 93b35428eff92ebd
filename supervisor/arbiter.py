"""The arbiter: the supervisor's single-threaded parent loop.

One iteration: wait on the signal pipe (timeout = the nearest duty, backoff or
kill deadline, at most 1 s), dispatch signals, reap children, watch the live
ones (readiness, run timeouts, ignored cancellations, kill deadlines), refill
slots, run the duties that are due (lease backstop, leader lock, cron,
promoter, reaper, retention, memory check).

Invariants:
- The parent never runs threads (fork safety); every wait is the select on
  the signal pipe.
- When a child dies holding runs (read from the shared board), those runs go
  back to ``ready`` at once, fenced by their lease tokens; the run the child
  was executing is charged a crash (``max_run_crashes`` turns a poison pill
  into a failed run).
- A Redis outage never stops the arbiter: duties log and retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psutil
import redis
from redis.exceptions import AuthorizationError

from redflow_mp import __version__, codec
from redflow_mp.board import AbortReason, Board, Held, SlotState
from redflow_mp.child import ChildSpec, ExitCode, set_title
from redflow_mp.client import Client, create_client
from redflow_mp.codec import ErrorInfo
from redflow_mp.errors import RedisOutOfMemoryError
from redflow_mp.metrics import Labels
from redflow_mp.migrate import keyspace_problem
from redflow_mp.ops import SupervisorStatus, queue_stats
from redflow_mp.registry import Registry
from redflow_mp.retry import backoff_seconds
from redflow_mp.settings import Settings
from redflow_mp.transport import mask_url

from .children import Child, ExitInfo, decode_status, fork_child, fork_on_failure
from .duties import Duty
from .duties.cron import CronDuty
from .duties.leader import LeaderDuty
from .duties.promoter import PromoterDuty
from .duties.reaper import ReaperDuty
from .duties.retention import RetentionDuty
from .duties.status import ChildStatus, ProcessSampler, StatusDuty, supervisor_id
from .metrics import MetricsHub
from .restart import RestartPolicy, SlotTracker
from .restart import SlotState as Restart
from .signals import SignalPipe

__all__ = ["Arbiter", "Reloaded"]

log = logging.getLogger("redflow_supervisor")

_NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError, RedisOutOfMemoryError)
# How long an on_failure hook run by the supervisor may take before it is killed.
_ON_FAILURE_LIMIT = 60.0
# Putting back a dead child's runs must never stop the arbiter: any Redis error
# there is logged and left to the reaper (the leases expire).
_RECOVERY = (*_NETWORK, redis.RedisError)


class Mode(Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass(slots=True)
class Slot:
    tracker: SlotTracker
    pid: int | None = None
    pending: int | None = None


@dataclass(frozen=True, slots=True)
class Reloaded:
    settings: Settings
    registry: Registry


class Arbiter:
    """Forks and supervises the children; runs the leader duties."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        reload: Callable[[], Reloaded] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._reload = reload
        self.mode = Mode.RUNNING
        self.exit_code = 0
        self.generation = 0
        self.target = settings.effective_procs
        self.slots: dict[int, Slot] = {}
        self.children: dict[int, Child] = {}
        self.helpers: dict[int, float] = {}  # on_failure processes: pid -> kill deadline
        capacity = max(256, self.target * 2 + 16)
        self.board = Board(capacity)
        self.free_entries = list(range(capacity - 1, -1, -1))
        self.pipe: SignalPipe | None = None
        self.client: Client | None = None
        self.duties: list[tuple[Duty, float]] = []
        self.leader: LeaderDuty | None = None
        self.deadline: float | None = None
        self._next_backstop = 0.0
        self._next_memory = 0.0
        self._duty_errors: dict[str, float] = {}
        self.queues: tuple[str, ...] = ()
        self.title = f"redflow-supervisor[{settings.app}]"
        self.id = supervisor_id()
        self.started_ms = int(time.time() * 1000)
        self.sampler = ProcessSampler()
        self.status: StatusDuty | None = None
        self.restarts: dict[int, int] = {}
        self.hub: MetricsHub | None = None
        self.selector: selectors.BaseSelector | None = None

    # ------------------------------------------------------------------ setup

    def _policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(
            base=s.restart_backoff,
            cap=s.restart_backoff_max,
            max_start_failures=s.max_start_failures,
        )

    def _connect(self) -> Client:
        s = self.settings
        client = create_client(
            s.url,
            prefix=s.prefix,
            registry=self.registry,
            default=False,
            max_payload_bytes=s.max_payload_bytes,
        )
        deadline = time.monotonic() + 15.0
        delay = 0.1
        while True:
            try:
                problem = keyspace_problem(client, self.queues, [wf.name for wf in self.registry])
                if problem is not None:
                    client.close()
                    raise SystemExit(f"redflow-supervisor: {problem}")
                client.sync_registry(self.registry, app=s.app)
                return client
            except (redis.AuthenticationError, AuthorizationError) as exc:
                client.close()
                raise SystemExit(
                    f"redflow-supervisor: Redis at {mask_url(s.url)} refused the credentials: {exc}"
                ) from None
            except _NETWORK as exc:
                if time.monotonic() >= deadline:
                    client.close()
                    raise SystemExit(
                        f"redflow-supervisor: cannot reach Redis at {mask_url(s.url)}: {exc}"
                    ) from None
                log.warning("Redis at %s unreachable (%s); retrying", mask_url(s.url), exc)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _build_duties(self, client: Client) -> None:
        s = self.settings
        self.leader = LeaderDuty(client, s.cron_lock_ttl_ms)
        store = self.hub.store if self.hub is not None else None
        self.duties = [
            (self.leader, 0.0),
            (CronDuty(client, self.leader, metrics=store), 0.0),
            (PromoterDuty(client, s.promoter_interval_ms), 0.0),
            (
                ReaperDuty(client, s.reaper_interval_ms, metrics=store, queues=lambda: self.queues),
                0.0,
            ),
            (RetentionDuty(client, s.run_retention, queues=lambda: self.queues), 0.0),
        ]
        self.status = StatusDuty(client, self._snapshot)
        self.duties.append((self.status, 0.0))

    def _snapshot(self) -> SupervisorStatus:
        """This supervisor and its children, for the status record."""
        now_ms = int(time.time() * 1000)
        children = []
        for child in sorted(self.children.values(), key=lambda c: (c.slot, c.pid)):
            entry = self.board.read(child.index)
            rss, cpu = self.sampler.sample(child.pid)
            current = entry.current
            state = entry.state.name.lower() if child.stop_sent is None else "stopping"
            children.append(
                ChildStatus(
                    slot=child.slot,
                    pid=child.pid,
                    state=state,
                    run_id=current.run_id if current else None,
                    workflow=current.workflow if current else None,
                    run_started_at=(
                        now_ms - int((time.monotonic() - current.started) * 1000)
                        if current
                        else None
                    ),
                    rss=rss,
                    cpu_percent=cpu,
                    runs_done=entry.runs_done,
                    restarts=self.restarts.get(child.slot, 0),
                )
            )
        self.sampler.forget(set(self.children))
        own_rss, _ = self.sampler.sample(os.getpid())
        return SupervisorStatus(
            id=self.id,
            app=self.settings.app,
            host=self.id.rsplit(":", 1)[0],
            pid=os.getpid(),
            started_at=self.started_ms,
            updated_at=now_ms,
            mode=self.mode.value,
            leader=bool(self.leader and self.leader.is_leader),
            queues=list(self.queues),
            procs=self.target,
            rss=own_rss,
            version=__version__,
            children=children,
        )

    def _resolve_queues(self) -> tuple[str, ...]:
        queues = self.settings.queues or tuple(self.registry.queues())
        if not queues:
            raise SystemExit(
                "redflow-supervisor: no queues to serve: the modules define no workflows "
                "and --queues is empty"
            )
        return tuple(queues)

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Run until drained or stopped; returns the process exit status."""
        self.queues = self._resolve_queues()
        self.registry.freeze()
        self.client = self._connect()
        self.pipe = SignalPipe()
        self._open_selector()
        self._build_duties(self.client)
        set_title(f"{self.title} master")
        log.info(
            "supervisor starting: app=%s procs=%d queues=%s redis=%s prefix=%s",
            self.settings.app,
            self.target,
            ",".join(self.queues),
            mask_url(self.settings.url),
            self.settings.prefix,
        )
        for slot in range(1, self.target + 1):
            self.slots[slot] = Slot(SlotTracker(self._policy()))
        try:
            while True:
                now = time.monotonic()
                self._reconcile(now)
                if self.mode is not Mode.RUNNING and not self.children:
                    break
                timeout = self._next_wakeup(now) - time.monotonic()
                for signum in self._wait(timeout):
                    self._dispatch(signum)
                self._reap()
                now = time.monotonic()
                self._watch(now)
                self._run_duties(now)
        finally:
            self._shutdown()
        log.info("supervisor stopped (exit status %d)", self.exit_code)
        return self.exit_code

    def _next_wakeup(self, now: float) -> float:
        wake = now + 1.0
        for _, due in self.duties:
            wake = min(wake, due)
        wake = min(wake, self._next_backstop)
        for slot in self.slots.values():
            if slot.pid is None and slot.tracker.state is Restart.BACKOFF:
                wake = min(wake, slot.tracker.restart_at)
        for child in self.children.values():
            if child.kill_at is not None:
                wake = min(wake, child.kill_at)
            if not child.ready:
                wake = min(wake, now + 0.02)
        if self.deadline is not None:
            wake = min(wake, self.deadline)
        return max(wake, now + 0.001)

    def _open_selector(self) -> None:
        assert self.pipe is not None
        self.hub = MetricsHub(self._gauges)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.pipe.read_fd, selectors.EVENT_READ, "signals")
        self.selector.register(self.hub.read_fd, selectors.EVENT_READ, "metrics-pipe")
        port = self.settings.metrics_port
        if port:
            try:
                host, bound = self.hub.listen(self.settings.metrics_host, port)
            except OSError as exc:
                raise SystemExit(
                    f"redflow-supervisor: cannot serve metrics on "
                    f"{self.settings.metrics_host}:{port}: {exc}"
                ) from None
            assert self.hub.listener is not None
            self.selector.register(self.hub.listener, selectors.EVENT_READ, "metrics-listen")
            log.info("metrics on http://%s:%d/metrics", host, bound)

    def _wait(self, timeout: float) -> list[int]:
        """Wait for signals, metric deltas and scrapes; return the signals received."""
        assert self.selector is not None and self.pipe is not None and self.hub is not None
        signals: list[int] = []
        for key, _ in self.selector.select(max(0.0, timeout)):
            if key.data == "signals":
                signals.extend(self.pipe.drain())
            elif key.data == "metrics-pipe":
                self.hub.read_pipe()
            elif key.data == "metrics-listen":
                for sock in self.hub.accept():
                    self.selector.register(sock, selectors.EVENT_READ, "metrics-conn")
            elif key.data == "metrics-conn" and self.hub.on_readable(key.fd):
                self.selector.unregister(key.fd)
        return signals

    def _gauges(self) -> list[tuple[str, Labels, float]]:
        out: list[tuple[str, Labels, float]] = [
            ("redflow_children_alive", (), float(len(self.children)))
        ]
        client = self.client
        if client is None:
            return out
        try:
            for q in queue_stats(client):
                for state, value in (
                    ("ready", q.ready),
                    ("processing", q.processing),
                    ("scheduled", q.scheduled),
                ):
                    out.append(
                        ("redflow_queue_depth", (("queue", q.name), ("state", state)), float(value))
                    )
            names = [wf.name for wf in self.registry]
            with client.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.scard(client.keys.wf_running(name))
                counts = pipe.execute()
            for name, count in zip(names, counts, strict=True):
                out.append(("redflow_workflow_running", (("workflow", name),), float(count)))
        except _NETWORK as exc:
            log.debug("metrics gauges unavailable: %s", exc)
        return out

    def _count(self, name: str, **labels: str) -> None:
        if self.hub is not None:
            self.hub.store.inc(name, 1.0, **labels)

    def _shutdown(self) -> None:
        if self.hub is not None:
            self.hub.read_pipe()
            self.hub.shutdown()
        if self.selector is not None:
            self.selector.close()
        if self.status is not None:
            try:
                self.status.remove()
            except Exception as exc:  # pragma: no cover - best effort on exit
                log.debug("could not remove the status record: %s", exc)
        if self.leader is not None:
            try:
                self.leader.resign()
            except Exception as exc:  # pragma: no cover - best effort on exit
                log.warning("could not release the cron leader lock: %s", exc)
        if self.client is not None:
            self.client.close()
        if self.pipe is not None:
            self.pipe.close()
        self.board.close()

    # ------------------------------------------------------------- signals

    def _dispatch(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return
        name = (
            signal.Signals(signum).name
            if signum in signal.Signals._value2member_map_
            else str(signum)
        )
        log.info("received %s", name)
        if signum == signal.SIGTERM:
            if self.mode is Mode.RUNNING:
                self._drain()
            else:
                self._fast_stop()
        elif signum in (signal.SIGINT, signal.SIGQUIT):
            self._fast_stop()
        elif signum == signal.SIGHUP:
            self._hup()
        elif signum == signal.SIGTTIN:
            self._scale(+1)
        elif signum == signal.SIGTTOU:
            self._scale(-1)

    def _drain(self) -> None:
        self.mode = Mode.DRAINING
        self.deadline = time.monotonic() + self.settings.graceful_timeout
        log.info(
            "draining: %d children finish their runs (up to %.1f s)",
            len(self.children),
            self.settings.graceful_timeout,
        )
        self._resign()
        for child in self.children.values():
            if child.stop_sent is None:
                child.stop_sent = "term"
                child.signal(signal.SIGTERM)
        self._ring_bells()

    def _ring_bells(self) -> None:
        """Wake idle children blocked on their queues so they see TERM at once."""
        if self.client is None or not self.children:
            return
        try:
            with self.client.redis.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.lpush(self.client.keys.q_bell(queue), *(["1"] * len(self.children)))
                pipe.execute()
        except _NETWORK as exc:
            log.debug("could not wake idle children: %s", exc)

    def _fast_stop(self) -> None:
        self.mode = Mode.STOPPING
        self.deadline = None
        log.info(
            "fast stop: %d children stop now; their runs go back to the queue", len(self.children)
        )
        self._resign()
        now = time.monotonic()
        for child in self.children.values():
            if child.stop_sent != "kill":
                child.stop_sent = "quit"
                child.kill_at = now + 2.0
                child.signal(signal.SIGQUIT)

    def _resign(self) -> None:
        if self.leader is not None:
            try:
                self.leader.resign()
            except _NETWORK as exc:
                log.warning("could not release the cron leader lock: %s", exc)

    def _hup(self) -> None:
        if self.mode is not Mode.RUNNING:
            return
        if self._reload is not None:
            try:
                reloaded = self._reload()
            except BaseException as exc:
                log.error("reload failed; keeping the current code and settings: %s", exc)
                return
            self.settings = reloaded.settings
            self.registry = reloaded.registry
            self.registry.freeze()
            try:
                self.queues = self._resolve_queues()
            except SystemExit as exc:
                log.error("%s", exc)
                return
            if self.client is not None:
                self.client.registry = self.registry
                try:
                    self.client.sync_registry(self.registry, app=self.settings.app)
                except _NETWORK as exc:
                    log.warning("registry sync after reload failed: %s", exc)
        self.generation += 1
        log.info(
            "rolling restart: generation %d replaces %d children", self.generation, len(self.slots)
        )

    def _scale(self, delta: int) -> None:
        if self.mode is not Mode.RUNNING:
            return
        if delta > 0:
            if len(self.free_entries) < 2:
                log.error("cannot add a child: the status board is full")
                return
            self.target += 1
            slot_no = max(self.slots, default=0) + 1
            self.slots[slot_no] = Slot(SlotTracker(self._policy()))
            log.info("TTIN: %d children", self.target)
            return
        if self.target <= 1:
            log.info("TTOU ignored: one child is the minimum")
            return
        self.target -= 1
        slot_no = max(self.slots)
        slot = self.slots.pop(slot_no)
        for pid in (slot.pid, slot.pending):
            child = self.children.get(pid) if pid is not None else None
            if child is not None:
                self._retire(child)
        log.info("TTOU: %d children", self.target)

    def _retire(self, child: Child) -> None:
        child.retiring = True
        if child.stop_sent is None:
            child.stop_sent = "term"
            child.signal(signal.SIGTERM)
            self._ring_bells()

    # ------------------------------------------------------------- children

    def _child_spec(self, index: int, slot_no: int) -> ChildSpec:
        s = self.settings
        assert self.pipe is not None and self.hub is not None
        return ChildSpec(
            index=index,
            slot=slot_no,
            app=s.app,
            url=s.url,
            prefix=s.prefix,
            queues=self.queues,
            lease_ms=s.lease_ms,
            max_runs=s.max_runs_per_child,
            max_payload_bytes=s.max_payload_bytes,
            close_fds=(*self.pipe.fds, *self.hub.fds_for_children()),
            metrics_fd=self.hub.write_fd,
        )

    def _call_on_failure(self, run_id: str, workflow: str) -> None:
        """The supervisor failed ``run_id`` itself: its workflow's ``on_failure``
        runs once, in a short-lived process of its own (never in the arbiter)."""
        wf = self.registry.get(workflow)
        if wf is None or wf.on_failure is None:
            return
        try:
            pid = fork_on_failure(self._child_spec(-1, 0), self.registry, run_id)
        except OSError as exc:
            log.error("could not start on_failure for run %s: %s", run_id, exc)
            return
        self.helpers[pid] = time.monotonic() + _ON_FAILURE_LIMIT

    def _spawn(self, slot_no: int, now: float) -> Child | None:
        if not self.free_entries:
            log.error("status board full; cannot start worker %d", slot_no)
            return None
        index = self.free_entries.pop()
        spec = self._child_spec(index, slot_no)
        self.board.claim_entry(index, 0)
        pid = fork_child(spec, self.board, self.registry)
        child = Child(
            pid=pid, slot=slot_no, index=index, generation=self.generation, started_at=now
        )
        self.children[pid] = child
        self.restarts[slot_no] = self.restarts.get(slot_no, -1) + 1
        log.debug("started worker %d (pid %d)", slot_no, pid)
        return child

    def _reconcile(self, now: float) -> None:
        if self.mode is not Mode.RUNNING:
            self._check_deadline(now)
            return
        rolling = any(slot.pending is not None for slot in self.slots.values())
        for slot_no, slot in sorted(self.slots.items()):
            tracker = slot.tracker
            if tracker.state is Restart.FATAL:
                continue
            if slot.pid is None:
                if slot.pending is None and tracker.due(now):
                    child = self._spawn(slot_no, now)
                    if child is not None:
                        slot.pid = child.pid
                        tracker.spawned()
                continue
            current = self.children.get(slot.pid)
            stale = current is not None and current.generation < self.generation
            if (
                stale
                and slot.pending is None
                and not rolling
                and (tracker.state is Restart.RUNNING or tracker.due(now))
            ):
                assert current is not None
                child = self._spawn(slot_no, now)
                if child is not None:
                    child.replaces = current.pid
                    slot.pending = child.pid
                    tracker.spawned()
                    rolling = True

    def _check_deadline(self, now: float) -> None:
        if self.mode is Mode.DRAINING and self.deadline is not None and now >= self.deadline:
            log.warning(
                "graceful timeout reached: stopping %d children; their runs go back to the queue",
                len(self.children),
            )
            self.deadline = None
            for child in self.children.values():
                child.stop_sent = "kill"
                child.signal(signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._on_exit(child, decode_status(status))
            else:
                self.helpers.pop(pid, None)

    def _on_exit(self, child: Child, info: ExitInfo) -> None:
        now = time.monotonic()
        entry = self.board.read(child.index)
        we_killed = child.stop_sent == "kill" or (child.abort is not None and info.signal == 9)
        cause = info.describe(we_killed=we_killed)
        self._count("redflow_child_exits_total", cause=self._exit_kind(info, we_killed))
        self._recover(child, entry.held, info, cause)
        self._recover_claim(entry.claim_token, cause)
        self.board.free(child.index)
        self.free_entries.append(child.index)
        self._log_exit(child, info, cause)
        slot = self.slots.get(child.slot)
        if slot is None:
            return
        if slot.pending == child.pid:
            slot.pending = None
            if not child.ready:
                self._after_exit(slot, child, info, now)
            return
        if slot.pid != child.pid:
            return
        slot.pid = None
        if child.replaces is not None:
            return
        if self.mode is not Mode.RUNNING or child.retiring:
            return
        self._after_exit(slot, child, info, now)

    def _after_exit(self, slot: Slot, child: Child, info: ExitInfo, now: float) -> None:
        planned = child.abort is not None or (child.ready and info.clean)
        state = slot.tracker.exited(now, was_ready=child.ready, planned=planned)
        if state is Restart.FATAL:
            log.critical(
                "worker %d failed to start %d times in a row: FATAL; stopping the supervisor",
                child.slot,
                slot.tracker.start_failures,
            )
            self.exit_code = 1
            self._drain()
        elif slot.tracker.restart_at > now:
            log.warning("worker %d restarts in %.1f s", child.slot, slot.tracker.restart_at - now)

    @staticmethod
    def _exit_kind(info: ExitInfo, we_killed: bool) -> str:
        if info.clean:
            return "clean"
        if info.signal is not None:
            return "oom" if info.signal == signal.SIGKILL and not we_killed else "signal"
        if info.code == ExitCode.ABORTED:
            return "aborted"
        if info.code == ExitCode.BOOT_ERROR:
            return "boot"
        return "crash"

    def _log_exit(self, child: Child, info: ExitInfo, cause: str) -> None:
        expected = (
            child.stop_sent is not None or child.retiring or info.clean or child.abort is not None
        )
        if info.code == ExitCode.RECYCLE:
            log.info("worker %d (pid %d) recycled", child.slot, child.pid)
        elif expected:
            log.info("worker %d (pid %d) %s", child.slot, child.pid, cause)
        elif info.signal == signal.SIGKILL:
            log.error("worker %d (pid %d) %s", child.slot, child.pid, cause)
        elif not child.ready:
            log.error("worker %d (pid %d) failed to start: %s", child.slot, child.pid, cause)
        else:
            log.error("worker %d (pid %d) died: %s", child.slot, child.pid, cause)

    # ---------------------------------------------------------- run recovery

    def _recover(self, child: Child, held: tuple[Held, ...], info: ExitInfo, cause: str) -> None:
        """Put back (or finish) the runs a dead child held."""
        client = self.client
        if client is None:
            return
        runs = list(held)
        target: Held | None = None
        if child.abort is not None:
            reason, target, snapshot = child.abort
            known = {h.run_id for h in runs}
            runs = [h for h in snapshot if h.run_id not in known] + runs
            runs = [h for h in runs if h.run_id != target.run_id]
            self._finish_aborted(reason, target)
        planned = child.stop_sent in ("kill", "quit") or self.mode is not Mode.RUNNING
        for position, h in enumerate(reversed(runs)):
            innermost = position == 0 and target is None
            try:
                if innermost and not planned:
                    status = client.scripts.finalize(
                        h.run_id, h.token, "crash", f"worker {cause}", self.settings.max_run_crashes
                    )
                    if status == "failed":
                        log.error(
                            "run %s failed: it killed its worker %d times (last: %s)",
                            h.run_id,
                            self.settings.max_run_crashes,
                            cause,
                        )
                        self._call_on_failure(h.run_id, h.workflow)
                    elif status is not None:
                        self._count("redflow_runs_requeued_total", reason="crash")
                        log.warning("run %s put back after its worker %s", h.run_id, cause)
                else:
                    why = "supervisor stopping" if planned else f"worker {cause}"
                    status = client.scripts.finalize(h.run_id, h.token, "requeue", why, 0)
                    if status is not None:
                        self._count(
                            "redflow_runs_requeued_total", reason="shutdown" if planned else "crash"
                        )
                        log.info("run %s put back (%s)", h.run_id, why)
            except _RECOVERY as exc:
                log.error(
                    "could not put back run %s (%s); the reaper will once its lease expires",
                    h.run_id,
                    exc,
                )

    def _recover_claim(self, token: str, cause: str) -> None:
        """Put back a run the dead child claimed but had not yet published.

        The child writes its lease token to the board before each claim call, so a
        death between the claim's reply and the board push (or inside the call)
        leaves a run we can find by its lease instead of waiting for the reaper.
        """
        client = self.client
        if client is None or not token:
            return
        try:
            ids = client.scripts.requeue_claimed(token, f"worker {cause}", self.settings.lease_ms)
        except _RECOVERY as exc:
            log.error(
                "could not look for a run claimed by the dead worker (%s); "
                "the reaper will put it back once its lease expires",
                exc,
            )
            return
        for run_id, status in ids:
            if status == "queued":
                self._count("redflow_runs_requeued_total", reason="crash")
                log.warning("run %s put back: its worker %s right after claiming it", run_id, cause)
            else:
                log.info(
                    "run %s ended %s: its worker %s right after claiming it", run_id, status, cause
                )

    def _finish_aborted(self, reason: AbortReason, target: Held) -> None:
        client = self.client
        assert client is not None
        try:
            if reason is AbortReason.CANCEL:
                status = client.scripts.finalize(target.run_id, target.token, "canceled", "", 0)
                log.info("run %s canceled (handler stopped after cancel_grace)", target.run_id)
                return
            error = ErrorInfo(
                type="RunTimeoutError",
                message=f"run exceeded its timeout of {target.timeout:g} s and "
                "was stopped by the supervisor",
                retryable=True,
            )
            attempt, max_attempts = self._attempts(target.run_id)
            wf = self.registry.get(target.workflow)
            if wf is not None and attempt < max_attempts:
                delay_ms = int(backoff_seconds(wf.retries, attempt) * 1000)
                status = client.scripts.finalize(
                    target.run_id, target.token, "retry", codec.encode_error(error), delay_ms
                )
            else:
                status = client.scripts.finalize(
                    target.run_id, target.token, "failed", codec.encode_error(error), 0
                )
                if status == "failed":
                    self._call_on_failure(target.run_id, target.workflow)
            log.warning(
                "run %s timed out after %g s: %s",
                target.run_id,
                target.timeout,
                status or "lease already lost",
            )
        except _RECOVERY as exc:
            log.error("could not record the end of run %s (%s)", target.run_id, exc)

    def _attempts(self, run_id: str) -> tuple[int, int]:
        assert self.client is not None
        raw = self.client.redis.hmget(self.client.keys.run(run_id), "attempt", "maxAttempts")
        return int(raw[0] or 1), int(raw[1] or 1)

    # --------------------------------------------------------------- watching

    def _watch(self, now: float) -> None:
        for pid, deadline in list(self.helpers.items()):
            if now >= deadline:
                log.error("on_failure process %d ran past %g s; killing it", pid, _ON_FAILURE_LIMIT)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                self.helpers[pid] = float("inf")  # reaped by waitpid like any child
        for child in list(self.children.values()):
            entry = self.board.read(child.index)
            if not child.ready and entry.state in (SlotState.IDLE, SlotState.BUSY):
                child.ready = True
                self._on_ready(child)
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                child.stop_sent = "kill"
                child.signal(signal.SIGKILL)
                continue
            if child.abort is None and entry.held:
                self._check_timeout(child, entry.held, now)

    def _on_ready(self, child: Child) -> None:
        slot = self.slots.get(child.slot)
        if slot is None:
            return
        if slot.pending == child.pid:
            old = self.children.get(child.replaces) if child.replaces is not None else None
            slot.pending = None
            slot.pid = child.pid
            child.replaces = None
            if old is not None:
                self._retire(old)
        if slot.pid == child.pid:
            slot.tracker.ready()

    def _check_timeout(self, child: Child, held: tuple[Held, ...], now: float) -> None:
        for h in held:
            if h.timeout > 0 and now - h.started > h.timeout:
                self._abort(child, AbortReason.TIMEOUT, h, held, now)
                return

    def _abort(
        self, child: Child, reason: AbortReason, target: Held, held: tuple[Held, ...], now: float
    ) -> None:
        child.abort = (reason, target, held)
        self.board.request_abort(child.index, reason, target.run_id)
        child.kill_at = now + self.settings.kill_grace
        child.signal(signal.SIGTERM)
        log.warning(
            "run %s: %s; stopping worker %d (pid %d)",
            target.run_id,
            "timeout reached"
            if reason is AbortReason.TIMEOUT
            else "cancellation ignored past cancel_grace",
            child.slot,
            child.pid,
        )

    # ---------------------------------------------------------------- duties

    def _run_duties(self, now: float) -> None:
        if now >= self._next_backstop:
            self._next_backstop = now + self.settings.lease_ms / 3000.0
            self._guarded("backstop", lambda: self._backstop(now))
        if now >= self._next_memory:
            self._next_memory = now + 1.0
            self._guarded("memory", self._check_memory)
        for i, (duty, due) in enumerate(self.duties):
            if now < due:
                continue
            next_due = now + 1.0
            try:
                next_due = duty.tick(now)
                self._duty_errors.pop(duty.name, None)
            except Exception as exc:
                self._duty_failed(duty.name, exc)
            self.duties[i] = (duty, next_due)

    def _guarded(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            self._duty_errors.pop(name, None)
        except Exception as exc:
            self._duty_failed(name, exc)

    def _duty_failed(self, name: str, exc: Exception) -> None:
        last = self._duty_errors.get(name, 0.0)
        now = time.monotonic()
        if now - last > 10.0:
            log.warning("%s duty failed: %s", name, exc)
            self._duty_errors[name] = now

    def _backstop(self, now: float) -> None:
        """Extend the leases of runs held by live children; act on cancellations."""
        assert self.client is not None
        pairs: list[tuple[str, str]] = []
        owners: list[tuple[Child, Held, tuple[Held, ...]]] = []
        for child in self.children.values():
            if child.abort is not None:
                continue
            entry = self.board.read(child.index)
            for h in entry.held:
                pairs.append((h.run_id, h.token))
                owners.append((child, h, entry.held))
        if not pairs:
            return
        results = self.client.scripts.renew(self.settings.lease_ms, pairs)
        for (child, h, held), (kept, cancel) in zip(owners, results, strict=True):
            if not kept or not cancel or child.abort is not None or h.finishing:
                continue
            seen = child.cancel_seen.setdefault(h.run_id, now)
            if now - seen >= self.settings.cancel_grace:
                self._abort(child, AbortReason.CANCEL, h, held, now)

    def _check_memory(self) -> None:
        limit = self.settings.max_memory_per_child * 1024 * 1024
        if limit <= 0:
            return
        for child in self.children.values():
            if child.recycle_requested or not child.ready:
                continue
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > limit:
                child.recycle_requested = True
                self.board.request_recycle(child.index)
                log.info(
                    "worker %d (pid %d) uses %.0f MiB > max_memory_per_child %d MiB: "
                    "recycling it after its current run",
                    child.slot,
                    child.pid,
                    rss / 1048576,
                    self.settings.max_memory_per_child,
                )
