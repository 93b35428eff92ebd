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
from benchmarks.procs import ManagedProcess, rss_snapshot, settle, stop_many
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


class CaseError(RuntimeError):
    pass


@dataclass
class WaitResult:
    t_first: float
    c_first: int
    t_done: float
    polls: int


def calibrate(target_ms: float) -> tuple[int, float]:
    """Iterations of :func:`common.burn` that take ``target_ms``, and the measured ms."""
    n = 20_000
    while True:
        start = time.perf_counter()
        common.burn(n)
        took = time.perf_counter() - start
        if took >= 0.05:
            break
        n *= 2
    iterations = max(1, int(n * (target_ms / 1000.0) / took))
    timings = []
    for _ in range(7):
        start = time.perf_counter()
        common.burn(iterations)
        timings.append((time.perf_counter() - start) * 1000.0)
    return iterations, statistics.median(timings)


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
            mono = time.monotonic()
            if count != last:
                last, last_change = count, mono
            self.progress.update(count)
            if count >= target and (parent or not need_parent):
                return WaitResult(t_first or now, c_first, now, polls)
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
            with self.client(system) as client:
                s0 = redis_cost.snapshot(self.conn)
                self.progress.begin(f"{system.name:<9} {label} enqueue", n)
                reply = client.request(
                    {"op": "enqueue", "kind": "noop", "n": n},
                    on_progress=self.progress.update,
                    timeout=max(600.0, n / 20),
                )
                self.progress.clear()
            s1 = redis_cost.snapshot(self.conn)
            out["enqueue_s"] = reply["elapsed"]
            out["enqueue_rate"] = (n - 1) / reply["elapsed"] if reply["elapsed"] > 0 else None
            enq = redis_cost.delta(s0, s1)
            out["cost_enqueue"] = enq.to_json(n)
            if not drain:
                return out
            self.progress.begin(f"{system.name:<9} {label} drain", n)
            t_spawn = time.time()
            with self.workers(system) as groups:
                waited = self.wait_counter(n, groups)
                s2 = redis_cost.snapshot(self.conn)
                rss = rss_snapshot(groups)
            self.progress.clear()
            remaining = n - waited.c_first
            span = waited.t_done - waited.t_first
            out["drain_s"] = span
            out["drain_rate"] = remaining / span if span > 0 and remaining > 0 else None
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
            if "W7" in wl:
                self._add_rss(system, res, out["rss_after"], "after")
        res.add_extra("drain_sessions", out)
        summary = f"W2 {out['enqueue_rate'] or 0:,.0f}/s"
        if drain:
            summary += f"  W1 {out['drain_rate'] or 0:,.0f}/s"
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
                        runs = fn(system, res, rep, client, groups)
                        after = redis_cost.snapshot(self.conn)
                        res.add_extra(
                            f"cost_{name}", redis_cost.delta(before, after).to_json(max(1, runs))
                        )

    def _w3(
        self, system: System, res: SystemResult, rep: int, client: ClientProc, groups: Any
    ) -> int:
        n = self.o.sizes.cpu_runs
        self.progress.begin(f"{system.name:<9} W3 cpu rep {rep}", n)
        client.request({"op": "enqueue", "kind": "cpu", "arg": self.cpu_iterations, "n": n})
        self.wait_counter(n, groups)
        raw = self.conn.call("LRANGE", common.CPU_TIMES_KEY, 0, -1)
        pairs = [tuple(float(x) for x in item.split()) for item in raw]
        wall = max(p[1] for p in pairs) - min(p[0] for p in pairs)
        ideal = n * self.cpu_single_ms / 1000.0 / self.o.procs
        res.add("w3.wall_s", wall)
        res.add("w3.efficiency", ideal / wall if wall > 0 else None)
        busy = [p[1] - p[0] for p in pairs]
        res.add_extra("w3_handler_ms_median", statistics.median(busy) * 1000.0)
        self.progress.done(f"W3 wall {wall:.2f}s efficiency {ideal / wall:.2f}")
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
        self.progress.done(f"W4 p50 {percentile(lat, 50):.2f} ms p99 {percentile(lat, 99):.2f} ms")
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
        self.progress.done(f"W5 {value:.0f} us/step")
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
            self.progress.done(f"W6 {mode} {n} children {took:.2f}s")
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
            f"MONITOR pass: {client / n:.1f} client + {lua / n:.1f} in-script commands per run"
        )

    def run_scale(self, system: System, res: SystemResult) -> None:
        for n in self.o.sizes.scale:
            out = self.drain_session(system, res, n, label=f"scale {n:,}")
            rate = out.get("drain_rate")
            res.add(f"scale.{n}.us_per_run", 1e6 / rate if rate else None)
            res.add(f"scale.{n}.bytes_per_run", out["memory_after_drain"] / n)
            res.add(f"scale.{n}.enqueue_rate", out.get("enqueue_rate"))
            res.extra.setdefault("scale", {})[str(n)] = {
                k: v for k, v in out.items() if k != "rss_after"
            }
            self.progress.done(
                f"scale {n:,}: {1e6 / rate if rate else float('nan'):.0f} us/run, "
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
            if len(res.errors) >= 2 and not res.samples:
                res.status = "error"
                res.reason = msg.splitlines()[0]

    def run(self) -> dict[str, SystemResult]:
        wl = self.o.workloads
        if "W3" in wl:
            self.cpu_iterations, self.cpu_single_ms = calibrate(self.o.sizes.cpu_ms)
            self.progress.note(
                f"W3 calibration: burn({self.cpu_iterations:,}) = {self.cpu_single_ms:.1f} ms "
                "single-process (harness, idle machine)"
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
                    self._guard(system, res, f"rep {rep} drain session", self.run_drain, rep)
                if wl & {"W3", "W4", "W5", "W6", "W7"}:
                    self._guard(system, res, f"rep {rep} live session", self.run_live, rep)
        for system in active:
            res = self.results[system.name]
            if self.o.monitor and "W1" in wl:
                self._guard(system, res, "MONITOR pass", self.run_monitor)
            if self.o.scale:
                self._guard(system, res, "scale", self.run_scale)
        return self.results
