"""Celery: redis broker + redis result backend, prefork pool ``-c N``."""

from __future__ import annotations

from typing import Any

from benchmarks.systems.base import Client, System

TASKS = "benchmarks.tasks.celery_tasks"


class CelerySystem(System):
    name = "celery"
    modules = ("celery", "kombu", "redis")
    distributions = ("celery", "kombu")
    tasks_module = TASKS
    config = (
        "celery worker -P prefork -c N, redis broker + redis result backend, prefetch "
        "multiplier 4, -O fair, --without-mingle/gossip/heartbeat, results only for W4"
    )
    fanout_idiom = "parent task: group(n children).apply_async() / chain(n children).apply_async()"
    bulk_idiom = "group(noop.s() x batch).apply_async() (one producer; kombu sends each message)"

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                self.python(),
                "-m",
                "celery",
                "-A",
                TASKS,
                "worker",
                "-P",
                "prefork",
                "-c",
                str(procs),
                "-Q",
                "bench",
                "-O",
                "fair",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ]
        ]

    def expected_processes(self, procs: int) -> int:
        return procs + 1

    def client_class(self) -> type[Client]:
        return CeleryClient


class CeleryClient(Client):
    def connect(self) -> None:
        from benchmarks.tasks import celery_tasks

        self.tasks: Any = celery_tasks

    def enqueue(self, kind: str, arg: int) -> None:
        t = self.tasks
        if kind == "noop":
            t.noop.delay()
        elif kind == "cpu":
            t.cpu.delay(arg)
        elif kind == "steps":
            t.steps.delay(arg)
        else:
            raise ValueError(kind)

    def enqueue_batch(self, count: int) -> None:
        self.tasks.group(self.tasks.noop.s() for _ in range(count)).apply_async()

    def round_trip(self, value: int) -> int:
        result: int = self.tasks.rt.delay(value).get(timeout=30)
        return result

    def fanout(self, mode: str, n: int) -> None:
        self.tasks.fanout.delay(mode, n)
