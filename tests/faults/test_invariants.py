"""The invariant checker catches what it must: a keyspace (v2) with one of each
structural violation, built by hand, is reported; a clean one is not. Runs in
the plain test run (no fault is injected, no supervisor started)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait, encode_wait
from redflow_mp.ids import new_token
from tests.faults.invariants import (
    Report,
    _check_concurrency,
    _check_exclusive,
    _check_steps,
    check,
    check_waits,
)
from tests.faults.ledger import Ledger
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(30)


@pytest.fixture()
def enq(client: Client) -> Callable[..., str]:
    return Enq(client)


def _finish(client: Client, enq: Callable[..., str], **kw: object) -> str:
    rid = enq(**kw)
    tok = new_token()
    _, got = client.scripts.claim(("q",), 30_000, tok)
    assert got is not None and got.id == rid
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") == "succeeded"
    return rid


def test_a_clean_keyspace_passes(
    raw: redis.Redis, client: Client, prefix: str, tmp_path: Path, enq: Callable[..., str]
) -> None:
    _finish(client, enq, key="k1")
    _finish(client, enq, workflow="other")
    report = check(raw, prefix, tmp_path)
    assert report.ok, report.summary()


def test_each_keyspace_violation_is_reported(
    raw: redis.Redis, client: Client, prefix: str, tmp_path: Path, enq: Callable[..., str]
) -> None:
    k = client.keys
    done = _finish(client, enq, key="k1")
    raw.persist(k.idempotency("wf", "k1"))  # a finished run's key that never expires
    raw.zadd(k.leases, {done: client.server_time_ms() + 60_000})  # a lease of a finished run
    running = enq(workflow="r")
    client.scripts.claim(("q",), 30_000, new_token())
    raw.zadd(k.leases, {running: 1})  # expired and not reaped
    twice = enq(workflow="t")
    raw.zadd(k.wf_waiting("t"), {twice: 1})  # queued in two places
    later = enq(workflow="s", run_at_ms=client.server_time_ms() + 60_000)
    raw.zrem(k.due_queues, "q")  # the promoter would never look
    text = "\n".join(check(raw, prefix, tmp_path).violations)
    assert f"idempotency key 'k1' of finished run {done} never expires" in text
    assert f"leases holds {done}, which is succeeded" in text
    assert f"running run {running} has an expired lease" in text
    assert f"queued run {twice} is in 2 ready/scheduled/waiting sets" in text
    assert "queue q has scheduled runs" in text and later


def _suspend(client: Client, enq: Callable[..., str], queue: str, wait: RunWait) -> str:
    rid = enq(workflow=f"w-{queue}", queue=queue)
    tok = new_token()
    _, got = client.scripts.claim((queue,), 30_000, tok)
    assert got is not None and got.id == rid
    assert client.scripts.suspend(rid, tok, wait) == "suspended"
    return rid


def test_a_correct_suspension_passes_and_each_wait_violation_is_reported(
    raw: redis.Redis, client: Client, prefix: str, tmp_path: Path, enq: Callable[..., str]
) -> None:
    k = client.keys
    now = client.server_time_ms()
    child = enq(workflow="c", queue="cq")
    kinds = ["children"]
    waiting = _suspend(client, enq, "a", RunWait(steps=["s"], kinds=kinds, children=[child]))
    sleeping = _suspend(
        client, enq, "b", RunWait(steps=["s"], kinds=["sleep"], wake_at=now + 60_000)
    )
    listening = _suspend(client, enq, "c", RunWait(steps=["s"], kinds=["event"], events=["go"]))
    assert check_waits(raw, prefix) == []  # every wake-up registered, none due
    clean = check(raw, prefix, tmp_path)
    assert not [v for v in clean.violations if not v.startswith("I1")], clean.summary()

    # a lost wake-up of each kind, and a suspended run that lost its slot and kept a lease
    raw.hset(k.run(child), mapping={"status": "succeeded", "finishedAt": now - 10_000})
    raw.zadd(k.timers, {sleeping: now - 10_000})
    raw.rpush(k.run_events(listening, "go"), b'{"eid":"e1"}')
    late = _suspend(client, enq, "d", RunWait(steps=["s"], kinds=["sleep"], wake_at=now + 60_000))
    raw.zrem(k.timers, late)
    raw.srem(k.wf_running("w-d"), late)
    raw.zadd(k.leases, {late: now + 60_000})
    overslept = _suspend(
        client, enq, "e", RunWait(steps=["s"], kinds=["sleep"], wake_at=now + 60_000)
    )
    past = RunWait(steps=["s"], kinds=["sleep"], wake_at=now - 10_000)
    raw.hset(k.run(overslept), "wait", encode_wait(past))
    raw.zadd(k.timers, {overslept: now - 10_000})  # due, but no promoter woke it
    other = enq(workflow="c", queue="cq")
    unlinked = _suspend(
        client, enq, "f", RunWait(steps=["s"], kinds=["children"], children=[other])
    )
    raw.srem(k.run_waiters(other), unlinked)  # the child's finish would not wake it
    kids = [enq(workflow="c", queue="cq") for _ in range(2)]
    fanout = _suspend(client, enq, "h", RunWait(steps=["s"], kinds=["children"], children=kids))
    raw.hset(k.run(kids[0]), mapping={"status": "failed", "finishedAt": now - 10_000})
    live = "\n".join(check_waits(raw, prefix, 2000))
    assert f"suspended run {overslept}: its wake-up time passed" in live
    assert f"suspended run {fanout}: awaited child {kids[0]} ended failed" in live
    assert f"suspended run {unlinked} waits for child {other}, but the child's finish" in live
    assert f"suspended run {waiting}: all 1 awaited children finished" in live
    assert f"suspended run {sleeping} wakes at {now + 60_000} but its timers entry" in live
    assert f"suspended run {listening} waits for event 'go', which has 1 pending" in live
    assert f"suspended run {late} wakes at {now + 60_000} but its timers entry is None" in live
    leaked = enq(workflow="w-g", queue="g")
    raw.sadd(k.wf_running("w-g"), leaked)  # a slot held by a run that was never woken
    text = "\n".join(check(raw, prefix, tmp_path).violations)
    assert f"I2: wf-running:w-g holds {leaked}, which is queued (never woken)" in text
    assert f"I9: suspended run {waiting}: all 1 awaited children" in text
    assert f"I2: suspended run {late} lost its slot in wf-running" in text
    assert f"I2: leases holds {late}, which is suspended" in text


def test_event_and_wait_step_violations_are_reported(
    raw: redis.Redis, client: Client, prefix: str, tmp_path: Path, enq: Callable[..., str]
) -> None:
    k = client.keys
    a = _finish(client, enq)
    b = _finish(client, enq)
    book = Ledger(tmp_path)

    def record(run: str, step: str, eid: str, seq: int) -> None:
        out = json.dumps({"eid": eid})
        rec = {"status": "succeeded", "seq": seq, "finishedAt": 5, "outputJson": out}
        raw.hset(k.run_steps(run), step, json.dumps(rec))

    for eid in ("sent-ok", "twice", "lost", "pending"):
        book.append("event-sent", run=a, event="go", eid=eid, acked=True)
    record(a, "ev0", "sent-ok", 1)
    record(a, "ev1", "twice", 2)
    record(b, "ev0", "twice", 1)  # one event, two consumers
    record(b, "ev1", "never-sent", 2)
    raw.rpush(k.run_events(a, "go"), b'{"eid":"pending"}')
    # a wait step seen completing twice, and one whose completion Redis no longer holds
    book.append("wait-done", run=a, step="ev0", kind="event", ok=True, fp="succeeded:1:5",
                eid="sent-ok")  # fmt: skip
    book.append("wait-done", run=a, step="ev1", kind="event", ok=True, fp="succeeded:2:5")
    book.append("wait-done", run=a, step="ev1", kind="event", ok=True, fp="succeeded:9:7")
    book.append("wait-done", run=b, step="ev1", kind="event", ok=True, fp="succeeded:1:1")
    book.close()
    report = check(raw, prefix, tmp_path)
    text = "\n".join(report.violations)
    assert "I10: event twice was consumed 2 times" in text
    assert "I10: event lost ('go' to run " in text and ": lost" in text
    assert "I10: event never-sent consumed by " in text
    assert "event sent-ok" not in text and "event pending" not in text
    assert f"I11: wait step 'ev1' of run {a} completed more than once" in text
    assert f"I11: wait step 'ev1' of run {b} returned completion succeeded:1:1" in text
    assert f"wait step 'ev0' of run {a}" not in text
    assert report.lost_events == ["lost"] and report.events_pending == 1


def test_an_execution_logged_just_after_its_supervisor_was_stopped_is_cut_off() -> None:
    """I8 and the stop's span: the harness records a stop just before SIGSTOP lands,
    so a stopped child may log a handler start after the stop's time; another
    supervisor running the run before the cont is a takeover, not a double run.
    Without a stop in between, the same overlap is a violation."""

    def events(with_stop: bool) -> list[dict[str, object]]:
        evs: list[dict[str, object]] = [
            {"ev": "handler-start", "pid": 11, "ppid": 10, "run": "r", "wf": "w", "mono": 102},
            {"ev": "handler-start", "pid": 21, "ppid": 20, "run": "r", "wf": "w", "mono": 200},
            {"ev": "handler-end", "pid": 21, "run": "r", "mono": 210, "outcome": "ok"},
            {"ev": "handler-end", "pid": 11, "run": "r", "mono": 305, "outcome": "lost"},
        ]
        if with_stop:
            evs += [
                {"ev": "fault", "kind": "stop", "pids": [10, 11], "mono": 100},
                {"ev": "fault", "kind": "cont", "pids": [10, 11], "mono": 300},
            ]
        return sorted(evs, key=lambda ev: int(str(ev["mono"])))

    stopped = Report()
    _check_exclusive(stopped, events(with_stop=True))
    assert stopped.violations == []
    plain = Report()
    _check_exclusive(plain, events(with_stop=False))
    assert [v.split(":")[0] for v in plain.violations] == ["I8"]


def test_a_write_acknowledged_after_a_stop_held_its_lease_until_the_stop() -> None:
    """I4 and SIGSTOP: a stopped child reads the reply to a write it sent before
    the stop only after SIGCONT; the write was applied before the stop, so its
    run's slot was free for another run once the lease lapsed. Without a stop in
    between, the same late acknowledgements are three lease holders at once."""

    def events(with_stop: bool) -> list[dict[str, object]]:
        evs: list[dict[str, object]] = []
        for pid, run in ((11, "x"), (12, "y")):  # supervisor 10, limit 2
            evs += [
                {"ev": "handler-start", "pid": pid, "ppid": 10, "run": run, "wf": "w", "mono": 1},
                {"ev": "step-start", "pid": pid, "run": run, "step": "s", "exec": run, "mono": 2},
                {"ev": "step-end", "pid": pid, "run": run, "step": "s", "exec": run, "mono": 3},
                {"ev": "step-recorded", "pid": pid, "run": run, "exec": run, "mono": 400},
                {"ev": "handler-end", "pid": pid, "run": run, "mono": 401, "outcome": "lost"},
            ]
        evs += [  # another supervisor's run, once the stopped one's leases lapsed
            {"ev": "handler-start", "pid": 21, "ppid": 20, "run": "z", "wf": "w", "mono": 200},
            {"ev": "step-start", "pid": 21, "run": "z", "step": "s", "exec": "z", "mono": 201},
            {"ev": "step-end", "pid": 21, "run": "z", "step": "s", "exec": "z", "mono": 202},
            {"ev": "step-recorded", "pid": 21, "run": "z", "exec": "z", "mono": 203},
            {"ev": "handler-end", "pid": 21, "run": "z", "mono": 204, "outcome": "ok"},
        ]
        if with_stop:
            evs += [
                {"ev": "fault", "kind": "stop", "pids": [10, 11, 12], "mono": 5},
                {"ev": "fault", "kind": "cont", "pids": [10, 11, 12], "mono": 300},
            ]
        return sorted(evs, key=lambda ev: int(str(ev["mono"])))

    stopped = Report()
    _check_concurrency(stopped, events(with_stop=True), {"w": 2})
    assert stopped.violations == [] and stopped.max_concurrency["w"] == 2
    plain = Report()
    _check_concurrency(plain, events(with_stop=False), {"w": 2})
    assert plain.violations == ["I4: w: 3 lease holders ran at once (limit 2)"]


def test_a_write_sent_between_the_stop_record_and_the_signal_was_applied_by_the_stop() -> None:
    """I4 and SIGSTOP (3a with the default lease): the harness records a stop just
    before it sends SIGSTOP, and a loaded child ended a step 9 ms after that record;
    its write went out before the signal landed and was applied, its reply read
    after SIGCONT. The stop's ``stop-landed`` bounds such writes; without it the
    execution held its lease through the stop (3 lease holders of a limit of 2)."""

    def events(landed: bool) -> list[dict[str, object]]:
        evs: list[dict[str, object]] = [
            {"ev": "handler-start", "pid": 11, "ppid": 10, "run": "x", "wf": "w", "mono": 1},
            {"ev": "step-start", "pid": 11, "run": "x", "step": "s", "exec": "x", "mono": 2},
            {"ev": "fault", "kind": "stop", "pids": [10, 11], "mono": 5},
            {"ev": "step-end", "pid": 11, "run": "x", "step": "s", "exec": "x", "mono": 7},
            {"ev": "fault", "kind": "cont", "pids": [10, 11], "mono": 300},
            {"ev": "step-recorded", "pid": 11, "run": "x", "exec": "x", "mono": 301},
            {"ev": "handler-end", "pid": 11, "run": "x", "mono": 302, "outcome": "ok"},
        ]
        for pid, run in ((21, "y"), (22, "z")):  # the other supervisor, after the lease
            evs += [
                {"ev": "handler-start", "pid": pid, "ppid": 20, "run": run, "wf": "w", "mono": 200},
                {"ev": "step-start", "pid": pid, "run": run, "step": "s", "exec": run, "mono": 201},
                {"ev": "step-end", "pid": pid, "run": run, "step": "s", "exec": run, "mono": 202},
                {"ev": "step-recorded", "pid": pid, "run": run, "exec": run, "mono": 203},
                {"ev": "handler-end", "pid": pid, "run": run, "mono": 204, "outcome": "ok"},
            ]
        if landed:
            evs.append({"ev": "stop-landed", "pids": [10, 11], "mono": 9})
        return sorted(evs, key=lambda ev: int(str(ev["mono"])))

    report = Report()
    _check_concurrency(report, events(landed=True), {"w": 2})
    assert report.violations == [] and report.max_concurrency["w"] == 2
    before = Report()
    _check_concurrency(before, events(landed=False), {"w": 2})
    assert before.violations == ["I4: w: 3 lease holders ran at once (limit 2)"]


def test_a_step_decided_before_a_stop_and_logged_after_it_is_cut_off_in_flight() -> None:
    """I3 and SIGSTOP: a child stopped after its step's lease confirmation and
    before the step function logs ``step-start`` resumes inside that step, after
    another supervisor ran and recorded it: cut off in flight, as a child stopped
    inside the step function. The same late start whose confirmation came after
    the other's record (or with no stop in between) is a re-execution."""

    def events(confirmed_at: int, with_stop: bool) -> list[dict[str, object]]:
        evs: list[dict[str, object]] = [
            {"ev": "lease-confirmed", "pid": 11, "run": "r", "mono": confirmed_at},
            {"ev": "step-start", "pid": 21, "run": "r", "step": "s", "exec": "b", "mono": 200},
            {"ev": "step-end", "pid": 21, "run": "r", "step": "s", "exec": "b", "ok": True,
             "mono": 210},
            {"ev": "step-recorded", "pid": 21, "run": "r", "step": "s", "exec": "b", "mono": 220},
            {"ev": "step-start", "pid": 11, "run": "r", "step": "s", "exec": "a", "mono": 310},
            {"ev": "step-end", "pid": 11, "run": "r", "step": "s", "exec": "a", "ok": True,
             "mono": 320},
        ]  # fmt: skip
        if with_stop:
            evs += [
                {"ev": "fault", "kind": "stop", "pids": [10, 11], "mono": 100},
                {"ev": "fault", "kind": "cont", "pids": [10, 11], "mono": 300},
            ]
        return sorted(evs, key=lambda ev: int(str(ev["mono"])))

    steps = {"r": {"s": {"status": "succeeded", "outputJson": json.dumps({"exec": "b"})}}}
    runs = {"r": {"status": "succeeded"}}
    # confirmed before the stop, or just after its record (before SIGSTOP landed)
    for confirmed_at in (50, 103):
        cut_off = Report()
        _check_steps(cut_off, events(confirmed_at, with_stop=True), runs, steps)
        assert cut_off.violations == [] and cut_off.inflight_reexecutions == 1
    for confirmed_at, with_stop in ((250, True), (305, True), (50, False)):
        late = Report()
        _check_steps(late, events(confirmed_at, with_stop), runs, steps)
        assert [v.split(":")[0] for v in late.violations] == ["I3"], (confirmed_at, with_stop)
