"""The invariant checker catches what it must: a keyspace (v2) with one of each
structural violation, built by hand, is reported; a clean one is not. Runs in
the plain test run (no fault is injected, no supervisor started)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.faults.invariants import Report, _check_exclusive, check
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
