"""The harness's plumbing: its Redis connection, worker and client processes,
the counter it polls, and the guards around each case.

:class:`benchmarks.runner.Runner` builds the sessions and workloads on top.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import redis_cost
from benchmarks.clientproc import ClientProc
from benchmarks.model import HANDLER_REDIS, NOOP, CaseError, Options, SystemResult, WaitResult
from benchmarks.procs import CpuMeter, ManagedProcess, split_cpu_seconds, stop_many
from benchmarks.progress import Progress
from benchmarks.redis_server import RedisServer
from benchmarks.systems import System
from benchmarks.tasks import common

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
POLL_S = 0.003


class Harness:
    """Process and connection plumbing shared by every session (see the module doc)."""

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
        # system -> phase (enqueue, execute, total) -> command -> share of its
        # Redis time spent inside scripts, from the SLOWLOG pass.
        self.nested_shares: dict[str, dict[str, dict[str, float]]] = {}

    # ------------------------------------------------------------------ plumbing

    def env(self, system: System, variant: str = NOOP) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
        env[common.ENV_URL] = self.server.url
        env[common.ENV_PREFIX] = "bench"
        env[common.ENV_HANDLER_REDIS] = "1" if variant == HANDLER_REDIS else "0"
        env.update(system.worker_env())
        return env

    def log_path(self, system: System, what: str) -> Path:
        self._log_seq += 1
        return self.logs / f"{self._log_seq:04d}-{system.name}-{what}.log"

    def flush(self) -> None:
        self.conn.call("FLUSHALL")

    def reset_bench_keys(self) -> None:
        self.conn.call("DEL", *common.BENCH_KEYS)

    def start_workers(self, system: System, variant: str = NOOP) -> list[ManagedProcess]:
        env = self.env(system, variant)
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
    def workers(self, system: System, variant: str = NOOP) -> Iterator[list[ManagedProcess]]:
        groups = self.start_workers(system, variant)
        try:
            yield groups
        finally:
            stop_many(groups)

    @contextmanager
    def client(self, system: System, variant: str = NOOP) -> Iterator[ClientProc]:
        proc = ClientProc(
            system.name,
            env=self.env(system, variant),
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
        has_parent: bool = False,
    ) -> WaitResult:
        """Poll the counter every few ms until it reaches ``target``."""
        t_first = 0.0
        c_first = 0
        cpu_first = (0.0, 0.0)
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
                cpu_first = split_cpu_seconds(groups, has_parent)
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

    def _nested(self, system: System, phase: str) -> dict[str, float] | None:
        """Shares of time spent inside scripts, from the SLOWLOG pass (None if not run)."""
        shares = self.nested_shares.get(system.name)
        return None if shares is None else shares[phase]

    def check_handler_calls(self, runs: int) -> None:
        """The handler-redis variant really ran: one handler call per run."""
        got = int(self.conn.call("GET", common.HANDLER_KEY) or 0)
        if got != runs:
            raise CaseError(
                f"handler-redis variant: the handlers made {got} Redis calls of their own "
                f"for {runs} runs (expected one each)"
            )

    # ------------------------------------------------------------------ guards

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
