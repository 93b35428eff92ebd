"""A dead child's put-backs with ``shards > 1`` while a shard's server stalls
(``supervisor/aftermath.py``): each shard has its own probe and its own hold.

Before, with ``shards > 1`` each put-back was sent at once to its run's shard,
synchronously in the parent's loop: with that shard's ``redis-server`` stopped
(SIGSTOP) the call blocked two socket timeouts (about 10 s), then gave up (the
run left to the reaper at its lease's expiry, its crash never charged), and a
TERM waited for it. Now a shard that does not answer its probe holds its own
put-backs (sent again once it answers, same lease token: charged once), while
a healthy shard's are sent at once (a run that kills its worker there is
charged toward ``max_run_crashes`` whatever another shard does).

Default settings. No wall-clock bound: orders of events and counts."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.crc import key_slot

from redflow_mp import Client, create_client
from redflow_mp.shards import shard_tags
from tests.process import flows_putback, flows_putback_shards
from tests.process.conftest import Supervisor, wait_until
from tests.process.test_putback_stall import (
    DRAINING,
    GAVE_UP,
    _exit_logged,
    _holder,
    _put_back_lines,
    _stopped,
)
from tests.redis_server import RedisServer
from tests.servers import Cluster

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def _fields(client: Client, run_id: str) -> list[object]:
    shard = client.shard_of_run(run_id)
    return list(shard.redis.hmget(shard.keys.run(run_id), ["status", "crashCount"]))


def _no_gave_up_before_drain(sup: Supervisor) -> None:
    before = sup.log().split(DRAINING)[0]
    assert not any(g in before for g in GAVE_UP), (
        f"the TERM waited for a put-back to a stalled shard\n{sup.log()[-4000:]}"
    )


def test_two_shards_on_a_stalled_server_hold_a_dead_childs_put_back(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "pbshard1"
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "gate-a").touch()
    (hold / "gate-b").touch()
    env = {"HOLD_DIR": str(hold)}
    client = create_client(server.url, prefix=prefix, default=False, shards=2)
    sup = Supervisor(
        server.url,
        prefix,
        tmp_path / "sup.log",
        procs=2,
        modules=("tests.process.flows_putback",),
        env=env,
        args=["--shards", "2"],
    ).start()
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
            _no_gave_up_before_drain(sup)
            resume()
            wait_until(
                lambda: _fields(client, a.id) == [b"queued", b"1"],
                90,
                interval=0.02,
                message=f"a put back\n{_fields(client, a.id)}\n{sup.log()[-4000:]}",
            )
        (hold / "gate-b").unlink()
        assert sup.wait(90) == 0, sup.log()[-4000:]
        assert b.result(timeout=30) == "b"
        state = client.get_run(a.id)
        assert state is not None and state.last_crash is not None
        assert "SIGKILL" in state.last_crash, state
        assert len(_put_back_lines(sup, a.id)) == 1, sup.log()[-4000:]
        assert not any(g in sup.log() for g in GAVE_UP), sup.log()[-4000:]
    finally:
        client.close()
        sup.stop()


def test_a_stalled_shard_holds_its_own_put_backs_and_not_a_healthy_shards(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    # Three shards on three masters; shard 2's master is stopped while a child
    # holding one of its runs and a child holding a run of shard 1 are killed.
    # Shard 2's master is not the node of the URL (a seed stalled too would hold
    # up the start of the dead children's replacements: another matter).
    cluster = cluster_factory(full_coverage=False)
    prefix = next(
        p
        for p in (f"pbshard2-{os.getpid()}-{i}" for i in range(100))
        if cluster.node_for_slot(key_slot(shard_tags(p, 3)[2].encode())).port
        != cluster.nodes[0].port
    )
    hold = tmp_path / "hold"
    hold.mkdir()
    for gate in ("s", "h", "c"):
        (hold / f"gate-{gate}").touch()
    env = {"HOLD_DIR": str(hold)}
    client = create_client(cluster.url, prefix=prefix, default=False, shards=3)
    flows = flows_putback_shards.FLOWS
    name = {k: next(n for n in flows if client.shard_of_workflow(n).index == k) for k in (1, 2)}
    masters = [
        cluster.node_for_slot(key_slot(f"{s.keys.tag}:x".encode())).port for s in client.shards
    ]
    assert len(set(masters)) == 3, masters
    (stalled,) = [n for n in cluster.masters if n.port == masters[2]]
    sup = Supervisor(
        cluster.url,
        prefix,
        tmp_path / "sup.log",
        procs=3,
        modules=("tests.process.flows_putback_shards",),
        env=env,
        args=["--shards", "3"],
    ).start()
    try:
        sup.wait_workers(3)
        s = flows[name[2]].run("s", client=client)
        h = flows[name[1]].run("h", client=client)
        c = flows[name[1]].run("c", client=client)  # keeps the drain waiting
        wait_until(lambda: all(_holder(hold, r.id) for r in (s, h, c)), 60, message="all three run")
        victims = [_holder(hold, s.id), _holder(hold, h.id)]
        assert None not in victims and len({*victims, _holder(hold, c.id)}) == 3
        with _stopped(stalled) as resume:
            for victim in victims:
                assert victim is not None
                os.kill(victim, signal.SIGKILL)
            for victim in victims:
                assert victim is not None
                wait_until(
                    lambda v=victim: _exit_logged(sup, v),  # type: ignore[misc]
                    60,
                    message=f"exit\n{sup.log()}",
                )
            # the healthy shard's run is charged while shard 2 still stalls
            wait_until(
                lambda: _fields(client, h.id)[1] == b"1",
                90,
                interval=0.02,
                message=f"h charged\n{_fields(client, h.id)}\n{sup.log()[-4000:]}",
            )
            sup.send(signal.SIGTERM)
            wait_until(lambda: DRAINING in sup.log(), 120, message=f"drain\n{sup.log()}")
            _no_gave_up_before_drain(sup)
            resume()
            # the stalled shard's put-back, held, is sent once it answers: charged once
            wait_until(
                lambda: _fields(client, s.id) == [b"queued", b"1"],
                90,
                interval=0.02,
                message=f"s put back\n{_fields(client, s.id)}\n{sup.log()[-4000:]}",
            )
        for gate in ("h", "c"):
            (hold / f"gate-{gate}").unlink()
        assert sup.wait(120) == 0, sup.log()[-4000:]
        assert c.result(timeout=30) == "c"
        assert _fields(client, h.id)[1] == b"1"
        assert _fields(client, s.id) == [b"queued", b"1"]
        for run_id in (s.id, h.id):
            state = client.get_run(run_id)
            assert state is not None and state.last_crash is not None
            assert "SIGKILL" in state.last_crash, state
            assert len(_put_back_lines(sup, run_id)) == 1, sup.log()[-4000:]
        assert not any(g in sup.log() for g in GAVE_UP), sup.log()[-4000:]
    finally:
        client.close()
        sup.stop()
