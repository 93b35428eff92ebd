"""Durable waits under faults (issue 12): runs suspended in sleeps, event waits
and child waits survive SIGKILLs of their processes, of the whole supervisor and
of redis-server, and two supervisors racing to wake them; every one resumes once
its condition holds, exactly once (I9-I11 besides I1-I8)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.faults import ledger
from tests.faults.drivers import Producer, Sender, wait_for
from tests.faults.harness import Faults
from tests.faults.outages import ready_pair, redis_outage
from tests.faults.processes import WAIT_MODULES
from tests.helpers import command, text, texts

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

AOF = ("--appendonly", "yes", "--appendfsync", "always")
_KILLS = ("--max-run-crashes", "1000")


#: W4: seconds from enqueueing the first run to the instant every run waits for.
SETUP_LEAD_S = 40.0


def _suspended(raw: redis.Redis, fx: Faults) -> int:
    return int(raw.zcard(f"{{{fx.prefix}}}:runs:status:suspended"))


def _executions(fx: Faults) -> Counter[str]:
    """Handler executions per run, from the ledger."""
    return Counter(
        ev["run"] for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == "handler-start"
    )


def _kills(fx: Faults) -> Counter[str]:
    """Kills the workload fired on itself, by where."""
    return Counter(
        str(ev.get("where"))
        for ev in ledger.read_all(fx.ledger_dir)
        if ev["ev"] == "fault" and ev.get("where")
    )


def _timed_out(fx: Faults) -> set[str]:
    """Racers whose first wait (``ev``) ended by its deadline (ledger)."""
    return {
        ev["run"]
        for ev in ledger.read_all(fx.ledger_dir)
        if ev["ev"] == "wait-done" and ev["step"] == "ev" and ev.get("error") == "StepTimeoutError"
    }


def _split(ids: list[str], head: int, tail: int) -> tuple[list[str], list[str], list[str]]:
    return ids[:head], ids[head : len(ids) - tail], ids[len(ids) - tail :]


def _early(fx: Faults) -> list[dict[str, Any]]:
    return [ev for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == "wait-early"]


def test_supervisor_sigkill_with_1000_suspended_runs(fx: Faults) -> None:
    """1,000 runs suspended at once (300 sleeping, 300 awaiting an event, 200
    awaiting a child that itself awaits an event): SIGKILL the whole supervisor,
    restart it; each run resumes when its condition holds, once."""
    _supervisor_sigkill_with_suspended_runs(fx, 1000)


@pytest.mark.soak
@pytest.mark.timeout(3600)  # its own waits scale with the runs (n / 20 s each)
def test_soak_supervisor_sigkill_with_many_suspended_runs(fx: Faults) -> None:
    """The same with ``FAULTS_SOAK_SUSPENDED`` (default 10,000) suspended runs."""
    _supervisor_sigkill_with_suspended_runs(
        fx, int(os.environ.get("FAULTS_SOAK_SUSPENDED", "10000"))
    )


def _supervisor_sigkill_with_suspended_runs(fx: Faults, n: int) -> None:
    parents, listeners_n = n // 5, n * 3 // 10
    sleepers_n = n - 2 * parents - listeners_n
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
    sup.wait_workers(2)
    watcher = fx.watch_waits(server.url)
    items: list[tuple[str, Any, str | None]] = []
    items += [("fx-wparent", {"n": 1, "child": "listener"}, None) for _ in range(parents)]
    items += [("fx-listener", {"k": 1}, None) for _ in range(listeners_n)]
    t_setup = time.monotonic()
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60 + n / 20)
    others = n - sleepers_n
    wait_for(lambda: _suspended(raw, fx) == others, 60 + n / 20, f"{others} suspended runs", 0.1)
    setup = time.monotonic() - t_setup
    # sleepers last, waking 5-9 s (more for more runs) after they were enqueued:
    # after the restart. On a loaded machine (a load of 20 on 2 cores) enqueueing
    # and suspending them took longer than 5 s: sleepers woke before the last ones
    # suspended and the count never reached n (a timeout waiting for 1000
    # suspended runs, in 2 of 3 runs of the selection). So their first wake-up
    # also leaves twice the time the others took per run.
    t0 = time.time()
    first = max(5 + max(0, n - 1000) / 100, 2 * setup * sleepers_n / others + 1)
    sleepers = [("fx-sleeper", {"until": t0 + first + (i % 5)}, None) for i in range(sleepers_n)]
    sprod = fx.producer(server.url, 0, items=sleepers).start()
    sprod.wait(60 + n / 20)
    wait_for(
        lambda: _suspended(raw, fx) == n or time.time() - t0 >= first,
        60 + n / 20,
        f"{n} suspended runs",
        0.1,
    )
    t_suspended = time.time() - t0
    assert t_suspended < first, f"the sleepers woke before the kill (setup {setup:.1f} s)"
    assert raw.zcard(f"{{{fx.prefix}}}:leases") == 0  # no process holds any of them
    with watcher.paused():
        fx.kill_group(sup)
        assert _suspended(raw, fx) == n
        sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
        sup.wait_workers(2)
    t_up = time.monotonic()
    tag = f"{{{fx.prefix}}}"
    listeners = [
        rid
        for rid in texts(raw.zrange(f"{tag}:runs:status:suspended", 0, -1))
        if raw.hget(f"{tag}:run:{rid}", "workflow") == b"fx-listener"
    ]
    assert len(listeners) == parents + listeners_n
    snd = fx.sender(server.url)
    for rid in listeners:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60 + n / 50)
    assert snd.sent == len(listeners) and not snd.refused
    settled = fx.settle(raw, 90 + n / 20)
    recovery = time.monotonic() - t_up
    execs = _executions(fx)
    report = fx.finish_ok(
        raw,
        f"W2. SIGKILL supervisor, {n:,} suspended runs",
        recovery_s=recovery,
        note=f"restart -> all {n:,} finished (sleepers due {first:.0f}-{first + 4:.0f} s "
        f"after enqueue; all suspended {t_suspended:.1f} s after it)",
        settled=settled,
    )
    assert watcher.snapshots > 5
    twice = {rid: k for rid, k in execs.items() if k != 2}
    assert not twice, f"runs not executed exactly twice (suspend + one resume): {twice}"
    assert len(execs) == n
    assert report.events_sent == len(listeners) == report.events_consumed
    assert not _early(fx), _early(fx)[:5]
    raw.close()


def _next_start_after_kill(fx: Faults) -> list[float]:
    """Seconds from each self-kill to the killed run's next handler execution."""
    events = sorted(ledger.read_all(fx.ledger_dir), key=lambda ev: ev["mono"])
    out: list[float] = []
    pending: dict[str, int] = {}
    for ev in events:
        if ev["ev"] == "fault" and ev.get("where") and ev.get("run"):
            pending[ev["run"]] = ev["mono"]
        elif ev["ev"] == "handler-start" and ev["run"] in pending:
            out.append((ev["mono"] - pending.pop(ev["run"])) / 1e9)
    return sorted(out)


def _wait_mix(
    rng: random.Random, kill: str | None, scale: int
) -> list[tuple[str, Any, str | None]]:
    """Sleepers, two-event listeners, parents of one and of three children."""

    def plan(max_us: int) -> dict[str, Any]:
        return {} if kill is None else {"kill": kill, "delay_us": rng.randrange(max_us)}

    items: list[tuple[str, Any, str | None]] = []
    for _ in range(scale):
        if kill != "finish":
            items.append(("fx-sleeper", {"s": 0.3, **plan(6000)}, None))
            items.append(("fx-listener", {"k": 2, **plan(6000)}, None))
        items.append(("fx-wparent", {"n": 1, **plan(3000 if kill == "finish" else 8000)}, None))
    for _ in range(max(1, scale // 3)):
        items.append(("fx-wparent", {"n": 3, **plan(3000 if kill == "finish" else 8000)}, None))
    return items


def _send_as_enqueued(
    prod: Producer, items: list[tuple[str, Any, str | None]], snd: Sender
) -> None:
    """Queue each listener's events as soon as its run is enqueued (some arrive
    before it waits, some after it suspended); returns once all are sent."""
    sent = 0
    while prod.running or sent < len(prod.ids):
        seen = sent
        wait_for(
            lambda n=seen: len(prod.ids) > n or not prod.running,  # type: ignore[misc]
            60,
            "an enqueued run",
        )
        for (wf, value, _), rid in list(zip(items, prod.ids, strict=False))[sent:]:
            if wf == "fx-listener":
                for j in range(int(value["k"])):
                    snd.put(rid, "go", f"{rid}:{j}")
            sent += 1
    prod.wait(10)
    snd.drain(120)


def test_children_sigkilled_while_suspending_resuming_or_finishing(fx: Faults) -> None:
    """A child SIGKILLs itself at a random point after its run's first execution
    reached a wait (suspending), after a later execution began (resuming), or
    after an awaited child's last step (finishing and waking its parent)."""
    server = fx.redis()
    raw = server.client()
    ready_pair(fx, server.url, procs=2, modules=WAIT_MODULES, args=_KILLS)
    watcher = fx.watch_waits(server.url)
    rng = random.Random(12)
    items = _wait_mix(rng, None, 40)
    for kill in ("suspend", "resume", "finish"):
        items += _wait_mix(rng, kill, 12)
    rng.shuffle(items)
    prod = fx.producer(server.url, 0, items=items, rate=60).start()
    snd = fx.sender(server.url)
    _send_as_enqueued(prod, items, snd)
    settled = fx.settle(raw, 120)
    kills = _kills(fx)
    delays = _next_start_after_kill(fx)
    fx.finish_ok(
        raw,
        "W1. SIGKILL children suspending/resuming/finishing",
        recovery_s=delays[len(delays) // 2] if delays else None,
        note=f"kills {dict(kills)}; median kill -> killed run executed again",
        settled=settled,
    )
    assert kills["suspend"] >= 20 and kills["resume"] >= 15 and kills["finish"] >= 20, kills
    assert watcher.snapshots > 10
    raw.close()


class _Background:
    """Runs ``_send_as_enqueued`` in a thread (the test thread injects faults)."""

    def __init__(self, prod: Producer, items: list[tuple[str, Any, str | None]], snd: Sender):
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(prod, items, snd), daemon=True)
        self._thread.start()

    def _run(self, prod: Producer, items: list[tuple[str, Any, str | None]], snd: Sender) -> None:
        try:
            _send_as_enqueued(prod, items, snd)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "events were not all sent in time"
        assert self.error is None, repr(self.error)


def test_redis_killed_with_sleeping_and_event_waiting_runs(fx: Faults) -> None:
    """redis-server SIGKILLed (AOF, appendfsync always) and restarted on its data
    dir while runs sleep and wait for events, and events are being sent."""
    server = fx.redis(*AOF)
    raw = server.client()
    ready_pair(fx, server.url, procs=2, modules=WAIT_MODULES)
    watcher = fx.watch_waits(server.url)
    prog = fx.sample(server.url)
    rng = random.Random(4)
    items: list[tuple[str, Any, str | None]] = []
    for i in range(120):
        items.append(("fx-sleeper", {"s": rng.choice((0.5, 1.5, 3.0))}, None))
        # keyed: an enqueue whose reply the outage ate is retried by the producer,
        # and an unkeyed retry would leave a second listener nobody sends events to
        items.append(("fx-listener", {"k": 2}, f"w3-listener-{i}"))
    for _ in range(20):
        items.append(("fx-wparent", {"n": 2}, None))
    rng.shuffle(items)
    prod = fx.producer(server.url, 0, items=items, rate=60).start()
    snd = fx.sender(server.url, rate=40)  # a backlog that lasts through the outages
    sending = _Background(prod, items, snd)
    recoveries = []
    suspended_at_kill = []
    for down_for in (2.0, 0.5):
        wait_for(lambda r=raw: _suspended(r, fx) >= 25, 30, "runs suspended")  # type: ignore[misc]
        suspended_at_kill.append(_suspended(raw, fx))
        with watcher.paused():
            raw, recovery = redis_outage(fx, server, prog, raw, down_for)
        recoveries.append(recovery)
        fx.assert_no_crash()
    sending.join(180)
    settled = fx.settle(raw, 120)
    fx.assert_no_crash()
    report = fx.finish_ok(
        raw,
        "W3. redis-server SIGKILL + AOF restart, waits",
        recovery_s=max(recoveries),
        note=f"suspended at the kills {suspended_at_kill}; restart -> first run finished; "
        f"send retries {snd.retries}",
        settled=settled,
    )
    assert report.events_sent == 240 and report.events_consumed == 240
    assert watcher.snapshots > 5
    raw.close()


def test_two_supervisors_race_to_wake_the_same_runs(fx: Faults) -> None:
    """Both supervisors' promoters (every 10 ms) find the same due timers: 300
    runs sleep until one instant, 200 runs wait for an event with a deadline at
    that instant while the test sends the event then; each run is woken and
    resumed once, each event consumed once, by the wait or by the one after a
    timeout."""
    server = fx.redis()
    raw = server.client()
    # The default lease (a 1 s one let a starved child, at a load of 15-20 on 2
    # cores, lose its run to the other supervisor; a resume counted twice is not
    # what this case is about); promoters every 10 ms.
    fast = ("--promoter-interval-ms", "10")
    ready_pair(fx, server.url, procs=2, modules=WAIT_MODULES, args=fast)
    watcher = fx.watch_waits(server.url)
    # The instant must fall after all 500 runs suspended: enqueueing them (each
    # id fsynced to the ledger) and their first executions took 2-3 s on an idle
    # machine, 9-10 s at a load of 14 and 30 s at 19 (one producer after the
    # other), past the 8 s this lead used to be; then the last racers ran after
    # the instant and never suspended (a timeout waiting for 500 suspended
    # runs). The wait for the instant below is idle time, not a race.
    t_at = time.time() + SETUP_LEAD_S
    items: list[tuple[str, Any, str | None]] = [
        ("fx-sleeper", {"until": t_at}, None) for _ in range(300)
    ]
    racers = [("fx-racer", {"at": t_at}, None) for _ in range(200)]
    prod = fx.producer(server.url, 0, items=items).start()
    rprod = fx.producer(server.url, 0, items=racers).start()  # side by side: half the wall
    prod.wait(SETUP_LEAD_S)
    rprod.wait(SETUP_LEAD_S)
    wait_for(lambda: _suspended(raw, fx) == 500, SETUP_LEAD_S, "500 suspended runs", 0.1)
    assert time.time() < t_at - 0.5, "the runs suspended too late for the race"
    # 200 events: 30 acknowledged before the deadline (their waits end with the
    # event), 140 from just before it over about 2.5 s, racing the timer wake-ups
    # of both promoters, and 30 once their racers' waits timed out (left to the
    # racer's second wait). All 200 used to be sent from just before the deadline
    # at 60 a second, and each side was asserted to win 20: on a loaded machine the
    # wake-ups and replays lagged the sender (events won 186, deadlines 14).
    early, racing, late = _split(random.Random(5).sample(rprod.ids, len(rprod.ids)), 30, 30)
    snd = fx.sender(server.url, rate=60)
    for rid in early:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60)
    assert time.time() < t_at - 0.5, "the early events were sent too late"
    wait_for(lambda: time.time() >= t_at - 0.15, SETUP_LEAD_S, "the instant", 0.005)
    t_race = time.monotonic()
    for rid in racing:
        snd.put(rid, "go", f"{rid}:0")
    wait_for(lambda: _timed_out(fx) >= set(late), 60, "the late racers' deadlines", 0.1)
    for rid in late:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60)
    settled = fx.settle(raw, 60)
    recovery = time.monotonic() - t_race
    execs = _executions(fx)
    outcomes = Counter(
        text(raw.hget(f"{{{fx.prefix}}}:run:{rid}", "outputJson") or b"") for rid in rprod.ids
    )
    report = fx.finish_ok(
        raw,
        "W4. two supervisors race to wake the same runs",
        recovery_s=recovery,
        note=f"racers {dict(outcomes)}; the instant -> all finished",
        settled=settled,
    )
    assert watcher.snapshots > 5
    assert report.events_sent == 200 and report.events_consumed == 200
    assert all(execs[rid] == 2 for rid in prod.ids), "a sleeper was not resumed exactly once"
    assert all(execs[rid] in (2, 3) for rid in rprod.ids), "a racer resumed more than needed"
    assert outcomes['"event"'] >= 20 and outcomes['"timeout"'] >= 20, outcomes
    assert not _early(fx), _early(fx)[:5]
    raw.close()


def test_send_event_whose_reply_is_lost_is_stored_once(fx: Faults) -> None:
    """Redis stalls (DEBUG SLEEP) past the client's 5 s socket timeout while a
    send_event is in flight: the reply is lost, the command still runs when the
    server wakes. The event must be stored once, not once more by a resend (a
    listener of two events would consume it twice)."""
    from redflow_mp import create_client

    server = fx.redis()
    raw = server.client()
    # no supervisor yet: the listener stays queued, its events stay in its list
    prod = fx.producer(server.url, 0, items=[("fx-listener", {"k": 2}, None)]).start()
    prod.wait(30)
    (rid,) = prod.ids
    client = create_client(server.url, prefix=fx.prefix, default=False)
    book = ledger.Ledger(fx.ledger_dir)
    # the script connection is up before the stall (an event nobody waits for)
    assert client.send_event(rid, "warm", {"eid": "warm"}) is True
    book.append("event-sent", run=rid, event="warm", eid="warm", acked=True)
    stall = 6.5  # past the 5 s socket timeout: the first attempt's reply is lost
    sleeper = redis.Redis.from_url(server.url, socket_timeout=30)
    staller = threading.Thread(target=lambda: command(sleeper, "DEBUG", "SLEEP", stall))
    fx.fault("debug-sleep", seconds=stall)
    staller.start()
    time.sleep(0.2)  # let DEBUG SLEEP reach the server first (pacing, not synchronisation)
    t0 = time.monotonic()
    try:
        acked: bool | None = client.send_event(rid, "go", {"eid": "once"})
        outcome = f"answered {acked}"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        acked = None  # unknown to the caller; it is stored when the server wakes
        outcome = f"raised {type(exc).__name__}"
    took = time.monotonic() - t0
    staller.join(10)
    sleeper.close()
    book.append("event-sent", run=rid, event="go", eid="once", acked=bool(acked))
    stored = texts(raw.lrange(f"{{{fx.prefix}}}:run:{rid}:ev:2:go", 0, -1))
    assert client.send_event(rid, "go", {"eid": "two"}) is True
    book.append("event-sent", run=rid, event="go", eid="two", acked=True)
    book.close()
    client.close()
    sup = fx.supervisor(server.url, procs=1, modules=WAIT_MODULES)
    sup.wait_workers(1)
    settled = fx.settle(raw, 30)
    fx.finish_ok(
        raw,
        "W5. send_event reply lost (DEBUG SLEEP 6.5 s)",
        recovery_s=took,
        note=f"send_event {outcome} after {took:.1f} s; stored {stored}",
        settled=settled,
    )
    assert stored == ['{"eid":"once"}'], f"the event was stored {len(stored)} times: {stored}"
    raw.close()


def test_redis_stall_past_the_socket_timeout_while_runs_suspend_and_wake(fx: Faults) -> None:
    """DEBUG SLEEP 6 s (past the 5 s socket timeout and the 5 s lease) while 250
    runs are suspending, consuming their first event and waking: a wait script
    in flight loses its reply and is resent (suspend_run, consume_event and
    wake_timers are resend-safe), the leases of the runs in flight expire and
    their executions are fenced; nothing is lost or done twice."""
    server = fx.redis()
    raw = server.client()
    ready_pair(fx, server.url, procs=2, modules=WAIT_MODULES)
    watcher = fx.watch_waits(server.url)
    rng = random.Random(6)
    items: list[tuple[str, Any, str | None]] = []
    for _ in range(150):
        items.append(("fx-sleeper", {"s": rng.choice((0.3, 0.6, 1.0))}, None))
    for _ in range(100):
        items.append(("fx-listener", {"k": 2}, None))
    rng.shuffle(items)
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60)
    listeners = [
        rid for (wf, _, _), rid in zip(items, prod.ids, strict=True) if wf == "fx-listener"
    ]
    snd = fx.sender(server.url)
    for rid in listeners:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60)  # no send is in flight during the stall (see Sender._stored)
    wait_for(lambda: _suspended(raw, fx) >= 20, 30, "runs suspended")
    stall = 6.0
    sleeper = redis.Redis.from_url(server.url, socket_timeout=30)
    with watcher.paused():
        fx.fault("debug-sleep", seconds=stall)
        command(sleeper, "DEBUG", "SLEEP", stall)
        t_end = time.monotonic()
    sleeper.close()
    for rid in listeners:
        snd.put(rid, "go", f"{rid}:1")
    snd.drain(60)
    settled = fx.settle(raw, 90)
    recovery = time.monotonic() - t_end
    fx.assert_no_crash()
    report = fx.finish_ok(
        raw,
        "W6. Redis stalled 6 s while runs suspend/wake",
        recovery_s=recovery,
        note="stall end -> all 250 finished",
        settled=settled,
    )
    assert report.events_sent == 200 and report.events_consumed == 200
    raw.close()
