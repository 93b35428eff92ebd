"""Huey: ``huey_consumer -w N -k process`` on RedisHuey (blocking, result notification)."""

from __future__ import annotations

from typing import Any

from benchmarks.systems.base import Client, System

TASKS = "benchmarks.tasks.huey_tasks"


class HueySystem(System):
    name = "huey"
    modules = ("huey", "redis")
    distributions = ("huey",)
    tasks_module = TASKS
    config = (
        "huey_consumer -w N -k process -n -q, RedisHuey(blocking=True, "
        "notify_result=True), result.get(blocking=True)"
    )
    fanout_idiom = "parent task: call child() 200 times / a .then() pipeline of 200"

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                self.python(),
                "-m",
                "huey.bin.huey_consumer",
                f"{TASKS}.huey",
                "-w",
                str(procs),
                "-k",
                "process",
                "-n",
                "-q",
            ]
        ]

    def expected_processes(self, procs: int) -> int:
        return procs + 2  # consumer, scheduler, workers

    def client_class(self) -> type[Client]:
        return HueyClient


class HueyClient(Client):
    def connect(self) -> None:
        from benchmarks.tasks import huey_tasks

        self.tasks: Any = huey_tasks

    def enqueue(self, kind: str, arg: int) -> None:
        t = self.tasks
        if kind == "noop":
            t.noop()
        elif kind == "cpu":
            t.cpu(arg)
        elif kind == "steps":
            t.steps(arg)
        else:
            raise ValueError(kind)

    def round_trip(self, value: int) -> int:
        got: int = self.tasks.rt(value).get(blocking=True, timeout=30)
        return got

    def fanout(self, mode: str, n: int) -> None:
        self.tasks.fanout(mode, n)
