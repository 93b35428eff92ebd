"""Runs the workloads for every selected system against one private redis-server.

Per repetition and system there are two sessions, each starting from FLUSHALL
with no worker running:

* drain session (W1, W2, W7 "after", Redis cost): a client process enqueues N
  no-op runs one by one with the workers stopped (that loop is W2), then the
  workers start and the harness polls the counter until N runs are done (W1).
* live session (W7 "idle", W3, W4, W5, W6): the workers start on an empty
  queue, the harness waits until their process trees are idle (RSS at idle),
  then a few warm-up runs, then each workload in turn.

Repetitions are interleaved (rep 1 of every system, then rep 2, ...) so slow
drift of the machine affects every system alike.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import redis_cost
from benchmarks.clientproc import ClientProc
from benchmarks.procs import (
    CpuMeter,
    ManagedProcess,
    rss_snapshot,
    settle,
    stop_many,
    tree_cpu_seconds,
    tree_processes,
)
from benchmarks.progress import Progress
from benchmarks.redis_server import RedisServer
from benchmarks.stats import percentile
from benchmarks.systems import System
from benchmarks.tasks import common

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
POLL_S = 0.003


@dataclass(frozen=True)
class Sizes:
    drain: int = 5000  # W1 / W2 runs
    cpu_runs: int = 64  # W3
    cpu_ms: float = 50.0  # W3 target per run
    rt: int = 200  # W4 timed round trips
    rt_warmup: int = 10
    step_runs: int = 300  # W5 runs
    steps: int = 20  # W5 steps per run
    fanout: int = 200  # W6 children per phase
    monitor: int = 500  # runs in the MONITOR pass
    scale: tuple[int, ...] = (1_000, 10_000, 100_000)


QUICK = Sizes(
    drain=50,
    cpu_runs=4,
    cpu_ms=5.0,
    rt=10,
    rt_warmup=2,
    step_runs=5,
    steps=20,
    fanout=5,
    monitor=20,
    scale=(50, 100, 200),
)


@dataclass
class Options:
    systems: list[System]
    workloads: set[str]
    procs: int = 2
    reps: int = 3
    sizes: Sizes = field(default_factory=Sizes)
    scale: bool = False
    monitor: bool = True
    progress: bool = True
    stall_timeout: float = 60.0
    logs_dir: Path | None = None
    # Shared machines: wait for other programs to go quiet before a session,
    # and redo a session during which they used more CPU than this (in cores).
    quiet_threshold: float = 0.25
    quiet_wait: float = 120.0
    retries: int = 2


@dataclass
class SystemResult:
    name: str
    config: str
    fanout_idiom: str
    steps_idiom: str
    status: str = "ok"  # ok | skipped | error
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(key, []).append(float(value))

    def add_extra(self, key: str, value: Any) -> None:
        self.extra.setdefault(key, []).append(value)

    def merge(self, other: SystemResult) -> None:
        for key, values in other.samples.items():
            self.samples.setdefault(key, []).extend(values)
        for key, value in other.extra.items():
            if isinstance(value, list) and isinstance(self.extra.get(key), list):
                self.extra[key].extend(value)
            else:
                self.extra[key] = value
        self.errors.extend(other.errors)

    def max_foreign(self) -> float:
        values = [
            v
            for k, vs in self.samples.items()
            if k.startswith("load.") and k.endswith("_foreign")
            for v in vs
        ]
        return max(values, default=0.0)


class CaseError(RuntimeError):
    pass


@dataclass
class WaitResult:
    t_first: float
    c_first: int
    t_done: float
    polls: int
    cpu_first: float = 0.0  # CPU seconds of the worker trees at the first completion


def calibrate(target_ms: float) -> tuple[int, float]:
    """Iterations of :func:`common.burn` that take ``target_ms``, and the measured ms.

    Estimate, then time the estimate 7 times; if the median is more than 5 %
    off the target (a busy machine), re-estimate from the median and try again.
    """
    n = 20_000
    while True:
        start = time.perf_counter()
        common.burn(n)
        took = time.perf_counter() - start
        if took >= 0.05:
            break
        n *= 2
    iterations = max(1, int(n * (target_ms / 1000.0) / took))
    measured = 0.0
    for _ in range(5):
        timings = []
        for _ in range(7):
            start = time.perf_counter()
            common.burn(iterations)
            timings.append((time.perf_counter() - start) * 1000.0)
        measured = statistics.median(timings)
        if abs(measured - target_ms) <= 0.05 * target_ms:
            break
        iterations = max(1, int(iterations * target_ms / measured))
    return iterations, measured


def single_run_ms(iterations: int, samples: int = 5) -> float:
    """Median time of one ``burn(iterations)`` in this process, in ms."""
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        common.burn(iterations)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


class Runner:
    def __init__(self, options: Options, server: RedisServer, progress: Progress) -> None:
        self.o = options
        self.server = server
        self.progress = progress
        self.conn = redis_cost.CountingRedis(server.client())
        self.logs = options.logs_dir or Path(tempfile.mkdtemp(prefix="redflow-bench-logs-"))
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, SystemResult] = {}
        self.cpu_iterations = 0
        self.cpu_single_ms = 0.0
        self._log_seq = 0

    # ------------------------------------------------------------------ plumbing

    def env(self, system: System) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
        env[common.ENV_URL] = self.server.url
        env[common.ENV_PREFIX] = "bench"
        env.update(system.worker_env())
        return env

    def log_path(self, system: System, what: str) -> Path:
        self._log_seq += 1
        return self.logs / f"{self._log_seq:04d}-{system.name}-{what}.log"

    def flush(self) -> None:
        self.conn.call("FLUSHALL")

    def reset_bench_keys(self) -> None:
        self.conn.call("DEL", *common.BENCH_KEYS)

    def start_workers(self, system: System) -> list[ManagedProcess]:
        env = self.env(system)
        groups: list[ManagedProcess] = []
        try:
            for i, argv in enumerate(system.worker_commands(self.o.procs)):
                argv = [a.format(url=self.server.url, prefix="bench") for a in argv]
                groups.append(
                    ManagedProcess(
                        argv, env=env, cwd=REPO_ROOT, log_path=self.log_path(system, f"worker{i}")
                    )
                )
        except BaseException:
            stop_many(groups)
            raise
        return groups

    @contextmanager
    def workers(self, system: System) -> Iterator[list[ManagedProcess]]:
        groups = self.start_workers(system)
        try:
            yield groups
        finally:
            stop_many(groups)

    @contextmanager
    def client(self, system: System) -> Iterator[ClientProc]:
        proc = ClientProc(
            system.name,
            env=self.env(system),
            cwd=REPO_ROOT,
            log_path=self.log_path(system, "client"),
        )
        try:
            proc.request({"op": "connect"}, timeout=120)
            yield proc
        finally:
            proc.close()

    def wait_counter(
        self,
        target: int,
        groups: list[ManagedProcess],
        *,
        need_parent: bool = False,
    ) -> WaitResult:
        """Poll the counter every few ms until it reaches ``target``."""
        t_first = 0.0
        c_first = 0
        cpu_first = 0.0
        last = -1
        last_change = time.monotonic()
        last_alive_check = 0.0
        polls = 0
        while True:
            counter, parent = self.conn.call("MGET", common.COUNTER_KEY, common.PARENT_KEY)
            polls += 1
            now = time.time()
            count = int(counter or 0)
            if count and not t_first:
                t_first, c_first = now, count
                cpu_first = tree_cpu_seconds(tree_processes(groups))
            mono = time.monotonic()
            if count != last:
                last, last_change = count, mono
            self.progress.update(count)
            if count >= target and (parent or not need_parent):
                return WaitResult(t_first or now, c_first, now, polls, cpu_first)
            if mono - last_change > self.o.stall_timeout:
                raise CaseError(f"no progress for {self.o.stall_timeout:.0f} s at {count}/{target}")
            if mono - last_alive_check > 0.5:
                last_alive_check = mono
                dead = [g for g in groups if not g.alive()]
                if dead:
                    raise CaseError(
                        f"worker exited (rc={dead[0].popen.returncode}):\n{dead[0].log_tail()}"
                    )
            time.sleep(POLL_S)

    # ------------------------------------------------------------------ sessions

    def drain_session(
        self,
        system: System,
        res: SystemResult,
        n: int,
        *,
        label: str,
        drain: bool = True,
        monitor: bool = False,
    ) -> dict[str, Any]:
        """Enqueue ``n`` no-op runs with workers stopped, then (optionally) drain them."""
        self.flush()
        out: dict[str, Any] = {"n": n}
        sampler: redis_cost.MonitorSampler | None = None
        if monitor:
            sampler = redis_cost.MonitorSampler(
                "127.0.0.1", self.server.port, exclude_addrs={self.conn.addr()}
            )
            sampler.start()
        try:
            meter = CpuMeter()
            with self.client(system) as client:
                s0 = redis_cost.snapshot(self.conn)
                self.progress.begin(f"{system.name:<9} {label} enqueue", n)
                meter.start()
                reply = client.request(
                    {"op": "enqueue", "kind": "noop", "n": n},
                    on_progress=self.progress.update,
                    timeout=max(600.0, n / 20),
                )
                out["load_enqueue"] = meter.stop()
                self.progress.clear()
            s1 = redis_cost.snapshot(self.conn)
            out["enqueue_s"] = reply["elapsed"]
            out["enqueue_rate"] = (n - 1) / reply["elapsed"] if reply["elapsed"] > 0 else None
            enq = redis_cost.delta(s0, s1)
            out["cost_enqueue"] = enq.to_json(n)
            if not drain:
                return out
            self.progress.begin(f"{system.name:<9} {label} drain", n)
            meter.start()
            t_spawn = time.time()
            with self.workers(system) as groups:
                waited = self.wait_counter(n, groups)
                cpu_done = tree_cpu_seconds(tree_processes(groups))
                s2 = redis_cost.snapshot(self.conn)
                out["load_drain"] = meter.stop()
                rss = rss_snapshot(groups)
            self.progress.clear()
            remaining = n - waited.c_first
            span = waited.t_done - waited.t_first
            out["drain_s"] = span
            out["drain_rate"] = remaining / span if span > 0 and remaining > 0 else None
            out["worker_cpu_us_per_run"] = (
                (cpu_done - waited.cpu_first) * 1e6 / remaining if remaining > 0 else None
            )
            out["from_spawn_s"] = waited.t_done - t_spawn
            out["from_spawn_rate"] = n / (waited.t_done - t_spawn)
            out["rss_after"] = rss
            exe = redis_cost.delta(s1, s2, payload={"incrby": n})
            out["cost_execute"] = exe.to_json(n)
            total = redis_cost.delta(s0, s2, payload={"incrby": n})
            out["cost_total"] = total.to_json(n)
            out["memory_after_drain"] = s2.used_memory - s0.used_memory
            out["harness_polls"] = waited.polls
            if sampler is not None:
                sampler.stop()
                out["monitor"] = {
                    "enqueue": {k: dict(v) for k, v in sampler.split(s0.t, s1.t).items()},
                    "execute": {k: dict(v) for k, v in sampler.split(s1.t, s2.t).items()},
                    "unparsed_lines": sampler.dropped,
                }
            return out
        finally:
            if sampler is not None:
                sampler.stop()
            self.progress.clear()

    def run_drain(self, system: System, res: SystemResult, rep: int) -> None:
        wl = self.o.workloads
        n = self.o.sizes.drain
        drain = bool(wl & {"W1", "W7"})
        out = self.drain_session(system, res, n, label=f"W1/W2 rep {rep}", drain=drain)
        if "W2" in wl:
            res.add("w2.rate", out["enqueue_rate"])
        res.add("cost.enq_cmds_per_run", out["cost_enqueue"]["cmds_per_run"])
        if drain:
            if "W1" in wl:
                res.add("w1.rate", out["drain_rate"])
                res.add("w1.rate_spawn", out["from_spawn_rate"])
                res.add("cost.cmds_per_run", out["cost_total"]["cmds_per_run"])
                res.add("cost.exec_cmds_per_run", out["cost_execute"]["cmds_per_run"])
                res.add("cost.cpu_us_per_run", out["cost_total"]["cpu_us_per_run"])
                res.add("cost.worker_cpu_us_per_run", out["worker_cpu_us_per_run"])
            if "W7" in wl:
                self._add_rss(system, res, out["rss_after"], "after")
        res.add_extra("drain_sessions", out)
        for phase in ("enqueue", "drain"):
            load = out.get(f"load_{phase}")
            if load:
                res.add(f"load.{phase}_foreign", load["foreign_cores"])
                res.add(f"load.{phase}_steal", load["steal_cores"])
        summary = f"W2 {out['enqueue_rate'] or 0:,.0f}/s"
        if drain:
            summary += f"  W1 {out['drain_rate'] or 0:,.0f}/s"
            foreign = out["load_drain"]["foreign_cores"]
            summary += f"  (foreign CPU during W1: {foreign:.2f} cores)"
        self.progress.done(f"{system.name} rep {rep}: {summary}")

    def _add_rss(self, system: System, res: SystemResult, rss: dict[str, Any], when: str) -> None:
        leaders: list[float] = rss["leaders"]
        children: list[float] = rss["children"]
        if len(system.worker_commands(self.o.procs)) == 1 and leaders:
            res.add(f"w7.parent_{when}_mib", leaders[0])
            workers = children
        else:  # one process per worker, no parent (RQ, arq)
            workers = leaders + children
        if workers:
            res.add(f"w7.child_{when}_mib", statistics.fmean(workers))
        res.add_extra(f"rss_{when}", rss)

    def run_live(self, system: System, res: SystemResult, rep: int) -> None:
        wl = self.o.workloads
        self.flush()
        with self.workers(system) as groups:
            settled, waited = settle(groups, system.expected_processes(self.o.procs))
            if not settled:
                res.errors.append(f"rep {rep}: workers did not settle in {waited:.0f} s")
            if "W7" in wl:
                self._add_rss(system, res, rss_snapshot(groups), "idle")
            if not wl & {"W3", "W4", "W5", "W6"}:
                return
            with self.client(system) as client:
                # Warm-up: every worker process gets a chance to connect.
                warm = 4 * self.o.procs
                self.progress.begin(f"{system.name:<9} warm-up", warm)
                client.request({"op": "enqueue", "kind": "noop", "n": warm})
                self.wait_counter(warm, groups)
                self.progress.clear()
                for name, fn in (
                    ("W3", self._w3),
                    ("W4", self._w4),
                    ("W5", self._w5),
                    ("W6", self._w6),
                ):
                    if name in wl:
                        self.reset_bench_keys()
                        before = redis_cost.snapshot(self.conn)
                        meter = CpuMeter()
                        meter.start()
                        runs = fn(system, res, rep, client, groups)
                        load = meter.stop()
                        res.add(f"load.{name}_foreign", load["foreign_cores"])
                        after = redis_cost.snapshot(self.conn)
                        res.add_extra(
                            f"cost_{name}", redis_cost.delta(before, after).to_json(max(1, runs))
                        )

    def _w3(
        self, system: System, res: SystemResult, rep: int, client: ClientProc, groups: Any
    ) -> int:
        n = self.o.sizes.cpu_runs
        # The machine's speed drifts over a long run (shared hosts), so the
        # single-process time of the calibrated work is measured again right
        # before and right after each W3, in the harness, with the workers idle.
        before_ms = single_run_ms(self.cpu_iterations)
        self.progress.begin(f"{system.name:<9} W3 cpu rep {rep}", n)
        client.request({"op": "enqueue", "kind": "cpu", "arg": self.cpu_iterations, "n": n})
        self.wait_counter(n, groups)
        raw = self.conn.call("LRANGE", common.CPU_TIMES_KEY, 0, -1)
        pairs = [tuple(float(x) for x in item.split()) for item in raw]
        wall = max(p[1] for p in pairs) - min(p[0] for p in pairs)
        single_ms = (before_ms + single_run_ms(self.cpu_iterations)) / 2
        ideal = n * single_ms / 1000.0 / self.o.procs
        busy = [p[1] - p[0] for p in pairs]
        res.add("w3.wall_s", wall)
        res.add("w3.efficiency", ideal / wall if wall > 0 else None)
        res.add("w3.single_ms", single_ms)
        res.add("w3.handler_ms", statistics.median(busy) * 1000.0)
        res.add("w3.busy_fraction", sum(busy) / (self.o.procs * wall) if wall > 0 else None)
        self.progress.done(
            f"{system.name} rep {rep}: W3 wall {wall:.2f}s efficiency {ideal / wall:.2f} "
            f"(single {single_ms:.1f} ms, in handlers {statistics.median(busy) * 1000:.1f} ms)"
        )
        return n

    def _w4(
        self, system: System, res: SystemResult, rep: int, client: ClientProc, groups: Any
    ) -> int:
        s = self.o.sizes
        self.progress.begin(f"{system.name:<9} W4 round trip rep {rep}", s.rt)
        reply = client.request(
            {"op": "round_trips", "n": s.rt, "warmup": s.rt_warmup},
            on_progress=self.progress.update,
        )
        lat: list[float] = reply["latencies_ms"]
        for q in (50, 90, 99):
            res.add(f"w4.p{q}", percentile(lat, q))
        res.add_extra("w4_latencies_ms", lat)
        self.progress.done(
            f"{system.name} rep {rep}: W4 p50 {percentile(lat, 50):.2f} ms "
            f"p99 {percentile(lat, 99):.2f} ms"
        )
        return s.rt + s.rt_warmup

    def _w5(
        self, system: System, res: SystemResult, rep: int, client: ClientProc, groups: Any
    ) -> int:
        s = self.o.sizes
        self.progress.begin(f"{system.name:<9} W5 steps rep {rep}", s.step_runs)
        start = time.time()
        client.request({"op": "enqueue", "kind": "steps", "arg": s.steps, "n": s.step_runs})
        waited = self.wait_counter(s.step_runs, groups)
        raw = self.conn.call("LRANGE", common.STEPS_US_KEY, 0, -1)
        per_step = [float(x) / s.steps for x in raw]
        value = statistics.median(per_step)
        res.add("w5.us_per_step", value)
        res.add_extra("w5_runs_per_s", s.step_runs / (waited.t_done - start))
        self.progress.done(f"{system.name} rep {rep}: W5 {value:.0f} us/step")
        return s.step_runs

    def _w6(
        self, system: System, res: SystemResult, rep: int, client: ClientProc, groups: Any
    ) -> int:
        if not system.fanout_idiom:
            return 0
        n = self.o.sizes.fanout
        for mode in ("emit", "seq"):
            self.reset_bench_keys()
            self.progress.begin(f"{system.name:<9} W6 {mode} rep {rep}", n)
            reply = client.request({"op": "fanout", "mode": mode, "n": n})
            waited = self.wait_counter(n, groups, need_parent=True)
            took = waited.t_done - float(reply["t_enqueued"])
            res.add(f"w6.{mode}_s", took)
            self.progress.done(f"{system.name} rep {rep}: W6 {mode} {n} children {took:.2f}s")
        return 2 * n

    def run_monitor(self, system: System, res: SystemResult) -> None:
        n = self.o.sizes.monitor
        out = self.drain_session(system, res, n, label="MONITOR pass", monitor=True)
        mon = out.get("monitor")
        if not mon:
            return
        client = sum(mon["enqueue"]["client"].values()) + sum(mon["execute"]["client"].values())
        lua = sum(mon["enqueue"]["lua"].values()) + sum(mon["execute"]["lua"].values())
        res.add("cost.client_per_run", client / n)
        res.add("cost.lua_per_run", lua / n)
        res.extra["monitor_pass"] = out
        self.progress.done(
            f"{system.name} MONITOR pass: {client / n:.1f} client + "
            f"{lua / n:.1f} in-script commands per run"
        )

    def run_scale(self, system: System, res: SystemResult) -> None:
        for n in self.o.sizes.scale:
            out = self.drain_session(system, res, n, label=f"scale {n:,}")
            rate = out.get("drain_rate")
            res.add(f"scale.{n}.us_per_run", 1e6 / rate if rate else None)
            res.add(f"scale.{n}.bytes_per_run", out["memory_after_drain"] / n)
            res.add(f"scale.{n}.memory_after_drain", out["memory_after_drain"])
            res.add(f"scale.{n}.enqueue_rate", out.get("enqueue_rate"))
            res.extra.setdefault("scale", {})[str(n)] = {
                k: v for k, v in out.items() if k != "rss_after"
            }
            self.progress.done(
                f"{system.name} scale {n:,}: {1e6 / rate if rate else float('nan'):.0f} us/run, "
                f"{out['memory_after_drain'] / n:,.0f} B/run in Redis"
            )

    # ------------------------------------------------------------------ driver

    def _guard(self, system: System, res: SystemResult, what: str, fn: Any, *args: Any) -> None:
        if res.status == "error":
            return
        try:
            fn(system, res, *args)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.progress.clear()
            msg = f"{what}: {type(exc).__name__}: {exc}"
            res.errors.append(msg)
            self.progress.note(f"  ! {system.name} {msg}")
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()

    def wait_quiet(self) -> float:
        """Wait until programs the benchmark did not start use little CPU.

        Returns the foreign load (cores) of the last 1 s window.
        """
        deadline = time.monotonic() + self.o.quiet_wait
        foreign = 0.0
        announced = False
        while True:
            meter = CpuMeter()
            meter.start()
            time.sleep(0.5 if self.o.quiet_wait > 0 else 0.0)
            foreign = meter.stop()["foreign_cores"]
            if foreign <= self.o.quiet_threshold or time.monotonic() >= deadline:
                break
            if not announced:
                self.progress.note(
                    f"  other programs use {foreign:.2f} cores; waiting up to "
                    f"{self.o.quiet_wait:.0f} s for a quiet machine"
                )
                announced = True
        return foreign

    def _attempts(self, system: System, res: SystemResult, kind: str, fn: Any, rep: int) -> None:
        """Run one session; redo it (up to ``retries`` times) if the machine was busy.

        When every attempt was disturbed, the least disturbed one is kept.
        """
        tries: list[tuple[float, SystemResult]] = []
        for attempt in range(self.o.retries + 1):
            if self.o.quiet_wait > 0:
                self.wait_quiet()
            sink = SystemResult(res.name, res.config, res.fanout_idiom, res.steps_idiom)
            self._guard(system, sink, f"rep {rep} {kind} session", fn, rep)
            foreign = sink.max_foreign()
            tries.append((foreign, sink))
            if sink.errors or foreign <= self.o.quiet_threshold:
                break
            if attempt < self.o.retries:
                self.progress.note(
                    f"  {system.name} rep {rep}: other programs used {foreign:.2f} cores "
                    f"during the {kind} session; running it again"
                )
        foreign, best = min(tries, key=lambda t: (bool(t[1].errors), t[0]))
        for other_foreign, other in tries:
            if other is not best:
                res.add_extra(
                    "discarded_sessions", {"kind": kind, "rep": rep, "foreign": other_foreign}
                )
        if foreign > self.o.quiet_threshold:
            # Every attempt was disturbed: keep the least disturbed, say so in the report.
            res.add_extra("disturbed_sessions", {"kind": kind, "rep": rep, "foreign": foreign})
        res.merge(best)
        if best.errors and len(res.errors) >= 2 and not res.samples:
            res.status = "error"
            res.reason = best.errors[0].splitlines()[0]

    def run(self) -> dict[str, SystemResult]:
        wl = self.o.workloads
        if "W3" in wl:
            if self.o.quiet_wait > 0:
                self.wait_quiet()
            self.cpu_iterations, self.cpu_single_ms = calibrate(self.o.sizes.cpu_ms)
            self.progress.note(
                f"W3 calibration: burn({self.cpu_iterations:,}) = {self.cpu_single_ms:.1f} ms "
                "in the harness process"
            )
        active: list[System] = []
        for system in self.o.systems:
            res = SystemResult(system.name, system.config, system.fanout_idiom, system.steps_idiom)
            self.results[system.name] = res
            reason = system.available()
            if reason:
                res.status, res.reason = "skipped", reason
                self.progress.note(f"skipping {system.name}: {reason}")
                continue
            res.versions = system.versions()
            active.append(system)
        for rep in range(1, self.o.reps + 1):
            for system in active:
                res = self.results[system.name]
                if wl & {"W1", "W2", "W7"}:
                    self._attempts(system, res, "drain", self.run_drain, rep)
                if wl & {"W3", "W4", "W5", "W6", "W7"}:
                    self._attempts(system, res, "live", self.run_live, rep)
        for system in active:
            res = self.results[system.name]
            if self.o.monitor and "W1" in wl:
                self._guard(system, res, "MONITOR pass", self.run_monitor)
            if self.o.scale:
                self._guard(system, res, "scale", self.run_scale)
        return self.results
