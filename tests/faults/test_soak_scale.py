"""The opt-in soak at scale, with the DEFAULT settings users run (lease 5 s,
kill_grace 5 s, reaper every 500 ms, restart backoff 1 s, max_run_crashes 3):

    TMPDIR=/dev/shm .venv/bin/python -m pytest tests/faults/test_soak_scale.py -m soak \\
        -p no:cacheprovider -n 0 -s --basetemp=/dev/shm/soak-scale

A backlog of ``FAULTS_SCALE_RUNS`` runs (default 100,000) is enqueued up front
(``enqueue_workflow_many``, one batch per workflow and queue) over
``FAULTS_SCALE_QUEUES`` queues (default 1,000, named on each supervisor's
``--queues``) and the fault workload's workflows: 3-step chains, a
``max_concurrency=2`` workflow, parents with a waited and an emitted child,
flaky steps with retries, durable sleeps of 1-30 s, listeners of one event
(sent by a paced sender through the faults), parents fanning out to three
children (``run_workflows``), and parents of three listeners nobody sends an
event to: the cancel storm's targets. ``FAULTS_SCALE_SUPS`` supervisors
(default 2) with 2 children each drain it (step work 0 ms) while faults rotate:
SIGKILL of a busy child, SIGKILL of a whole supervisor and its restart,
``redis-server`` SIGKILL and restart on its AOF (``appendfsync always``),
``DEBUG SLEEP`` past the lease, ``CLIENT KILL`` of every other connection, and
a cancel storm of a fifth of the storm parents (the rest are canceled at the
end). Then every run must have succeeded but the storm's parents and their
children (canceled), and every invariant of ``invariants.py`` must hold.

``FAULTS_SCALE_SPLIT=1`` gives each supervisor its own queue list (its share of
the queues, plus the children's ``fx``); ``FAULTS_SCALE_CRON=1`` adds a cron
workflow firing every second (``workload_cron.py``) through the faults;
``FAULTS_SCALE_STORM_FAULT=1`` runs each cancel storm while Redis restarts or a
``CLIENT KILL`` cuts its walk (the cascades left to the ``cascades`` duty);
``FAULTS_SCALE_STOPS=1`` adds a SIGSTOP of a whole supervisor for 5.5-8 s (past
the lease: the others take its runs, and it is fenced when it resumes).

Printed: runs, faults by kind, throughput, and the longest wait of a run after
its fault (a killed child's run until it is taken again, a killed supervisor's
leased runs until each is taken again, a Redis outage, stall or connection kill
until the first run finishes after it). A temp dir on tmpfs keeps the ledger's
fsyncs (about 15 per run) and the AOF's off the disk.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from functools import partial
from typing import Any

import pytest
import redis

from redflow_mp import RedflowError
from tests.faults import ledger
from tests.faults.drivers import ALL_WORKFLOWS, Producer, wait_for
from tests.faults.harness import Faults
from tests.faults.processes import WAIT_MODULES, busy_children, restart_redis
from tests.faults.test_cron_skew import _stop_schedule
from tests.helpers import command, texts
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.soak, pytest.mark.timeout(7200)]

AOF = ("--appendonly", "yes", "--appendfsync", "always")
# The defaults (supervisor/settingfields.py), over the harness's short ones.
DEFAULTS = (
    "--lease-ms", "5000", "--reaper-interval-ms", "500", "--kill-grace", "5",
    "--restart-backoff", "1", "--restart-backoff-max", "30", "--max-run-crashes", "3",
)  # fmt: skip
ENV = {"FAULTS_STEP_MS": "0", "FAULTS_GAP_MS": "0"}
# FAULTS_SCALE_CRON=1: a cron workflow fires every second through the faults too.
CRON = os.environ.get("FAULTS_SCALE_CRON") == "1"
# FAULTS_SCALE_STORM_FAULT=1: each cancel storm runs while Redis restarts or CLIENT KILL hits.
STORM_UNDER_FAULT = os.environ.get("FAULTS_SCALE_STORM_FAULT") == "1"
_NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError, RedflowError)

MIX = (  # workflow, share, input
    ("fx-chain", 0.62),
    ("fx-limited", 0.005),
    ("fx-parent", 0.05),
    ("fx-flaky", 0.05),
    ("fx-sleeper", 0.10),
    ("fx-listener", 0.05),
    ("fx-wparent", 0.10),
    ("storm", 0.025),
)


def _input(wf: str, i: int, rng: random.Random) -> Any:
    if wf == "fx-sleeper":
        return {"s": round(rng.uniform(1, 30), 3)}
    if wf == "fx-listener":
        return {"k": 1}
    if wf == "fx-wparent":
        return {"n": 3}
    if wf == "storm":
        return {"n": 3, "child": "listener"}
    return i


def _retry(fn: Any, what: str) -> Any:
    deadline = time.monotonic() + 120
    delay = 0.05
    while True:
        try:
            return fn()
        except _NETWORK:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: Redis unreachable for 120 s") from None
            time.sleep(delay)
            delay = min(1.0, delay * 2)


def _enqueue(prod: Producer, n: int, queues: list[str], seed: int) -> dict[str, list[str]]:
    """Enqueue ``n`` runs over ``queues`` in batches; {workflow (or "storm"): ids}."""
    rng = random.Random(seed)
    names = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    batches: dict[tuple[str, str], list[tuple[Any, str | None]]] = defaultdict(list)
    for i in range(n):
        wf = rng.choices(names, weights)[0]
        key = f"s-{seed}-{i}" if wf == "fx-chain" and rng.random() < 0.1 else None
        batches[(wf, rng.choice(queues))].append((_input(wf, i, rng), key))
    out: dict[str, list[str]] = defaultdict(list)
    for (wf, q), items in batches.items():
        workflow = ALL_WORKFLOWS["fx-wparent" if wf == "storm" else wf]
        handles = prod.client.enqueue_workflow_many(
            workflow,
            [value for value, _ in items],
            queue_override=q,
            idempotency_keys=[key for _, key in items],
        )
        for h, (_, key) in zip(handles, items, strict=True):
            prod.ledger.append("enqueued", run=h.id, wf=workflow.name, key=key)
            prod.ids.append(h.id)
            out[wf].append(h.id)
    return out


class Rotation:
    """The faults in rotation over the drain; what each cost is kept for the report."""

    def __init__(
        self, fx: Faults, server: RedisServer, serve: list[list[str]], storm: list[str]
    ) -> None:
        self.fx = fx
        self.server = server
        self.raw = server.client()
        self.serve = serve
        self.storm = storm
        self.canceled: list[str] = []
        self.faults: Counter[str] = Counter()
        self.stalls: list[tuple[str, float]] = []  # (kind, monotonic end): progress after
        self.killed: list[tuple[str, str, int]] = []  # (kind, run id, ledger mono ns)
        self.sups: list[Supervisor] = []
        self.client = fx.producer(server.url, 0, items=[]).start().client
        self.modules = [*WAIT_MODULES, *(["tests.faults.workload_cron"] if CRON else [])]

    def start(self, i: int) -> Supervisor:
        """Supervisor ``i``, serving its queue list."""
        args = [*DEFAULTS, "--queues", ",".join(self.serve[i])]
        sup = self.fx.supervisor(self.server.url, procs=2, modules=self.modules, args=args, env=ENV)
        sup.wait_workers(2, timeout=120)
        return sup

    def inject(self, kind: str, rng: random.Random) -> None:
        fx = self.fx
        self.faults[kind] += 1
        if kind == "child":
            busy = busy_children(rng.choice(self.sups))
            if not busy:
                self.faults[kind] -= 1
                return
            proc, run_id = rng.choice(busy)
            fx.fault("kill", [proc.pid], run=run_id)
            self.killed.append(("child", run_id, ledger.mono_ns()))
            proc.send_signal(signal.SIGKILL)
        elif kind == "supervisor":
            i = rng.randrange(len(self.sups))
            held = [run_id for _, run_id in busy_children(self.sups[i])]
            fx.kill_group(self.sups[i])
            t = ledger.mono_ns()
            self.killed += [("supervisor", run_id, t) for run_id in held]
            self.sups[i] = self.start(i)
        elif kind == "redis":
            self.raw.close()
            down_for = rng.uniform(0.5, 3)
            fx.fault("redis-kill", seconds=down_for)
            restart_redis(self.server, down_for)
            self.raw = self.server.client()
            self.stalls.append((kind, time.monotonic()))
        elif kind == "stall":
            seconds = round(rng.uniform(5.5, 8), 2)  # past the 5 s lease
            sleeper = redis.Redis.from_url(self.server.url, socket_timeout=30)
            fx.fault("debug-sleep", seconds=seconds)
            _retry(partial(command, sleeper, "DEBUG", "SLEEP", seconds), "DEBUG SLEEP")
            sleeper.close()
            self.stalls.append((kind, time.monotonic()))
        elif kind == "client-kill":
            fx.fault("client-kill", seconds=1)
            kill = partial(command, self.raw, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            _retry(kill, "CLIENT KILL")
            self.stalls.append((kind, time.monotonic()))
        elif kind == "stop":  # the whole supervisor, past the lease: the others take its runs
            sup = rng.choice(self.sups)
            pids = fx.group_pids(sup)
            held = [run_id for _, run_id in busy_children(sup)]
            fx.fault("stop", pids)
            os.killpg(sup.pid, signal.SIGSTOP)
            t = ledger.mono_ns()
            self.killed += [("stop", run_id, t) for run_id in held]
            wait_for(partial(_past, time.monotonic() + rng.uniform(5.5, 8)), 10, "the stop")
            fx.fault("cont", pids)
            os.killpg(sup.pid, signal.SIGCONT)
        elif STORM_UNDER_FAULT:  # the storm's cancels walk while Redis restarts or cuts them
            storm = threading.Thread(target=self.cancel, args=(max(1, len(self.storm) // 5),))
            storm.start()
            self.inject(rng.choice(["redis", "client-kill"]), rng)
            storm.join(180)
            assert not storm.is_alive(), "the cancel storm did not end"
        else:
            self.cancel(max(1, len(self.storm) // 5))

    def cancel(self, n: int) -> None:
        """The cancel storm: the next ``n`` storm parents (suspended on their children)."""
        batch = self.storm[len(self.canceled) : len(self.canceled) + n]
        for run_id in batch:
            _retry(partial(self.client.cancel_run, run_id, "storm"), "cancel")
        self.canceled += batch


def test_soak_at_scale_with_default_settings(fx: Faults) -> None:
    runs = int(os.environ.get("FAULTS_SCALE_RUNS", "100000"))
    nqueues = int(os.environ.get("FAULTS_SCALE_QUEUES", "1000"))
    nsups = int(os.environ.get("FAULTS_SCALE_SUPS", "2"))
    queues = [f"sq{i:05d}" for i in range(nqueues)]
    server = fx.redis(*AOF)
    prod = fx.producer(server.url, 0, items=[]).start()  # its client and ids only
    t0 = time.monotonic()
    ids = _enqueue(prod, runs, queues, seed=23)
    enqueue_s = time.monotonic() - t0
    print(f"\nenqueued {len(prod.ids)} runs on {nqueues} queues in {enqueue_s:.1f} s", flush=True)
    extra = ["fx", *(["fxcron"] if CRON else [])]
    split = os.environ.get("FAULTS_SCALE_SPLIT") == "1"
    serve = [[*extra, *(queues[i::nsups] if split else queues)] for i in range(nsups)]
    rot = Rotation(fx, server, serve, list(ids["storm"]))
    sender = fx.sender(server.url, rate=10)
    for j, run_id in enumerate(ids["fx-listener"]):
        sender.put(run_id, "go", f"e{j}")
    rot.sups = [rot.start(i) for i in range(nsups)]
    prog = fx.sample(server.url)
    t_start = time.monotonic()
    created = f"{{{fx.prefix}}}:runs:created"

    def total() -> int:
        return int(rot.raw.zcard(created))

    def drained() -> bool:  # all but the storm's parents and children (4 runs each)
        return bool(prog.done() >= _retry(total, "count") - 4 * len(rot.storm))

    rng = random.Random(29)
    kinds = ["child", "child", "supervisor", "redis", "stall", "client-kill", "storm"]
    kinds += ["stop"] if os.environ.get("FAULTS_SCALE_STOPS") == "1" else []
    while not drained():
        assert time.monotonic() - t_start < 5400, f"not drained: {prog.done()} of {total()}"
        rot.inject(rng.choice(kinds), rng)
        pause = time.monotonic() + rng.uniform(3.0, 8.0)
        wait_for(partial(_past, pause), 10, "the next fault")
    rot.cancel(len(rot.storm))
    if CRON:
        _retry(partial(_stop_schedule, rot.raw, fx.prefix), "stop the schedule")
    sender.drain(600)
    wait_for(lambda: prog.done() >= total(), 900, "every run to finish", 0.5)
    drain_s = time.monotonic() - t_start
    recoveries = _recoveries(fx, rot.killed, rot.stalls, prog)
    worst = max(recoveries.values(), default=(0.0, ""))
    finished = total()
    waits = ", ".join(f"{k} {v[0]:.2f} s" for k, v in recoveries.items())
    report = fx.finish(
        rot.raw,
        f"soak at scale: {runs} runs, {nqueues} queues, {sum(rot.faults.values())} faults",
        recovery_s=round(worst[0], 2),
        settle_timeout=300,
        note=(
            f"{dict(rot.faults)}; {finished} runs drained in {drain_s:.0f} s "
            f"({finished / drain_s:.0f} runs/s); worst wait per kind: {waits}; worst {worst[1]}"
        ),
    )
    print(f"faults {dict(rot.faults)}; drain {drain_s:.0f} s; worst waits {recoveries}")
    report.assert_ok()
    _assert_outcomes(rot.raw, fx.prefix, set(prod.ids), set(rot.storm))
    rot.raw.close()


def _past(t: float) -> bool:
    return time.monotonic() >= t


def _recoveries(
    fx: Faults,
    killed: list[tuple[str, str, int]],
    stalls: list[tuple[str, float]],
    prog: Any,
) -> dict[str, tuple[float, str]]:
    """The longest wait per fault kind: a killed run until its next handler start;
    a stall, outage or connection kill until the first run finishes after it. A
    child's process title lags its run: a run whose execution had ended
    (``handler-end``) before the kill was not hit and is left out."""
    marks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for ev in ledger.read_all(fx.ledger_dir):
        if ev["ev"] in ("handler-start", "handler-end"):
            marks[str(ev["run"])].append((int(ev["mono"]), str(ev["ev"])))
    worst: dict[str, tuple[float, str]] = {}
    for kind, run_id, t in killed:
        seen = sorted(marks.get(run_id, []))
        before = [ev for m, ev in seen if m <= t]
        if before and before[-1] == "handler-end":
            continue  # ended before the kill (the title lagged)
        later = [m for m, ev in seen if m > t and ev == "handler-start"]
        wait = (min(later) - t) / 1e9 if later else float("inf")
        if wait > worst.get(kind, (-1.0, ""))[0]:
            worst[kind] = (wait, f"{kind} {run_id}")
    for kind, t_end in stalls:
        after = prog.first_progress_after(t_end)
        wait = float("inf") if after is None else after
        if wait > worst.get(kind, (-1.0, ""))[0]:
            worst[kind] = (wait, kind)
    return worst


def _assert_outcomes(
    raw: redis.Redis, prefix: str, acknowledged: set[str], storm: set[str]
) -> None:
    """Every run succeeded, but the storm's parents and their children: canceled."""
    tag = "{" + prefix + "}"
    canceled_ok = set(storm)
    for parent in storm:
        canceled_ok.update(texts(raw.smembers(f"{tag}:run:{parent}:children")))
    bad: dict[str, list[str]] = defaultdict(list)
    ids = sorted(set(texts(raw.zrange(f"{tag}:runs:created", 0, -1))) | acknowledged)
    for k in range(0, len(ids), 2000):
        chunk = ids[k : k + 2000]
        with raw.pipeline(transaction=False) as pipe:
            for run_id in chunk:
                pipe.hget(f"{tag}:run:{run_id}", "status")
            statuses = pipe.execute()
        for run_id, status in zip(chunk, statuses, strict=True):
            want = b"canceled" if run_id in canceled_ok else b"succeeded"
            if status != want:
                bad[f"{status!r} (want {want.decode()})"].append(run_id)
    assert not bad, {k: (len(v), v[:5]) for k, v in bad.items()}
