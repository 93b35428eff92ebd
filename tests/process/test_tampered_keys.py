"""Keys of the prefix overwritten with the wrong type (an operator's mistake, or
another program writing into our prefix) under a supervisor with default
settings: a clear error naming the key, never a crash loop of the children,
never a stalled queue for the runs of the other queues."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RedflowError, RunStatus
from tests.process import flows
from tests.process.conftest import Supervisor, run_supervisor_once, wait_until

pytestmark = pytest.mark.process


def _no_crash(sup: Supervisor) -> None:
    log = sup.log()
    bad = [line for line in log.splitlines() if " crashed" in line or ") died: " in line]
    assert not bad, f"children crashed: {bad[:3]}\n{log[-3000:]}"


@pytest.mark.parametrize("kind", ["ready", "bell"])
def test_a_queue_key_of_the_wrong_type_stalls_no_other_queue_and_crashes_no_child(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, kind: str
) -> None:
    """The ready set (or the bell list) of queue ``lim`` is a string. Every child
    used to crash on it in a loop (a claim reads the heads of all its queues in
    one script; an idle child waits on all the bells in one BLPOP), so queue ``p``
    stalled too (ready) or children kept dying (bell), and an enqueue onto ``lim``
    with a broken bell raised after it had written the run."""
    bad = f"{client.keys.tag}:q:lim:{kind}"
    raw.set(bad, "not a redflow key")
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    handles = [flows.pid.run(None, client=client) for _ in range(10)]
    for h in handles:
        h.result(timeout=30)
    wait_until(lambda: bad in sup.log(), 20, message="an error naming the key")
    if kind == "ready":
        with pytest.raises(RedflowError, match="wrong type"):
            flows.limited.run(None, client=client)
    else:
        # the run is written once and served (claimed from its ready set)
        flows.limited.run(None, client=client).result(timeout=30)
        assert raw.llen(f"{client.keys.tag}:spans") == 1
    time.sleep(3)  # idle children block on their bells, claim passes go on
    assert [h.result(timeout=30) for h in [flows.pid.run(None, client=client)]]
    _no_crash(sup)
    # The operator removes the key: the queue is served again.
    raw.delete(bad)
    flows.limited.run(None, client=client).result(timeout=40)
    _no_crash(sup)
    assert sup.log().count(bad) <= 8, sup.log()[-3000:]  # reported, not flooded


@pytest.mark.parametrize("value", ["banana", "-3", "0", "\u00b2", "2000"])
def test_a_shard_count_that_is_no_count_is_refused_clearly(
    redis_url: str, prefix: str, raw: redis.Redis, value: str
) -> None:
    """``meta``'s ``shards`` field overwritten with garbage: the supervisor used to
    end in a ValueError traceback (``invalid literal for int()``), or advise
    ``use shards = -3``. It now names the field and its value, and stops. Before
    (``"\u00b2"``, a digit to ``str.isdigit`` that ``int`` refuses): ``ValueError:
    invalid literal for int() with base 10: '\u00b2'``, a traceback; (``2000``, past the
    1,024 shards a client takes): ``bad Redis URL ...: shards must be from 1 to
    1024, not 2000`` (``redflow``) or ``use shards = 2000`` (a client)."""
    raw.hset("{" + prefix + "}:meta", "shards", value)
    proc = run_supervisor_once(
        "--app", "x", "--procs", "1", "--module", "tests.process.flows",
        "--url", redis_url, "--prefix", prefix,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert f"shards = {value}" not in out, out
    assert "not a shard count" in out and repr(value) in out, out


def test_a_bell_padded_far_past_its_cap_does_not_keep_children_spinning(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """200,000 tokens pushed onto a queue's bell (capped at 64 by our own rings):
    each one woke an idle child for a claim that found nothing, so two idle
    children spun through them for half a minute (140,702 left after 10 s, 5.6 s
    of their CPU). A child woken for nothing now trims the bell to its cap."""
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    bell = f"{client.keys.tag}:q:p:bell"
    for _ in range(20):
        raw.rpush(bell, *(["1"] * 10_000))
    wait_until(lambda: raw.llen(bell) <= 64, 5, message="the bell trimmed to its cap")
    assert flows.pid.run(None, client=client).result(timeout=30)
    _no_crash(sup)


def test_a_shared_key_of_the_wrong_type_is_named_and_crashes_no_child(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``leases`` (every claim writes it) overwritten with a string: no run can
    start, and the children used to crash in a loop on it (21 crashes, then the
    supervisor gave up) without naming it. They now name it and wait."""
    bad = client.keys.leases
    raw.set(bad, "not a redflow key")
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    handle = flows.pid.run(None, client=client)
    wait_until(lambda: bad in sup.log(), 20, message="an error naming the key")
    time.sleep(2)
    _no_crash(sup)
    raw.delete(bad)
    assert handle.result(timeout=30)
    _no_crash(sup)


def test_a_concurrency_gate_of_the_wrong_type_strands_no_run_and_stalls_no_queue(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``wf-running:limited`` overwritten with a string: each claim that reached a
    run of ``limited`` popped it from its ready set and failed on the gate
    (nothing rolled back), leaving it queued in no set, never to run. It now goes
    back to its ready set a minute later, the gate is named, the other runs pass."""
    bad = client.keys.wf_running("limited")
    raw.set(bad, "not a redflow key")
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    stuck = flows.limited.run(None, client=client)
    wait_until(lambda: bad in sup.log(), 20, message="an error naming the key")
    assert raw.zscore(client.keys.q_ready("lim"), stuck.id) is not None  # not stranded
    for h in [flows.pid.run(None, client=client) for _ in range(5)]:
        h.result(timeout=30)
    _no_crash(sup)
    raw.delete(bad)
    # due again within a minute of its last try (the ready set is claimed by score)
    raw.zadd(client.keys.q_ready("lim"), {stuck.id: 0})
    stuck.result(timeout=30)
    _no_crash(sup)


def test_listing_indexes_of_the_wrong_type_stop_no_run_and_are_named(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``runs:status:succeeded`` and ``queues`` overwritten with strings (another
    program writing into the prefix): every finish failed half-way on the status
    index (the run marked succeeded, its slot and lease kept) and the worker
    resent it for ever, so no run completed, and the reaper duty failed at every
    tick on ``queues`` before it reaped anything. Runs now complete (the
    listing is skipped) and the supervisor's key check names such keys (at
    start, then every minute)."""
    index = client.keys.runs_status("succeeded")
    raw.set(index, "not a redflow key")
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    raw.delete(client.keys.queues)  # after the start (one of another type refuses it)
    raw.set(client.keys.queues, "not a redflow key")
    handles = [flows.pid.run(None, client=client) for _ in range(5)]
    for h in handles:
        assert h.result(timeout=30)
    wait_until(lambda: f"key {index} holds a string" in sup.log(), 20, message="the index named")
    time.sleep(2)  # four reaper ticks
    assert "reaper duty failed" not in sup.log(), sup.log()[-2000:]
    _no_crash(sup)


def test_a_stopping_child_leaves_a_run_whose_suspend_is_refused(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``timers`` a string: the child's suspend is refused and it resends it every
    5 s. A graceful stop (TERM) went on waiting in that loop, so the supervisor
    waited out ``graceful_timeout`` (30 s) and SIGKILLed the child. The stopping
    child now leaves the run at once (nothing of it was written); the supervisor
    puts it back and exits; once the key is removed the run waits and completes."""
    sup = supervisor(procs=1)
    sup.wait_workers(1)
    h = flows.spoiled_wait.run(None, client=client)
    wait_until(lambda: "could not suspend" in sup.log(), 20, message="the refused suspend")
    sup.send(signal.SIGTERM)
    assert sup.proc is not None
    wait_until(
        lambda: sup.proc is not None and sup.proc.poll() is not None,
        10,
        0.05,
        message="the supervisor to exit after TERM (graceful_timeout is 30 s)",
    )
    assert sup.proc.returncode == 0, sup.log()[-3000:]
    assert "graceful timeout reached" not in sup.log()
    state = client.get_run(h.id)
    assert state is not None and state.status is RunStatus.QUEUED, state
    assert raw.zscore(client.keys.leases, h.id) is None
    raw.delete(client.keys.timers)
    again = supervisor(procs=1)
    again.wait_workers(1)
    wait_until(lambda: raw.zscore(client.keys.timers, h.id), 20, message="the run to suspend")
    h.send_event("go", 7)
    assert h.result(timeout=30) == 7
