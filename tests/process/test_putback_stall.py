"""A dead child's runs wait for a stalled Redis without holding up the parent
(``supervisor/aftermath.py``). Its put-back was sent from the parent's loop, each
call blocking two socket timeouts (about 10 s) while ``redis-server`` was stopped,
then given up: meanwhile a TERM waited (no drain, no signal to the other
children), and the run was left to the reaper at its lease's expiry, its crash
never charged. Now the put-backs wait in a queue, sent once Redis answers a
short-bounded probe, and are sent again after a failure with the same lease token.

Default settings. No wall-clock bound: orders of events and counts."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
import redis

from redflow_mp import RunStatus, create_client
from tests.process import flows_putback
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

MODULES = ("tests.process.flows_putback",)
DRAINING = "draining: waiting up to"
#: What the parent logged when its put-back gave up (before: after each call's timeouts).
GAVE_UP = ("could not put back run", "could not look for a run claimed")
#: What it logs now when Redis does not answer a put-back (it keeps the run).
WAITS = ("waits for Redis", "not put back yet")


def _starts(hold: Path) -> list[tuple[str, int]]:
    try:
        lines = (hold / "starts").read_text().split()
    except OSError:
        return []
    return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines) - 1, 2)]


def _holder(hold: Path, run_id: str) -> int | None:
    pids = [pid for rid, pid in _starts(hold) if rid == run_id]
    return pids[-1] if pids else None


def _exit_logged(sup: Supervisor, pid: int) -> bool:
    return any(f"(pid {pid})" in line and "SIGKILL" in line for line in sup.log().splitlines())


def _put_back_lines(sup: Supervisor, run_id: str) -> list[str]:
    return [line for line in sup.log().splitlines() if f"run {run_id} put back" in line]


@contextlib.contextmanager
def _stopped(server: RedisServer):  # type: ignore[no-untyped-def]
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    state = {"stopped": True}

    def resume() -> None:
        if state["stopped"]:
            os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            state["stopped"] = False

    try:
        yield resume
    finally:
        with contextlib.suppress(ProcessLookupError):
            resume()


def test_a_term_is_answered_while_a_dead_childs_run_waits_for_a_stalled_redis(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "putback1"
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "gate-a").touch()
    (hold / "gate-b").touch()
    env = {"HOLD_DIR": str(hold)}
    client = create_client(server.url, prefix=prefix, default=False)
    raw = redis.Redis.from_url(server.url)
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=2, modules=MODULES, env=env)
    sup.start()
    second: Supervisor | None = None
    try:
        sup.wait_workers(2)
        a = flows_putback.held.run("a", client=client)
        b = flows_putback.held.run("b", client=client)
        wait_until(lambda: _holder(hold, a.id) and _holder(hold, b.id), 60, message="both run")
        victim = _holder(hold, a.id)
        assert victim is not None and victim != _holder(hold, b.id)
        with _stopped(server) as resume:
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: _exit_logged(sup, victim), 60, message=f"exit\n{sup.log()}")
            sup.send(signal.SIGTERM)
            wait_until(lambda: DRAINING in sup.log(), 120, message=f"drain\n{sup.log()}")
            # Answered while Redis is still stopped, not after the put-back gave up.
            before = sup.log().split(DRAINING)[0]
            assert not any(g in before for g in GAVE_UP), (
                f"the TERM waited for the dead child's put-back\n{sup.log()[-4000:]}"
            )
            resume()
            # the drain waits for b; meanwhile the dead child's run goes back, charged
            run = client.keys.run(a.id)
            wait_until(
                lambda: raw.hmget(run, "status", "crashCount") == [b"queued", b"1"],
                90,
                interval=0.02,
                message=f"a put back\n{raw.hgetall(run)}\n{sup.log()[-4000:]}",
            )
        (hold / "gate-b").unlink()
        assert sup.wait(90) == 0, sup.log()[-4000:]
        assert b.result(timeout=30) == "b"
        (hold / "gate-a").unlink()
        second = Supervisor(
            server.url, prefix, tmp_path / "sup2.log", procs=1, modules=MODULES, env=env
        ).start()
        assert a.result(timeout=90) == "a"
        state = client.get_run(a.id)
        assert state is not None and state.status is RunStatus.SUCCEEDED
        assert state.last_crash is not None and "SIGKILL" in state.last_crash, state
        assert raw.hget(client.keys.run(a.id), "crashCount") == b"1"
        starts = [rid for rid, _ in _starts(hold)]
        assert starts.count(a.id) == 2 and starts.count(b.id) == 1, starts
        assert len(_put_back_lines(sup, a.id)) == 1, sup.log()[-4000:]
        assert not any(g in sup.log() for g in GAVE_UP), sup.log()[-4000:]
    finally:
        client.close()
        raw.close()
        sup.stop()
        if second is not None:
            second.stop()


def test_a_put_back_that_redis_did_not_take_is_sent_again_once_it_answers(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "putback2"
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "gate-a").touch()
    env = {"HOLD_DIR": str(hold)}
    client = create_client(server.url, prefix=prefix, default=False)
    raw = redis.Redis.from_url(server.url)
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=2, modules=MODULES, env=env)
    sup.start()
    try:
        sup.wait_workers(2)
        a = flows_putback.held.run("a", client=client)
        wait_until(lambda: _holder(hold, a.id), 60, message="a runs")
        victim = _holder(hold, a.id)
        assert victim is not None
        with _stopped(server):
            os.kill(victim, signal.SIGKILL)
            # the parent tried, and Redis did not take it
            wait_until(
                lambda: any(w in sup.log() for w in (*WAITS, *GAVE_UP)),
                120,
                message=f"a put-back tried\n{sup.log()[-3000:]}",
            )
        (hold / "gate-a").unlink()
        assert a.result(timeout=120) == "a"
        state = client.get_run(a.id)
        assert state is not None and state.status is RunStatus.SUCCEEDED
        # put back by the supervisor (a crash charged once), not by the reaper
        assert raw.hget(client.keys.run(a.id), "crashCount") == b"1", (
            raw.hgetall(client.keys.run(a.id)),
            sup.log()[-4000:],
        )
        assert state.last_crash is not None and "SIGKILL" in state.last_crash, state
        assert [rid for rid, _ in _starts(hold)].count(a.id) == 2
        assert not any(g in sup.log() for g in GAVE_UP), (
            f"the put-back gave up\n{sup.log()[-4000:]}"
        )
        assert len(_put_back_lines(sup, a.id)) == 1, sup.log()[-4000:]
        sup.send(signal.SIGTERM)
        assert sup.wait(60) == 0, sup.log()[-4000:]
    finally:
        client.close()
        raw.close()
        sup.stop()
