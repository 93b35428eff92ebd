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
    fanout_idiom = "parent task: call child() n times / a .then() pipeline of n"
    bulk_idiom = "no bulk API: a loop of noop() calls"

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

    def worker_env(self) -> dict[str, str]:
        # Every run stores (and notifies) its result, as every redflow run does: the
        # configuration that reproduces the Huey figure (2,385 runs/s W1).
        return {"BENCH_HUEY_NOOP_RESULT": "1"}

    def expected_processes(self, procs: int) -> int:
        return procs + 2  # consumer, scheduler, workers

    def client_class(self) -> type[Client]:
        return HueyClient


class HueyFireSystem(HueySystem):
    """Huey fire-and-forget: the no-op returns None, so nothing is stored."""

    name = "huey-fire"
    config = (
        "as huey, but the no-op returns None (store_none=False: nothing stored, nothing notified)"
    )

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_NOOP_RESULT": "0"}


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
