"""A worker's call, or an enqueue, whose reply is lost after the server ran it (a
real network fault: a proxy forwards the request and resets the connection
instead of relaying the reply). The caller cannot tell whether its call was
applied; its resend must be safe, must not leave the run waiting for the reaper
and must not make a run twice."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, RunStatus, create_client, define_workflow
from redflow_mp.shards import shard_index_of_workflow
from redflow_mp.worker_hooks import NoHooks
from tests.helpers import WorkerPool, client_of
from tests.lostreply import ReplyDropper
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

LEASE = 5.0  # the default lease (Worker.lease_ms, the supervisor's lease_ms)


@pytest.fixture()
def proxy(redis_server: RedisServer) -> Iterator[ReplyDropper]:
    p = ReplyDropper(redis_server.port).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture()
def via_proxy(
    redis_server: RedisServer, proxy: ReplyDropper, prefix: str, registry: Registry
) -> Iterator[Client]:
    url = redis_server.url.replace(f":{redis_server.port}/", f":{proxy.port}/")
    with client_of(url, prefix, registry) as c:
        yield c


@pytest.fixture()
def direct(redis_server: RedisServer, prefix: str, registry: Registry) -> Iterator[Client]:
    with client_of(redis_server.url, prefix, registry) as c:
        yield c


def test_a_claim_whose_reply_is_lost_starts_its_run_at_once_and_spends_no_attempt(
    registry: Registry,
    proxy: ReplyDropper,
    via_proxy: Client,
    direct: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[float] = []

    @define_workflow("lost-claim", queue="lost-claim", registry=registry)
    def lost_claim(ctx: Context[Any]) -> str:
        started.append(time.monotonic())
        return "done"

    marker = f"claim-{uuid.uuid4().hex}"
    proxy.drop_reply(reply=marker.encode())  # the claim's reply carries the input
    pool = WorkerPool(via_proxy)
    try:
        with caplog.at_level(logging.WARNING, logger="redflow_mp"):
            # the defaults a user runs in-process: lease 5 s, block 1 s, maintenance
            # on (this worker is also the reaper)
            pool.start(block_timeout=1.0)
            handle = lost_claim.run(marker, client=direct)
            assert proxy.dropped.wait(10), "the claim's reply was never dropped"
            lost_at = time.monotonic()
            assert handle.result(timeout=3 * LEASE) == "done"
        state = direct.get_run(handle.id)
        assert state is not None and state.status is RunStatus.SUCCEEDED
        assert state.attempt == 1 and state.crash_count == 0 and state.last_crash is None
        assert [(a.attempt, a.outcome) for a in state.attempts] == [(1, "succeeded")]
        assert len(started) == 1
        waited = started[0] - lost_at
        assert waited < LEASE / 4, f"the run started {waited:.2f} s after its claim reply was lost"
    finally:
        pool.stop_all()


def test_a_finish_whose_reply_is_lost_is_resent_safely_with_the_claim_riding_on_it(
    registry: Registry,
    proxy: ReplyDropper,
    via_proxy: Client,
    direct: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: dict[str, list[float]] = {}

    @define_workflow("lost-finish", queue="lost-finish", registry=registry)
    def lost_finish(ctx: Context[Any]) -> str:
        started.setdefault(ctx.input, []).append(time.monotonic())
        return f"out-{ctx.input}"

    first, second = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    # The first run's finish rides on the claim that takes the second: that call's
    # reply is lost after Redis applied the finish and claimed the second run.
    proxy.drop_reply(request=f"out-{first}".encode())
    a = lost_finish.run(first, client=direct)
    b = lost_finish.run(second, client=direct)
    pool = WorkerPool(via_proxy)
    try:
        with caplog.at_level(logging.WARNING, logger="redflow_mp"):
            pool.start(block_timeout=1.0)
            assert proxy.dropped.wait(10), "the finish's reply was never dropped"
            lost_at = time.monotonic()
            assert a.result(timeout=3 * LEASE) == f"out-{first}"
            assert b.result(timeout=3 * LEASE) == f"out-{second}"
        lease_lost = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
        assert lease_lost == []
        for handle in (a, b):
            state = direct.get_run(handle.id)
            assert state is not None and state.status is RunStatus.SUCCEEDED
            assert state.last_crash is None
            assert [(x.attempt, x.outcome) for x in state.attempts] == [(1, "succeeded")]
        assert {k: len(v) for k, v in started.items()} == {first: 1, second: 1}
        waited = started[second][0] - lost_at
        assert waited < LEASE / 4, f"the second run started {waited:.2f} s after the lost reply"
    finally:
        pool.stop_all()


class _StopAfterDrop(NoHooks):
    """A host that tells its worker to stop once the claim's reply was lost (the
    stop comes before the worker could resend it)."""

    def __init__(self, proxy: ReplyDropper) -> None:
        self.proxy = proxy

    def should_stop(self) -> bool:
        return self.proxy.dropped.is_set()


def test_a_worker_stopping_after_a_lost_claim_reply_puts_its_run_back_at_once(
    registry: Registry,
    proxy: ReplyDropper,
    via_proxy: Client,
    direct: Client,
) -> None:
    @define_workflow("lost-stop", queue="lost-stop", registry=registry)
    def lost_stop(ctx: Context[Any]) -> str:
        return "done"

    marker = f"stop-{uuid.uuid4().hex}"
    proxy.drop_reply(reply=marker.encode())
    first = WorkerPool(via_proxy)
    second = WorkerPool(direct)
    try:
        stopping = first.start(block_timeout=1.0, hooks=_StopAfterDrop(proxy))
        handle = lost_stop.run(marker, client=direct)
        assert proxy.dropped.wait(10), "the claim's reply was never dropped"
        lost_at = time.monotonic()
        first.stop_all()
        assert stopping.runs_done == 0
        second.start(block_timeout=1.0)
        assert handle.result(timeout=3 * LEASE) == "done"
        waited = time.monotonic() - lost_at
        assert waited < LEASE / 4, f"the run ended {waited:.2f} s after its claim reply was lost"
        state = direct.get_run(handle.id)
        assert state is not None and state.attempt == 1 and state.crash_count == 0
        assert state.last_crash == "worker stopped after a claim whose reply was lost"
    finally:
        first.stop_all()
        second.stop_all()


def _workflow_in_shard(stem: str, index: int, shards: int) -> str:
    """A workflow name whose keys and runs live in shard ``index``."""
    return next(
        f"{stem}-{i}"
        for i in range(1000)
        if shard_index_of_workflow(f"{stem}-{i}", shards) == index
    )


def test_a_sharded_claim_whose_reply_is_lost_while_another_shard_gave_a_run_starts_at_once(
    redis_server: RedisServer,
    proxy: ReplyDropper,
    prefix: str,
    registry: Registry,
) -> None:
    """shards > 1: the claim pass's home shard takes a run whose reply is lost,
    and the next shard of the same pass gives the worker another run. The lost
    claim is resent to the home shard with its token: its run starts now, with
    no crash note and no attempt spent, not a lease later by the reaper."""
    started: dict[str, list[float]] = {}

    def body(ctx: Context[Any]) -> str:
        started.setdefault(ctx.input, []).append(time.monotonic())
        return "done"

    home_name = _workflow_in_shard("lost-home", 0, 2)
    other_name = _workflow_in_shard("lost-other", 1, 2)
    home_wf = define_workflow(home_name, queue="lost-shards", registry=registry)(body)
    other_wf = define_workflow(other_name, queue="lost-shards", registry=registry)(body)
    url = redis_server.url.replace(f":{redis_server.port}/", f":{proxy.port}/")
    via = create_client(url, prefix=prefix, registry=registry, default=False, shards=2)
    direct = create_client(
        redis_server.url, prefix=prefix, registry=registry, default=False, shards=2
    )
    marker = f"home-{uuid.uuid4().hex}"
    proxy.drop_reply(reply=marker.encode())  # the home shard's claim reply carries it
    # both ready before the worker's first pass: home shard first, then shard 1
    lost = home_wf.run(marker, client=direct)
    other = other_wf.run("other", client=direct)
    pool = WorkerPool(via)
    try:
        pool.start(block_timeout=1.0, home_shard=0)  # lease 5 s, maintenance on
        assert proxy.dropped.wait(10), "the home shard's claim reply was never dropped"
        lost_at = time.monotonic()
        assert other.result(timeout=3 * LEASE) == "done"
        assert lost.result(timeout=3 * LEASE) == "done"
        state = direct.get_run(lost.id)
        assert state is not None and state.status is RunStatus.SUCCEEDED
        assert (state.attempt, state.crash_count, state.last_crash) == (1, 0, None)
        assert [(a.attempt, a.outcome) for a in state.attempts] == [(1, "succeeded")]
        assert {k: len(v) for k, v in started.items()} == {marker: 1, "other": 1}
        waited = started[marker][0] - lost_at
        assert waited < LEASE / 4, f"the run started {waited:.2f} s after its claim reply was lost"
    finally:
        pool.stop_all()
        via.close()
        direct.close()


@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "fcall"])
def test_an_enqueue_whose_reply_is_lost_makes_one_run_and_names_it(
    redis_server: RedisServer, proxy: ReplyDropper, direct: Client, functions: bool
) -> None:
    """``enqueue_run`` replies a created run's id alone and ``{id, 0}`` for one that
    existed: the resend after a lost reply finds the run the first send made (a
    plain run by its id, a keyed one by its key) and the handle names it."""
    if functions and direct.transport.server_version() < (7, 0):
        pytest.skip("Redis 6.2 has no functions")
    registry = Registry()

    @define_workflow("lost-enqueue", queue="lost-q", registry=registry)
    def flow(ctx: Context[Any]) -> None:
        return None

    url = redis_server.url.replace(f":{redis_server.port}/", f":{proxy.port}/")
    client = create_client(
        url, prefix=direct.prefix, registry=registry, default=False, redis_functions=functions
    )
    try:
        warm = flow.run({"warm": 1}, client=client).id  # loaded and connected
        made = [flow.run({"k": "x"}, client=client, idempotency_key="k").id]
        for marker, key in (("lost-plain", None), ("lost-keyed", "k2"), ("lost-dup", "k")):
            proxy.drop_reply(request=marker.encode())
            made.append(flow.run({"m": marker}, client=client, idempotency_key=key).id)
            assert proxy.dropped.is_set(), marker
        assert made[3] == made[0]  # the duplicate's resend names the original
        runs = direct.list_runs(workflow="lost-enqueue", limit=100)
        # warm, k, plain, k2: each once
        assert sorted(r.id for r in runs) == sorted({warm, *made})
        assert len(runs) == 4
        assert {r.status for r in runs} == {RunStatus.QUEUED}
    finally:
        client.close()
