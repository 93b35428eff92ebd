"""SIGKILL of the supervisor's parent alone (the OOM killer picks the arbiter, an
operator kills the wrong pid): its children are orphans. An idle orphan leaves
within a second; a busy one finishes its current run and leaves. But nobody
enforces that run's ``timeout`` any more, while the orphan's heartbeat keeps its
lease alive: a handler stuck past its timeout (a hung call, a loop) kept its
run from every other supervisor for as long as it hung, forever for a loop.
An orphan now enforces the timeout itself: past it, the orphan exits, the
lease lapses, and another supervisor's reaper takes the run over."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from redflow_mp import Client, create_client
from redflow_mp.transport import RETRIES, SOCKET_TIMEOUT
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_orphan_past_its_runs_timeout_leaves_and_the_run_is_taken_over(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    first = supervisor(procs=1)
    (orphan,) = first.wait_workers(1)
    handle = flows.overtime.run(None, client=client)  # timeout 1 s, sleeps 60 s
    ledger = f"{client.keys.tag}:ledger:overtime"
    wait_until(lambda: raw.get(ledger) == b"1", 20, message="the first attempt")
    os.kill(first.pid, signal.SIGKILL)  # the parent only: its child lives on
    first.wait(timeout=10)
    second = supervisor(procs=1)
    second.wait_workers(1)
    # timeout (1 s) + the orphan's check (1 s) + a lease (5 s) + a reaper pass
    wait_until(lambda: _gone(orphan.pid), 15, message=f"the orphan {orphan.pid} to leave")
    wait_until(lambda: int(raw.get(ledger) or 0) >= 2, 20, message="the run taken over")
    state = client.get_run(handle.id)
    assert state is not None and state.attempt >= 1


def test_an_orphan_whose_run_is_canceled_and_ignores_it_leaves_after_cancel_grace(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The parent alone SIGKILLed while its child runs a handler deaf to
    cancellation (no step boundary, no timeout: the default), then the run is
    canceled. Nobody stops that handler after ``cancel_grace`` any more: the
    orphan's heartbeat keeps the lease and renews it for good, the run stays
    ``running`` with its cancel requested, no supervisor can take it over, and
    the orphan burns a core until someone finds its pid."""
    first = supervisor(procs=1)
    (orphan,) = first.wait_workers(1)
    handle = flows.spin.run(None, client=client)
    started = f"{client.keys.tag}:spin-started"
    wait_until(lambda: raw.get(started) is not None, 20, message="the spin handler")
    os.kill(first.pid, signal.SIGKILL)  # the parent only: its child lives on
    first.wait(timeout=10)
    second = supervisor(procs=1)
    second.wait_workers(1)
    assert client.cancel_run(handle.id) is True
    # cancel_grace (5 s) + the orphan's check (1 s) + a lease (5 s) + a reaper pass
    # before: AssertionError: timed out after 18 s waiting for the run to end canceled
    wait_until(
        lambda: (s := client.get_run(handle.id)) is not None and s.status == "canceled",
        18,
        0.1,
        message="the run to end canceled",
    )
    wait_until(lambda: _gone(orphan.pid), 5, message=f"the orphan {orphan.pid} to leave")


@pytest.mark.timeout(120)
def test_an_orphan_leaves_on_its_runs_timeout_while_redis_is_stalled(
    server: RedisServer, tmp_path: Path
) -> None:
    """The parent SIGKILLed, then redis-server SIGSTOPped while the orphan's run is
    under its timeout (3 s): the orphan's once-a-second cancel check (an HEXISTS)
    blocked its watch thread for the socket timeout and the client's retries, and
    the run's timeout was enforced that much later (a host cut off from Redis
    while the others take its run over once the lease lapses: the hung handler
    went on running past its timeout alongside the new attempt)."""
    prefix = "orphanstall"
    client = create_client(server.url, prefix=prefix, default=False)
    sup = Supervisor(server.url, prefix, tmp_path / "a.log", procs=1).start()
    assert server.proc is not None
    stopped = False
    try:
        (orphan,) = sup.wait_workers(1)
        flows.overtime_stalled.run(None, client=client)
        raw = server.client()
        key = f"{client.keys.tag}:overtime-stalled"
        wait_until(lambda: raw.get(key) is not None, 20, message="the run to start")
        started = time.monotonic()
        raw.close()
        sup.send(signal.SIGKILL)  # the parent only: its child lives on
        sup.wait(timeout=10)
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        # timeout (3 s) + the orphan's check (1 s) + scheduling on a loaded machine.
        # The bound is the thing under test (the timeout enforced while Redis is
        # stalled), with headroom: the cancel check on the watch's thread blocked it
        # for a socket timeout and its retries, SOCKET_TIMEOUT x (1 + RETRIES) = 20 s,
        # from the first check after the SIGSTOP (after `started`), so the old code
        # left after >= 19 s and a 15 s bound still tells the two apart.
        # before (with 8 s): AssertionError: timed out after 8 s waiting for the orphan to leave
        blocked = SOCKET_TIMEOUT * (1 + RETRIES)
        bound = blocked - 5
        wait_until(lambda: _gone(orphan.pid), bound, message="the orphan to leave")
        assert time.monotonic() - started < bound
    finally:
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)
        client.close()
        sup.stop()


@pytest.mark.timeout(120)
def test_an_orphan_booting_while_redis_is_down_leaves(server: RedisServer, tmp_path: Path) -> None:
    """A child forked during a Redis outage waits for Redis before reporting ready
    (``boot_check``). Its supervisor SIGKILLed meanwhile, it waited on as an
    orphan for as long as Redis stayed away (for good, were the server gone:
    the children of a test's supervisor outlived its test process and server),
    then served one claim's turn before seeing its parent gone. It now leaves
    as soon as it sees its parent gone, Redis or not."""
    sup = Supervisor(server.url, "orphanboot", tmp_path / "a.log", procs=1).start()
    booting: psutil.Process | None = None
    try:
        (first,) = sup.wait_workers(1)
        server.stop()  # Redis gone: a child forked now cannot boot
        first.kill()
        wait_until(
            lambda: [w for w in sup.workers() if w.pid != first.pid],
            30,
            0.05,
            message="the supervisor to fork a child in place of the killed one",
        )
        (booting,) = [w for w in sup.workers() if w.pid != first.pid]
        sup.send(signal.SIGKILL)  # the parent only: the booting child lives on
        sup.wait(timeout=10)
        # before: AssertionError: timed out after 30 s waiting for the orphan ... to leave
        wait_until(
            lambda: _gone(booting.pid),
            30,
            0.05,
            message=f"the orphan {booting.pid} booting during the outage to leave",
        )
    finally:
        sup.stop()
        if booting is not None and not _gone(booting.pid):
            booting.kill()
