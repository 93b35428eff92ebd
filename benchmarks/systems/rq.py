"""RQ: ``N`` separate ``rq worker`` processes, default (forking) worker or SimpleWorker."""

from __future__ import annotations

from typing import Any, ClassVar

from benchmarks.systems.base import Client, System
from benchmarks.tasks import common

TASKS = "benchmarks.tasks.rq_tasks"


class RQSystem(System):
    name = "rq"
    modules = ("rq", "redis")
    distributions = ("rq",)
    tasks_module = TASKS
    worker_class: ClassVar[str] = "rq.Worker"
    config = (
        "N x `rq worker` (default Worker: forks a work horse per job), "
        "--quiet, result_ttl=0 except W4"
    )
    fanout_idiom = "parent job: enqueue n children / a depends_on chain of n"
    bulk_idiom = "Queue.enqueue_many([Queue.prepare_data(noop, result_ttl=0) x batch]) (a pipeline)"

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                self.python(),
                "-m",
                "rq.cli",
                "worker",
                "--url",
                "{url}",
                "--worker-class",
                self.worker_class,
                "--quiet",
                "--name",
                f"bench-{self.name}-{i}",
                common.QUEUE,
            ]
            for i in range(procs)
        ]

    def expected_processes(self, procs: int) -> int:
        return procs

    def client_class(self) -> type[Client]:
        return RQClient


class RQSimpleSystem(RQSystem):
    name = "rq-simple"
    worker_class = "rq.SimpleWorker"
    config = "N x `rq worker --worker-class rq.SimpleWorker` (no fork per job), --quiet"


class RQClient(Client):
    def connect(self) -> None:
        from redis import Redis
        from rq import Queue

        from benchmarks.tasks import rq_tasks

        self.tasks: Any = rq_tasks
        self.queue = Queue(common.QUEUE, connection=Redis.from_url(self.url))

    def enqueue(self, kind: str, arg: int) -> None:
        t = self.tasks
        if kind == "noop":
            self.queue.enqueue(t.noop, result_ttl=0)
        elif kind == "cpu":
            self.queue.enqueue(t.cpu, arg, result_ttl=0)
        elif kind == "steps":
            self.queue.enqueue(t.steps, arg, result_ttl=0)
        else:
            raise ValueError(kind)

    def enqueue_batch(self, count: int) -> None:
        from rq import Queue

        data = [Queue.prepare_data(self.tasks.noop, result_ttl=0) for _ in range(count)]
        jobs = self.queue.enqueue_many(data)
        if len(jobs) != count:
            raise RuntimeError(f"enqueue_many returned {len(jobs)} jobs for {count}")

    def round_trip(self, value: int) -> int:
        job = self.queue.enqueue(self.tasks.rt, value)
        result = job.latest_result(timeout=30)
        if result is None:
            raise TimeoutError("no RQ result within 30 s")
        got: int = result.return_value  # type: ignore[assignment]
        return got

    def fanout(self, mode: str, n: int) -> None:
        self.queue.enqueue(self.tasks.fanout, mode, n, result_ttl=0)
