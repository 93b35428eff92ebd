"""Runs the workloads for every selected system against one private redis-server.

Per repetition and system there are up to three sessions, each starting from
FLUSHALL with no worker running:

* drain session (W1, W2, W7 "after", Redis cost): a client process enqueues N
  no-op runs one by one with the workers stopped (that loop is W2), then the
  workers start and the harness polls the counter until N runs are done (W1).
* live session (W7 "idle", W3, W4, W5, W6): the workers start on an empty
  queue, the harness waits until their process trees are idle (RSS at idle),
  then a few warm-up runs, then each workload in turn.
* bulk session (W2B): a client process enqueues through the system's bulk path.

The handler-redis variant repeats the drain and live sessions (W1, W3, W4) with
handlers that make one Redis call of their own. Repetitions are interleaved
(rep 1 of every system, then rep 2, ...) so slow drift of the machine affects
every system alike. Untimed passes come before (SLOWLOG: Redis time by
command and function) and after (MONITOR: client vs in-script commands; scale).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import redis_cost
from benchmarks.clientproc import ClientProc
from benchmarks.harness import Harness
from benchmarks.model import (
    HANDLER_REDIS,
    NOOP,
    VARIANT_WORKLOADS,
    SystemResult,
    calibrate,
    single_run_ms,
    tag,
    vkey,
)
from benchmarks.procs import (
    CpuMeter,
    rss_snapshot,
    settle,
    split_cpu_seconds,
)
from benchmarks.stats import percentile
from benchmarks.systems import System
from benchmarks.tasks import common


class Runner(Harness):
    """The sessions, workloads and passes, and the order they run in."""

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
        slowlog: bool = False,
        variant: str = NOOP,
    ) -> dict[str, Any]:
        """Enqueue ``n`` no-op runs with workers stopped, then (optionally) drain them."""
        self.flush()
        out: dict[str, Any] = {"n": n, "variant": variant}
        sampler: redis_cost.MonitorSampler | None = None
        slow: redis_cost.SlowlogSampler | None = None
        if monitor:
            sampler = redis_cost.MonitorSampler(
                "127.0.0.1", self.server.port, exclude_addrs={self.conn.addr()}
            )
            sampler.start()
        has_parent = system.has_parent(self.o.procs)
        try:
            meter = CpuMeter()
            with self.client(system, variant) as client:
                if slowlog:
                    # Up to ~100 commands (and as many inside scripts) per run.
                    info = self.conn.client.info("server")
                    slow = redis_cost.SlowlogSampler(
                        self.conn,
                        {self.conn.addr()},
                        max_len=max(10_000, 200 * n),
                        scripts=system.script_names(str(info.get("redis_version", "0"))),
                    )
                    slow.start()
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
            if slow is not None:
                out["slowlog_enqueue"] = slow.collect()
            timed_runs = max(1, int(reply["timed_runs"]))
            out["enqueue_s"] = reply["elapsed"]
            out["enqueue_rate"] = timed_runs / reply["elapsed"] if reply["elapsed"] > 0 else None
            out["client_cpu_us_per_enqueue"] = reply["cpu"] * 1e6 / timed_runs
            out["memory_after_enqueue"] = s1.used_memory - s0.used_memory
            enq = redis_cost.delta(s0, s1)
            out["cost_enqueue"] = enq.to_json(n)
            out["redis_us_per_enqueue"] = enq.redis_us_per_run(n, self._nested(system, "enqueue"))
            if not drain:
                return out
            self.progress.begin(f"{system.name:<9} {label} drain", n)
            meter.start()
            t_spawn = time.time()
            with self.workers(system, variant) as groups:
                waited = self.wait_counter(n, groups, has_parent=has_parent)
                cpu_done = split_cpu_seconds(groups, has_parent)
                s2 = redis_cost.snapshot(self.conn)
                out["load_drain"] = meter.stop()
                rss = rss_snapshot(groups)
            self.progress.clear()
            if slow is not None:
                out["slowlog_execute"] = slow.collect()
            remaining = n - waited.c_first
            span = waited.t_done - waited.t_first
            out["drain_s"] = span
            out["drain_rate"] = remaining / span if span > 0 and remaining > 0 else None
            if remaining > 0:
                parent_s = cpu_done[0] - waited.cpu_first[0]
                workers_s = cpu_done[1] - waited.cpu_first[1]
                out["worker_cpu_us_per_run"] = workers_s * 1e6 / remaining
                out["parent_cpu_us_per_run"] = parent_s * 1e6 / remaining if has_parent else None
            out["from_spawn_s"] = waited.t_done - t_spawn
            out["from_spawn_rate"] = n / (waited.t_done - t_spawn)
            out["rss_after"] = rss
            payload = {"incrby": n * (2 if variant == HANDLER_REDIS else 1)}
            exe = redis_cost.delta(s1, s2, payload=payload)
            out["cost_execute"] = exe.to_json(n)
            out["redis_us_per_run_execute"] = exe.redis_us_per_run(
                n, self._nested(system, "execute")
            )
            total = redis_cost.delta(s0, s2, payload=payload)
            out["cost_total"] = total.to_json(n)
            out["redis_us_per_run"] = total.redis_us_per_run(n, self._nested(system, "total"))
            out["memory_after_drain"] = s2.used_memory - s0.used_memory
            out["harness_polls"] = waited.polls
            if variant == HANDLER_REDIS:
                self.check_handler_calls(n)
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
            if slow is not None:
                slow.stop()
            self.progress.clear()

    def run_drain(self, system: System, res: SystemResult, rep: int, variant: str = NOOP) -> None:
        wl = self.o.workloads
        n = self.o.sizes.drain
        drain = bool(wl & {"W1", "W7"})
        label = tag(variant)
        out = self.drain_session(
            system, res, n, label=f"W1/W2{label} rep {rep}", drain=drain, variant=variant
        )

        def add(key: str, value: float | None) -> None:
            res.add(vkey(key, variant), value)

        if "W2" in wl and variant == NOOP:
            add("w2.rate", out["enqueue_rate"])
            add("w2.client_cpu_us", out["client_cpu_us_per_enqueue"])
            add("w2.redis_us", out["redis_us_per_enqueue"])
            add("w2.redis_cpu_us", out["cost_enqueue"]["cpu_us_per_run"])
            add("w2.script_us", out["cost_enqueue"]["script_us_per_run"])
        add("cost.enq_cmds_per_run", out["cost_enqueue"]["cmds_per_run"])
        if drain:
            if "W1" in wl:
                add("w1.rate", out["drain_rate"])
                add("w1.rate_spawn", out["from_spawn_rate"])
                add("cost.cmds_per_run", out["cost_total"]["cmds_per_run"])
                add("cost.exec_cmds_per_run", out["cost_execute"]["cmds_per_run"])
                add("cost.cpu_us_per_run", out["cost_total"]["cpu_us_per_run"])
                add("cost.redis_us_per_run", out["redis_us_per_run"])
                add("cost.script_us_per_run", out["cost_total"]["script_us_per_run"])
                add("cost.exec_redis_us_per_run", out["redis_us_per_run_execute"])
                add("cost.exec_redis_cpu_us_per_run", out["cost_execute"]["cpu_us_per_run"])
                add("cost.worker_cpu_us_per_run", out.get("worker_cpu_us_per_run"))
                add("cost.parent_cpu_us_per_run", out.get("parent_cpu_us_per_run"))
                add("cost.client_cpu_us_per_enqueue", out["client_cpu_us_per_enqueue"])
            if "W7" in wl and variant == NOOP:
                self._add_rss(system, res, out["rss_after"], "after")
        res.add_extra("drain_sessions", out)
        for phase in ("enqueue", "drain"):
            load = out.get(f"load_{phase}")
            if load:
                add(f"load.{phase}_foreign", load["foreign_cores"])
                add(f"load.{phase}_steal", load["steal_cores"])
        summary = f"W2 {out['enqueue_rate'] or 0:,.0f}/s"
        if drain:
            summary += f"  W1{label} {out['drain_rate'] or 0:,.0f}/s"
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

    def run_live(self, system: System, res: SystemResult, rep: int, variant: str = NOOP) -> None:
        wl = self.o.workloads
        if variant != NOOP:
            wl = wl & VARIANT_WORKLOADS
        self.flush()
        with self.workers(system, variant) as groups:
            settled, waited = settle(groups, system.expected_processes(self.o.procs))
            if not settled:
                res.errors.append(f"rep {rep}: workers did not settle in {waited:.0f} s")
            if "W7" in wl:
                self._add_rss(system, res, rss_snapshot(groups), "idle")
            if not wl & {"W3", "W4", "W5", "W6"}:
                return
            with self.client(system, variant) as client:
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
                        runs = fn(system, res, rep, client, groups, variant)
                        load = meter.stop()
                        res.add(vkey(f"load.{name}_foreign", variant), load["foreign_cores"])
                        after = redis_cost.snapshot(self.conn)
                        if variant == HANDLER_REDIS:
                            self.check_handler_calls(runs)
                        res.add_extra(
                            vkey(f"cost_{name}", variant),
                            redis_cost.delta(before, after).to_json(max(1, runs)),
                        )

    def _w3(
        self,
        system: System,
        res: SystemResult,
        rep: int,
        client: ClientProc,
        groups: Any,
        variant: str,
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
        res.add(vkey("w3.wall_s", variant), wall)
        res.add(vkey("w3.efficiency", variant), ideal / wall if wall > 0 else None)
        res.add(vkey("w3.single_ms", variant), single_ms)
        res.add(vkey("w3.handler_ms", variant), statistics.median(busy) * 1000.0)
        res.add(
            vkey("w3.busy_fraction", variant),
            sum(busy) / (self.o.procs * wall) if wall > 0 else None,
        )
        self.progress.done(
            f"{system.name} rep {rep}: W3{tag(variant)} wall {wall:.2f}s "
            f"efficiency {ideal / wall:.2f} "
            f"(single {single_ms:.1f} ms, in handlers {statistics.median(busy) * 1000:.1f} ms)"
        )
        return n

    def _w4(
        self,
        system: System,
        res: SystemResult,
        rep: int,
        client: ClientProc,
        groups: Any,
        variant: str,
    ) -> int:
        s = self.o.sizes
        self.progress.begin(f"{system.name:<9} W4 round trip rep {rep}", s.rt)
        reply = client.request(
            {"op": "round_trips", "n": s.rt, "warmup": s.rt_warmup},
            on_progress=self.progress.update,
        )
        lat: list[float] = reply["latencies_ms"]
        for q in (50, 90, 99):
            res.add(vkey(f"w4.p{q}", variant), percentile(lat, q))
        res.add_extra(vkey("w4_latencies_ms", variant), lat)
        self.progress.done(
            f"{system.name} rep {rep}: W4{tag(variant)} p50 {percentile(lat, 50):.2f} ms "
            f"p99 {percentile(lat, 99):.2f} ms"
        )
        return s.rt + s.rt_warmup

    def _w5(
        self,
        system: System,
        res: SystemResult,
        rep: int,
        client: ClientProc,
        groups: Any,
        variant: str,
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
        self,
        system: System,
        res: SystemResult,
        rep: int,
        client: ClientProc,
        groups: Any,
        variant: str,
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

    def run_profile(self, system: System, res: SystemResult) -> None:
        """The SLOWLOG pass: Redis time by command and by script/function name.

        Also gives, per command, the share of its time spent inside scripts,
        which the timed sessions need to count each microsecond once.
        """
        n = self.o.sizes.profile
        out = self.drain_session(system, res, n, label="SLOWLOG pass", slowlog=True)
        enq: redis_cost.SlowlogPhase = out.pop("slowlog_enqueue")
        exe: redis_cost.SlowlogPhase = out.pop("slowlog_execute")
        self.nested_shares[system.name] = {
            "enqueue": enq.nested_share(),
            "execute": exe.nested_share(),
            "total": enq.merged(exe).nested_share(),
        }
        res.add("profile.enqueue_us", enq.top_usec() / n)
        res.add("profile.execute_us", exe.top_usec() / n)
        res.extra["slowlog_pass"] = {
            "runs": n,
            "enqueue": enq.to_json(n),
            "execute": exe.to_json(n),
            "nested_share": self.nested_shares[system.name],
        }
        if enq.lost or exe.lost:
            res.errors.append("SLOWLOG pass: the slowlog overflowed; the breakdown is partial")
        self.progress.done(
            f"{system.name} SLOWLOG pass: {enq.top_usec() / n:.1f} us Redis time per enqueue, "
            f"{exe.top_usec() / n:.1f} us per run executed"
        )

    def run_bulk(self, system: System, res: SystemResult, rep: int) -> None:
        """W2B: one client process enqueues through the system's bulk path, workers stopped."""
        s = self.o.sizes
        n, batch = s.bulk, s.bulk_batch
        self.flush()
        meter = CpuMeter()
        with self.client(system) as client:
            s0 = redis_cost.snapshot(self.conn)
            self.progress.begin(f"{system.name:<9} W2B bulk rep {rep}", n)
            meter.start()
            reply = client.request(
                {"op": "enqueue_bulk", "n": n, "batch": batch},
                on_progress=self.progress.update,
                timeout=max(600.0, n / 20),
            )
            load = meter.stop()
            self.progress.clear()
        s1 = redis_cost.snapshot(self.conn)
        if not reply["available"]:
            res.extra["w2b_unavailable"] = reply["reason"]
            self.progress.done(f"{system.name} rep {rep}: W2B not available ({reply['reason']})")
            return
        timed = max(1, int(reply["timed_runs"]))
        rate = timed / reply["elapsed"] if reply["elapsed"] > 0 else None
        cost = redis_cost.delta(s0, s1)
        res.add("w2b.rate", rate)
        res.add("w2b.client_cpu_us", reply["cpu"] * 1e6 / timed)
        res.add("w2b.redis_us", cost.redis_us_per_run(n, self._nested(system, "enqueue")))
        res.add("w2b.redis_cpu_us", cost.cpu_s * 1e6 / n)
        res.add("w2b.cmds_per_run", cost.total_calls / n)
        res.add("load.W2B_foreign", load["foreign_cores"])
        res.add_extra("w2b", {**reply, "cost": cost.to_json(n), "load": load})
        if self.o.bulk_drain:
            # Every bulk-enqueued run must also run (a check, not a measurement).
            with self.workers(system) as groups:
                self.wait_counter(n, groups)
        self.progress.done(f"{system.name} rep {rep}: W2B {rate or 0:,.0f} runs/s")

    def run_scale(self, system: System, res: SystemResult) -> None:
        for n in self.o.sizes.scale:
            out = self.drain_session(system, res, n, label=f"scale {n:,}")
            rate = out.get("drain_rate")
            enq_rate = out.get("enqueue_rate")
            res.add(f"scale.{n}.us_per_run", 1e6 / rate if rate else None)
            res.add(f"scale.{n}.enqueue_us_per_run", 1e6 / enq_rate if enq_rate else None)
            res.add(f"scale.{n}.bytes_per_queued", out["memory_after_enqueue"] / n)
            res.add(f"scale.{n}.bytes_per_run", out["memory_after_drain"] / n)
            res.add(f"scale.{n}.memory_after_enqueue", out["memory_after_enqueue"])
            res.add(f"scale.{n}.memory_after_drain", out["memory_after_drain"])
            res.add(f"scale.{n}.enqueue_rate", enq_rate)
            res.extra.setdefault("scale", {})[str(n)] = {
                k: v for k, v in out.items() if k != "rss_after"
            }
            self.progress.done(
                f"{system.name} scale {n:,}: {1e6 / rate if rate else float('nan'):.0f} us/run, "
                f"{out['memory_after_enqueue'] / n:,.0f} B/queued run, "
                f"{out['memory_after_drain'] / n:,.0f} B/finished run in Redis"
            )

    # ------------------------------------------------------------------ driver

    def _attempts(
        self, system: System, res: SystemResult, kind: str, fn: Any, rep: int, *args: Any
    ) -> None:
        """Run one session; redo it (up to ``retries`` times) if the machine was busy.

        When every attempt was disturbed, the least disturbed one is kept.
        """
        tries: list[tuple[float, SystemResult]] = []
        for attempt in range(self.o.retries + 1):
            if self.o.quiet_wait > 0:
                self.wait_quiet()
            sink = SystemResult(
                res.name, res.config, res.fanout_idiom, res.steps_idiom, res.bulk_idiom
            )
            self._guard(system, sink, f"rep {rep} {kind} session", fn, rep, *args)
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

    def _run_rep(self, system: System, res: SystemResult, rep: int) -> None:
        """One repetition of every selected session of one system."""
        wl = self.o.workloads
        for variant in self.o.variants:
            vwl = wl if variant == NOOP else wl & VARIANT_WORKLOADS
            if vwl & {"W1", "W2", "W7"}:
                kind = "drain" + tag(variant)
                self._attempts(system, res, kind, self.run_drain, rep, variant)
            if vwl & {"W3", "W4", "W5", "W6", "W7"}:
                kind = "live" + tag(variant)
                self._attempts(system, res, kind, self.run_live, rep, variant)
        if "W2B" in wl:
            self._attempts(system, res, "bulk", self.run_bulk, rep)

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
            res = SystemResult(
                system.name,
                system.config,
                system.fanout_idiom,
                system.steps_idiom,
                system.bulk_idiom,
            )
            self.results[system.name] = res
            reason = system.available()
            if reason:
                res.status, res.reason = "skipped", reason
                self.progress.note(f"skipping {system.name}: {reason}")
                continue
            res.versions = system.versions()
            active.append(system)
        if self.o.profile and wl & {"W1", "W2", "W2B"}:
            # First: the timed sessions use its in-script shares.
            for system in active:
                self._guard(system, self.results[system.name], "SLOWLOG pass", self.run_profile)
        for rep in range(1, self.o.reps + 1):
            for system in active:
                self._run_rep(system, self.results[system.name], rep)
        for system in active:
            res = self.results[system.name]
            if self.o.monitor and "W1" in wl:
                self._guard(system, res, "MONITOR pass", self.run_monitor)
            if self.o.scale:
                self._guard(system, res, "scale", self.run_scale)
        return self.results
