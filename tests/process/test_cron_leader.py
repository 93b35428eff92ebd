"""The cron leader lock against an unlucky operator and a hostile neighbour on
the same Redis, with the default settings (``cron_lock_ttl_ms`` 10 s)."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.helpers import text
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


@pytest.mark.parametrize("kind", ["no-expiry", "hash"])
def test_a_lock_no_leader_can_hold_is_named_and_cron_resumes_once_it_is_gone(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, kind: str
) -> None:
    """A ``lock:cron`` written by someone else (a string without expiry, or a key
    of another type: no leader ever sets one) kept every supervisor from leading
    and no cron fired, for good, with nothing in any log. Now a supervisor that
    cannot lead names the key in an ERROR line; once it is removed, the lock is
    taken and crons fire."""
    key = client.keys.lock_cron
    if kind == "hash":
        raw.hset(key, "owner", "someone else")
    else:
        raw.set(key, "a token no leader has")
    sup = supervisor(procs=1, modules=["tests.process.flows_cron"])
    sup.wait_workers(1)
    wait_until(
        lambda: key in sup.log() and "ERROR" in sup.log(),
        15,
        message=f"an ERROR naming {key} in the log:\n{sup.log()}",
    )
    assert client.list_runs(workflow="tick", limit=1) == []
    raw.delete(key)
    wait_until(lambda: client.list_runs(workflow="tick", limit=1), 20, message="a cron fire")
    assert "became cron leader" in sup.log()


def test_a_supervisor_starts_beside_a_cron_schedule_of_the_wrong_type(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``cron:next`` of another type (a neighbour's key): the start's registry
    sync raised WRONGTYPE and the supervisor exited with a traceback (every
    supervisor of the prefix whose code has a cron). Now it starts, names the
    key, and its workers run (once the key is removed, the registry duty's check
    writes the cron entries again within a minute: test_registry_loss.py)."""
    key = client.keys.cron_next
    raw.set(key, "a neighbour's value")
    sup = supervisor(procs=1, modules=["tests.process.flows_cron", "tests.process.flows"])
    sup.wait_workers(1)
    assert client.get_workflow_meta("tick") is not None
    assert f"cron key {key} holds a string" in sup.log()
    assert isinstance(client.run_by_name("pid", None).result(timeout=20), int)


def _fires(raw: redis.Redis, client: Client) -> list[int]:
    """The fire times (ms) of the runs of ``tick``, from their idempotency keys."""
    ids = raw.zrange(client.keys.workflow_runs("tick"), 0, -1)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(client.keys.run(text(run_id)), "idempotencyKey")
        keys = pipe.execute()
    return sorted(int(text(k).rsplit(":", 1)[1]) for k in keys if k)


def test_a_leader_paused_past_its_lock_fires_nothing_once_resumed(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The cron leader SIGSTOPped past its lock (default ``cron_lock_ttl_ms``, 10
    s), another supervisor takes over, then SIGCONT: the old leader learns it
    lost the lead and is fenced out; no fire time of an every-second cron fires
    twice, and no more is missed than the take-over's (the lock's TTL plus one
    renewal period at most)."""
    sups = [supervisor(procs=1, modules=["tests.process.flows_cron"]) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(1)
    leader = wait_until(
        lambda: [s for s in sups if "became cron leader" in s.log()], 20, message="a leader"
    )[0]
    other = next(s for s in sups if s is not leader)
    wait_until(lambda: len(_fires(raw, client)) >= 3, 20, message="fires")
    leader.send(signal.SIGSTOP)
    try:
        wait_until(lambda: "became cron leader" in other.log(), 25, message="the take-over")
        taken = len(_fires(raw, client))
        wait_until(lambda: len(_fires(raw, client)) >= taken + 2, 10, message="new fires")
    finally:
        leader.send(signal.SIGCONT)
    wait_until(lambda: "cron leadership lost" in leader.log(), 10, message="the old leader told")
    resumed = len(_fires(raw, client))
    wait_until(lambda: len(_fires(raw, client)) >= resumed + 3, 10, message="fires after")
    fires = _fires(raw, client)
    assert len(fires) == len(set(fires)), "a fire time fired twice"
    assert all(f % 1000 == 0 for f in fires), "a fire off the schedule"
    # (a fire time may also pass while the previous run waits for a child)
    assert max(b - a for a, b in itertools.pairwise(fires)) <= 10_000 + 3_334 + 1_000
