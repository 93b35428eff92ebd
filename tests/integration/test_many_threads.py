"""The sync client used from many threads over a process's life (a
thread-per-request web server) and from many threads at once.

redis-py >= 6 caps a ConnectionPool at 100 connections by default. The client
keeps one connection per calling thread, which the pool counted for ever (also
after the thread ended), and one pub/sub connection per thread awaiting a result:
the 100th thread of the process got ``MaxConnectionsError`` on every call, and
more than ~50 threads awaiting results at once timed out."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(120)


def _job(registry: Registry) -> Any:
    @define_workflow("job", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def test_the_two_hundredth_short_lived_thread_still_enqueues(
    client: Client, registry: Registry
) -> None:
    job = _job(registry)
    errors: list[tuple[int, str]] = []

    def request(i: int) -> None:  # one request, one thread, as a threading server does
        try:
            run_id = job.run(i, client=client).id
            state = client.get_run(run_id)
            assert state is not None and state.input == i
        except Exception as exc:
            errors.append((i, repr(exc)))

    for i in range(200):
        thread = threading.Thread(target=request, args=(i,))
        thread.start()
        thread.join()
    assert errors == [], f"{len(errors)} requests failed, the first: {errors[:1]}"


def test_a_hundred_and_fifty_threads_await_results_at_once(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    job = _job(registry)
    handles = job.run_many(list(range(150)), client=client)
    workers.start()
    assert handles[-1].result(timeout=30) == 149
    start = threading.Barrier(len(handles))
    outputs: dict[int, Any] = {}

    def wait(i: int) -> None:
        start.wait()
        try:
            outputs[i] = handles[i].result(timeout=20)
        except Exception as exc:
            outputs[i] = repr(exc)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {i: out for i, out in outputs.items() if out != i}
    assert failed == {}, f"{len(failed)} waits failed, e.g. {next(iter(failed.values()), None)}"
