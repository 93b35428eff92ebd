"""The supervisor's parent keeps answering while ``redis-server`` is stalled
(SIGSTOP: a hung host, a long fork for a snapshot, a paused VM): its duties' Redis
calls each block until a socket timeout, and it ran every due duty in one pass of
its loop before it looked at its signals again. A TTIN took more than a minute to
add its child; a child that died was replaced as late, and then only after its runs
were put back (each call of that blocked as long). Default settings.

No wall-clock bound (a loaded machine stretches every step): a blocked call is
counted by the connections the parent opens to the stalled server (a call that
times out reconnects and sends again, then gives up: 5 s each by default), and a
replacement that comes first is an order of events."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil
import pytest

from redflow_mp import create_client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

#: New connections the parent may open from a signal to its answer: the blocked
#: call it is in (its resend), and the next one while the answer becomes visible
#: (a fork, the child's title). Running the duties due before answering (the
#: defect) is one or two each, a dozen duties.
MAX_CALLS = 4


def _ports(pid: int, server_port: int) -> set[int]:
    """The local ports of ``pid``'s TCP connections to ``server_port``."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port == server_port}


def _answered(
    sup: Supervisor, server_port: int, done: object, what: str
) -> tuple[set[int], set[int]]:
    """Wait (60 s at most) for ``done()``; return the parent's connections to the
    server before and every one seen until then."""
    before = _ports(sup.pid, server_port)
    seen = set(before)

    def check() -> bool:
        seen.update(_ports(sup.pid, server_port))
        return bool(done())  # type: ignore[operator]

    wait_until(check, 60, interval=0.02, message=f"{what}\n{sup.log()[-3000:]}")
    seen.update(_ports(sup.pid, server_port))
    return before, seen


def test_ttin_and_a_dead_child_are_answered_while_redis_is_stalled(
    server: RedisServer, tmp_path: Path
) -> None:
    client = create_client(server.url, prefix="stallsig", default=False)
    sup = Supervisor(server.url, "stallsig", tmp_path / "sup.log", procs=1).start()
    assert server.proc is not None
    stopped = False
    try:
        (first,) = sup.wait_workers(1)
        # The child served a run (it is ready, and idle again), before the stall:
        # wait_workers sees the process, not its boot, and a child still booting
        # when Redis stopped (a loaded machine) died as a start failure whose
        # replacement came after the duties' blocked calls (restart backoff):
        # 'timed out after 60 s waiting for the dead child's replacement'.
        assert flows.nap.run(0.0, client=client).result(timeout=60) == first.pid
        # the parent is in a duties' blocked call: it opened a connection since the stop
        was = _ports(sup.pid, server.port)
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        wait_until(lambda: _ports(sup.pid, server.port) - was, 60, message="a blocked call")
        sup.send(signal.SIGTTIN)
        before, seen = _answered(
            sup, server.port, lambda: len(sup.workers()) == 2, "the TTIN's child"
        )
        assert len(seen - before) <= MAX_CALLS, (seen, before, sup.log()[-3000:])
        first.kill()  # idle: nothing of it to put back
        before, seen = _answered(
            sup,
            server.port,
            lambda: len(sup.workers()) == 2 and first.pid not in {p.pid for p in sup.workers()},
            "the dead child's replacement",
        )
        assert len(seen - before) <= MAX_CALLS, (seen, before, sup.log()[-3000:])
    finally:
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        client.close()
        sup.stop()


@pytest.mark.timeout(240)
def test_a_child_dead_with_a_run_is_replaced_before_its_run_is_put_back(
    server: RedisServer, tmp_path: Path
) -> None:
    """Putting back the run of a dead child waits for Redis (two socket timeouts
    each while it stalls, then the reaper's lease expiry): its slot is filled
    meanwhile, the replacement forked first."""
    prefix = "stallrun"
    client = create_client(server.url, prefix=prefix, default=False)
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=1).start()
    assert server.proc is not None
    stopped = False
    try:
        (first,) = sup.wait_workers(1)
        handle = flows.nap.run(600.0, client=client)
        wait_until(
            lambda: (s := handle.state()) is not None and s.status == "running",
            60,
            message="the run started",
        )
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        first.kill()
        (second,) = wait_until(
            lambda: [p for p in sup.workers() if p.pid != first.pid],
            60,
            interval=0.02,
            message=f"the replacement\n{sup.log()[-3000:]}",
        )
        # Its recovery gave up (Redis stalled): the run it held, or, when it died
        # between the claim's reply and the board's entry (the run already "running"
        # in Redis), the run its claim token finds. Since the put-backs wait in a
        # queue (aftermath.py), it says it waits for Redis instead of giving up.
        gave_up = (
            f"could not put back run {handle.id}",
            "could not look for a run claimed",
            "putting back the runs of dead workers waits for Redis",
        )
        log = sup.log()
        assert not any(g in log for g in gave_up[:2]), (
            f"replaced after its run's recovery gave up\n{log[-3000:]}"
        )
        assert second.is_running()
        # the recovery was tried while Redis stalled (the case this is about)
        try:
            wait_until(lambda: any(g in sup.log() for g in gave_up), 150, message=str(gave_up))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{sup.log()[-5000:]}") from None
    finally:
        if stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        client.close()
        sup.stop()
