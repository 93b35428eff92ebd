"""The client's reads raise the library's errors, as its writes do: a key of
another type under the prefix (a neighbour's, a hand edit) is a
:class:`WrongTypeError`, and ``BUSY`` while another program's script runs past
``busy-reply-threshold`` is a :class:`RedisBusyError` (in ``TRANSIENT_ERRORS``:
nothing was changed, try again). Both stay ``redis.ResponseError`` subclasses,
so code that caught redis-py's class on a read keeps working.

The BUSY tests use a private ``redis-server`` (its threshold lowered to 100 ms,
so a 2 s script gives ~1.9 s of ``BUSY`` replies)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    RedisBusyError,
    Registry,
    WrongTypeError,
    create_client,
    define_workflow,
)
from redflow_mp.aio import AsyncClient, create_async_client
from redflow_mp.errors import TRANSIENT_ERRORS
from tests.integration.test_results_busy import _spin_in_background
from tests.redis_server import RedisServer, busy_threshold_server

pytestmark = pytest.mark.timeout(90)


def _flow(registry: Registry, name: str) -> Any:
    @define_workflow(name, registry=registry)
    def flow(ctx: Context[Any]) -> int:
        return 1

    return flow


def _sync_reads(client: Client, run_id: str, name: str) -> dict[str, Callable[[], Any]]:
    return {
        "get_run": lambda: client.get_run(run_id),
        "get_run_steps": lambda: client.get_run_steps(run_id),
        "list_runs": lambda: client.list_runs(),
        "iter_runs": lambda: list(client.iter_runs()),
        "list_workflows": lambda: client.list_workflows(),
        "get_workflow_meta": lambda: client.get_workflow_meta(name),
        "state": client.handle(run_id).state,
    }


def _async_reads(
    client: AsyncClient, run_id: str, name: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "get_run": lambda: client.get_run(run_id),
        "get_run_steps": lambda: client.get_run_steps(run_id),
        "list_runs": lambda: client.list_runs(),
        "list_workflows": lambda: client.list_workflows(),
        "get_workflow_meta": lambda: client.get_workflow_meta(name),
        "state": client.handle(run_id).state,
    }


def _spoil(raw: redis.Redis, client: Client, run_id: str, name: str) -> None:
    """Each key the reads touch replaced by a value of another type."""
    k = client.keys
    for key in (k.runs_created, k.run(run_id), k.run_steps(run_id), k.workflows, k.workflow(name)):
        raw.delete(key)
        raw.set(key, "a neighbour's value")


def _classes(outcome: dict[str, BaseException | None]) -> dict[str, str]:
    return {name: type(exc).__name__ for name, exc in outcome.items()}


def test_every_read_meeting_a_key_of_another_type_raises_wrong_type_error(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    flow = _flow(registry, "rerr-wt")
    client.sync_registry(registry, app="rerr")
    run_id = flow.run(None).id
    _spoil(raw, client, run_id, "rerr-wt")
    outcome: dict[str, BaseException | None] = {}
    for name, read in _sync_reads(client, run_id, "rerr-wt").items():
        try:
            read()
            outcome[name] = None
        except Exception as exc:
            outcome[name] = exc
    wrong = {n: c for n, c in _classes(outcome).items() if c != "WrongTypeError"}
    assert wrong == {}, outcome
    for name, err in outcome.items():
        assert isinstance(err, WrongTypeError), (name, err)
        assert isinstance(err, redis.ResponseError), (name, err)  # redis-py's class still caught
        assert "WRONGTYPE" in str(err), (name, str(err))
        assert client.keys.prefix in str(err), (name, str(err))  # the key is named


def test_every_async_read_meeting_a_key_of_another_type_raises_wrong_type_error(
    client: Client, registry: Registry, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    flow = _flow(registry, "rerr-wt")
    client.sync_registry(registry, app="rerr")
    run_id = flow.run(None).id
    _spoil(raw, client, run_id, "rerr-wt")

    async def main() -> dict[str, BaseException | None]:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        outcome: dict[str, BaseException | None] = {}
        try:
            for name, read in _async_reads(ac, run_id, "rerr-wt").items():
                try:
                    await read()
                    outcome[name] = None
                except Exception as exc:
                    outcome[name] = exc
        finally:
            await ac.aclose()
        return outcome

    outcome = asyncio.run(main())
    wrong = {n: c for n, c in _classes(outcome).items() if c != "WrongTypeError"}
    assert wrong == {}, outcome
    for name, err in outcome.items():
        assert isinstance(err, WrongTypeError), (name, err)
        assert isinstance(err, redis.ResponseError), (name, err)
        assert "WRONGTYPE" in str(err), (name, str(err))


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def test_every_read_meeting_busy_raises_redis_busy_error(
    server: RedisServer, registry: Registry
) -> None:
    flow = _flow(registry, "rerr-busy")
    client = create_client(server.url, prefix="rerr-busy", registry=registry, default=False)
    try:
        client.sync_registry(registry, app="rerr")
        run_id = flow.run(None, client=client).id
        reads = _sync_reads(client, run_id, "rerr-busy")
        for read in reads.values():
            read()  # each read works before the neighbour's script
        spinner = _spin_in_background(server)
        outcome: dict[str, BaseException | None] = {}
        for name, read in reads.items():
            try:
                read()
                outcome[name] = None
            except Exception as exc:
                outcome[name] = exc
        spinner.join(30)
        wrong = {n: c for n, c in _classes(outcome).items() if c != "RedisBusyError"}
        assert wrong == {}, outcome
        for name, err in outcome.items():
            assert isinstance(err, RedisBusyError), (name, err)
            assert isinstance(err, TRANSIENT_ERRORS), (name, err)
            assert isinstance(err, redis.ResponseError), (name, err)
            assert "nothing was changed" in str(err), (name, str(err))
        assert client.get_run(run_id) is not None  # the same client, once the script ended
    finally:
        client.close()


def test_every_async_read_meeting_busy_raises_redis_busy_error(
    server: RedisServer, registry: Registry
) -> None:
    flow = _flow(registry, "rerr-busy")
    sync = create_client(server.url, prefix="rerr-busy", registry=registry, default=False)
    try:
        sync.sync_registry(registry, app="rerr")
        run_id = flow.run(None, client=sync).id
    finally:
        sync.close()

    async def main() -> dict[str, BaseException | None]:
        ac = create_async_client(server.url, prefix="rerr-busy", registry=registry, default=False)
        outcome: dict[str, BaseException | None] = {}
        try:
            reads = _async_reads(ac, run_id, "rerr-busy")
            for read in reads.values():
                await read()
            spinner = await asyncio.to_thread(_spin_in_background, server)
            for name, read in reads.items():
                try:
                    await read()
                    outcome[name] = None
                except Exception as exc:
                    outcome[name] = exc
            await asyncio.to_thread(spinner.join, 30)
            assert await ac.get_run(run_id) is not None
        finally:
            await ac.aclose()
        return outcome

    outcome = asyncio.run(main())
    wrong = {n: c for n, c in _classes(outcome).items() if c != "RedisBusyError"}
    assert wrong == {}, outcome
    for name, err in outcome.items():
        assert isinstance(err, RedisBusyError), (name, err)
        assert isinstance(err, TRANSIENT_ERRORS), (name, err)
        assert isinstance(err, redis.ResponseError), (name, err)


def test_the_gauges_during_a_neighbours_long_script_keep_the_loop_going(
    server: RedisServer, registry: Registry
) -> None:
    """The supervisor's metrics read (``gauges``, in the arbiter's loop) meeting
    BUSY gives the gauges it has (children alive) and raises nothing; the next
    scrape after the script reads them all again."""
    from redflow_supervisor.duties.status import gauges

    flow = _flow(registry, "rerr-gauges")
    client = create_client(server.url, prefix="rerr-gauges", registry=registry, default=False)
    try:
        client.sync_registry(registry, app="rerr")
        flow.run(None, client=client)
        before = gauges(client, registry, 2, ["default"])
        assert len(before) > 1, before
        spinner = _spin_in_background(server)
        during = gauges(client, registry, 2, ["default"])
        spinner.join(30)
        assert during == [("redflow_children_alive", (), 2.0)], during
        assert gauges(client, registry, 2, ["default"]) == before
    finally:
        client.close()


def test_the_admin_reads_raise_the_librarys_errors(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """``redflow_mp.admin``'s reads (``redflow queues``, ``redflow workflows``,
    the dashboard's queues and workflows pages) meeting a key of another type."""
    from redflow_mp import admin

    _flow(registry, "rerr-admin").run(None)
    client.sync_registry(registry, app="rerr")
    k = client.keys
    for key in (k.queues, k.cron_def, k.runs_status("queued")):
        raw.delete(key)
        raw.set(key, "a neighbour's value")
    reads: dict[str, Callable[[], Any]] = {
        "queue_stats": lambda: admin.queue_stats(client),
        "queue_names": lambda: admin.queue_names(client),
        "iter_queue_stats": lambda: list(admin.iter_queue_stats(client)),
        "cron_entries": lambda: admin.cron_entries(client),
        "workflow_stats": lambda: admin.workflow_stats(client),
    }
    outcome: dict[str, BaseException | None] = {}
    for name, read in reads.items():
        try:
            read()
            outcome[name] = None
        except Exception as exc:
            outcome[name] = exc
    wrong = {n: c for n, c in _classes(outcome).items() if c != "WrongTypeError"}
    assert wrong == {}, outcome


def test_an_idle_workers_wait_during_a_neighbours_long_script_is_ridden_out(
    server: RedisServer, registry: Registry
) -> None:
    """A worker's idle wait (its BLPOP on the bells) sent while Redis answers
    BUSY: the wait is a pause, not a raw ``ResponseError`` out of ``Worker.run``
    (the handler took BUSY for a bell of another type and re-raised it from the
    key check's TYPE pipeline, which met BUSY too). ``_wait`` is called alone:
    in a running worker the claim usually meets BUSY first, so the BLPOP's turn
    is a race."""
    from redflow_mp import Worker

    flow = _flow(registry, "rerr-worker")
    client = create_client(server.url, prefix="rerr-worker", registry=registry, default=False)
    try:
        worker = Worker(client)
        spinner = _spin_in_background(server)
        try:
            worker._wait()
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        spinner.join(30)
        assert error is None, repr(error)
        handle = flow.run(None, client=client)
        worker.max_runs = 1
        worker.run()
        assert handle.result(timeout=10) == 1
    finally:
        client.close()
