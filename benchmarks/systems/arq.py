"""arq: ``N`` separate ``arq`` worker processes, 1 ms queue polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.systems.base import Client, ProgressFn, System, Timed

TASKS = "benchmarks.tasks.arq_tasks"


class ArqSystem(System):
    name = "arq"
    modules = ("arq", "redis")
    distributions = ("arq",)
    tasks_module = TASKS
    config = (
        "N x `arq WorkerSettings`, poll_delay=1 ms, max_jobs=1 per process, "
        "keep_result=0 except W4, Job.result(poll_delay=1 ms)"
    )
    fanout_idiom = "parent job: enqueue_job x n / enqueue_job + await job.result(), n times"
    bulk_idiom = "no bulk API (nor pipelined enqueue): a loop of await enqueue_job"

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                self.python(),
                "-m",
                "arq",
                f"{TASKS}.WorkerSettings",
                "--custom-log-dict",
                f"{TASKS}.LOG_CONFIG",
            ]
            for _ in range(procs)
        ]

    def expected_processes(self, procs: int) -> int:
        return procs

    def client_class(self) -> type[Client]:
        return ArqClient


class ArqClient(Client):
    """Runs one event loop; each timed loop is a single coroutine awaiting one call at a time."""

    def connect(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        from benchmarks.tasks import arq_tasks

        self.wait_result = arq_tasks.wait_result
        self.loop = asyncio.new_event_loop()
        self.pool: Any = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(self.url)))

    async def _enqueue(self, kind: str, arg: int) -> None:
        if kind == "noop":
            job = await self.pool.enqueue_job("noop")
        elif kind in ("cpu", "steps"):
            job = await self.pool.enqueue_job(kind, arg)
        else:
            raise ValueError(kind)
        if job is None:
            raise RuntimeError("arq did not enqueue the job")

    def enqueue(self, kind: str, arg: int) -> None:
        self.loop.run_until_complete(self._enqueue(kind, arg))

    def enqueue_many(self, kind: str, arg: int, n: int, progress: ProgressFn) -> Timed:
        async def run() -> Timed:
            if n <= 0:
                return Timed(0.0, 0.0, 0)
            await self._enqueue(kind, arg)
            progress(1)
            step = max(1, n // 200)
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(2, n + 1):
                await self._enqueue(kind, arg)
                if i % step == 0:
                    progress(i)
            timed = Timed(time.perf_counter() - start, time.process_time() - cpu, n - 1)
            progress(n)
            return timed

        return self.loop.run_until_complete(run())

    def enqueue_batch(self, count: int) -> None:
        async def run() -> None:
            for _ in range(count):
                await self._enqueue("noop", 0)

        self.loop.run_until_complete(run())

    async def _round_trip(self, value: int) -> int:
        job = await self.pool.enqueue_job("rt", value)
        if job is None:
            raise RuntimeError("arq did not enqueue the job")
        got: int = await self.wait_result(job)
        return got

    def round_trip(self, value: int) -> int:
        return self.loop.run_until_complete(self._round_trip(value))

    def round_trips(self, n: int, warmup: int, progress: ProgressFn) -> list[float]:
        async def run() -> list[float]:
            for i in range(warmup):
                if await self._round_trip(i) != i:
                    raise RuntimeError("wrong round-trip result")
            out: list[float] = []
            for i in range(n):
                start = time.perf_counter()
                got = await self._round_trip(i)
                out.append((time.perf_counter() - start) * 1000.0)
                if got != i:
                    raise RuntimeError(f"round trip returned {got!r}, expected {i!r}")
                if (i + 1) % 10 == 0 or i + 1 == n:
                    progress(i + 1)
            return out

        return self.loop.run_until_complete(run())

    def fanout(self, mode: str, n: int) -> None:
        async def run() -> None:
            job = await self.pool.enqueue_job("fanout", mode, n)
            if job is None:
                raise RuntimeError("arq did not enqueue the job")

        self.loop.run_until_complete(run())

    def close(self) -> None:
        if hasattr(self, "pool"):
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()
