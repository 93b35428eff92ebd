"""Dramatiq: Redis broker, ``dramatiq --processes N --threads 1``, Results middleware."""

from __future__ import annotations

from typing import Any

from benchmarks.systems.base import Client, System

TASKS = "benchmarks.tasks.dramatiq_tasks"


class DramatiqSystem(System):
    name = "dramatiq"
    modules = ("dramatiq", "redis")
    distributions = ("dramatiq",)
    tasks_module = TASKS
    config = (
        "dramatiq --processes N --threads 1, RedisBroker (default prefetch), "
        "Results(RedisBackend) for W4"
    )
    fanout_idiom = "parent actor: group(n messages).run() / pipeline(n messages).run()"
    bulk_idiom = "group(noop.message() x batch).run() (the Redis broker enqueues each message)"

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                self.python(),
                "-m",
                "dramatiq",
                TASKS,
                "--processes",
                str(procs),
                "--threads",
                "1",
            ]
        ]

    def expected_processes(self, procs: int) -> int:
        return procs + 1

    def client_class(self) -> type[Client]:
        return DramatiqClient


class DramatiqClient(Client):
    def connect(self) -> None:
        from benchmarks.tasks import dramatiq_tasks

        self.tasks: Any = dramatiq_tasks

    def enqueue(self, kind: str, arg: int) -> None:
        t = self.tasks
        if kind == "noop":
            t.noop.send()
        elif kind == "cpu":
            t.cpu.send(arg)
        elif kind == "steps":
            t.steps.send(arg)
        else:
            raise ValueError(kind)

    def enqueue_batch(self, count: int) -> None:
        self.tasks.dramatiq.group(self.tasks.noop.message() for _ in range(count)).run()

    def round_trip(self, value: int) -> int:
        message = self.tasks.rt.send(value)
        got: int = message.get_result(block=True, timeout=30_000)
        return got

    def fanout(self, mode: str, n: int) -> None:
        self.tasks.fanout.send(mode, n)
