"""The attempts history: every exit from `running` (finish, retry, put back,
crash, cancel) makes one entry in the same script (retries and put-backs append
to run:<id>:attempts; a finish leaves its entry implied by the run hash, marked
`finalAttempt`, written out if the run is resumed); a run that never ran has
none; the history is capped and goes with the run at retention; a step's
outcome keeps the seq of its `running` record."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import StoredStep, encode_step
from redflow_mp.ids import new_token
from tests.helpers import text

pytestmark = pytest.mark.timeout(30)

_ERR = msgspec.json.encode(
    {"type": "ValueError", "message": 'boom "quoted"\n', "retryable": True, "traceback": "tb"}
)


def _entries(raw: redis.Redis, client: Client, rid: str) -> list[dict[str, Any]]:
    """The run's history as stored: the list, then the entry a finish leaves
    implied by the hash (``finalAttempt``), the newest 100."""
    out = [json.loads(x) for x in raw.lrange(client.keys.run_attempts(rid), 0, -1)]
    h = {text(k): text(v) for k, v in raw.hgetall(client.keys.run(rid)).items()}
    if "finalAttempt" in h:
        last = {
            "attempt": int(h["attempt"]),
            "startedAt": int(h.get("attemptStartedAt") or h["startedAt"]),
            "finishedAt": int(h["finishedAt"]),
            "outcome": h["status"],
        }
        if h["finalAttempt"] == "e":
            last["errorJson"] = h["errorJson"]
        out.append(last)
    # the public reading gives the same entries
    state = client.get_run(rid)
    assert state is not None
    assert [(a.attempt, a.outcome, a.started_at, a.finished_at) for a in state.attempts] == [
        (e["attempt"], e["outcome"], e["startedAt"], e["finishedAt"]) for e in out[-100:]
    ]
    return out[-100:]


def _claim(client: Client, rid: str) -> str:
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == rid
    return tok


def test_each_attempt_end_is_recorded_with_its_times_outcome_and_error(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq(max_attempts=3)
    tok = _claim(client, rid)
    first_start = int(raw.hget(k.run(rid), "attemptStartedAt") or 0)
    assert first_start > 0
    assert client.scripts.finalize(rid, tok, "retry", _ERR, 0) == "queued"
    tok = _claim(client, rid)
    second_start = int(raw.hget(k.run(rid), "attemptStartedAt") or 0)
    assert second_start >= first_start
    # its worker died: put back, the same attempt runs again
    assert client.scripts.finalize(rid, tok, "crash", "worker killed by SIGKILL", 3) == "queued"
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "succeeded", b'{"ok":1}') == "succeeded"
    entries = _entries(raw, client, rid)
    assert [(e["attempt"], e["outcome"]) for e in entries] == [
        (1, "retried"),
        (2, "requeued"),
        (2, "succeeded"),
    ]
    assert entries[0]["startedAt"] == first_start
    assert entries[1]["startedAt"] == second_start
    assert all(e["startedAt"] <= e["finishedAt"] for e in entries)
    assert json.loads(entries[0]["errorJson"]) == json.loads(_ERR)  # exact, escaped
    assert entries[1]["cause"] == "worker killed by SIGKILL" and "errorJson" not in entries[1]
    assert "errorJson" not in entries[2] and "cause" not in entries[2]
    state = client.get_run(rid)
    assert state is not None
    assert [(a.attempt, a.outcome) for a in state.attempts] == [
        (1, "retried"),
        (2, "requeued"),
        (2, "succeeded"),
    ]
    assert state.attempts[0].error is not None
    assert state.attempts[0].error.message == 'boom "quoted"\n'
    assert state.attempts[0].error.traceback == "tb"
    assert state.attempts[1].cause == "worker killed by SIGKILL"


def test_fail_cancel_and_crash_cap_are_recorded_a_run_that_never_ran_has_none(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    never = enq()
    assert client.scripts.cancel(never, "no") == "canceled"
    assert _entries(raw, client, never) == []

    failed = enq()
    tok = _claim(client, failed)
    assert client.scripts.finalize(failed, tok, "failed", _ERR) == "failed"
    assert [e["outcome"] for e in _entries(raw, client, failed)] == ["failed"]

    canceled = enq()
    tok = _claim(client, canceled)
    assert client.scripts.cancel(canceled, "stop it") == "running"
    # the worker saw the request and stopped at a step boundary
    assert client.scripts.finalize(canceled, tok, "canceled", b"") == "canceled"
    [entry] = _entries(raw, client, canceled)
    assert entry["outcome"] == "canceled"
    assert json.loads(entry["errorJson"])["type"] == "RunCanceledError"

    poison = enq()
    tok = _claim(client, poison)
    assert client.scripts.finalize(poison, tok, "crash", "killed by SIGKILL", 2) == "queued"
    tok = _claim(client, poison)
    assert client.scripts.finalize(poison, tok, "crash", "killed by SIGKILL", 2) == "failed"
    entries = _entries(raw, client, poison)
    assert [e["outcome"] for e in entries] == ["requeued", "failed"]
    assert json.loads(entries[1]["errorJson"])["type"] == "RunCrashedError"


def test_the_reaper_and_a_finish_with_claim_record_too(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    a = enq()
    b = enq()
    tok = _claim(client, a)
    raw.zadd(k.leases, {a: 1})  # its lease expired long ago
    client.scripts.reap(10)
    [entry] = _entries(raw, client, a)
    assert entry["outcome"] == "requeued" and "lease expired" in entry["cause"]
    # put back near the front: claimed again; finish + claim in one call (the
    # worker's steady state)
    tok = _claim(client, a)
    finished, got = client.scripts.claim(("q",), 5_000, new_token(), ("succeeded", a, tok, b"1", 0))
    assert finished == "succeeded" and got is not None and got.id == b
    assert [e["outcome"] for e in _entries(raw, client, a)] == ["requeued", "succeeded"]


def test_the_history_is_capped_and_removed_with_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq(max_attempts=1000)
    for _ in range(105):
        tok = _claim(client, rid)
        assert client.scripts.finalize(rid, tok, "retry", _ERR, 0) == "queued"
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") == "succeeded"
    entries = _entries(raw, client, rid)
    assert len(entries) == 100  # the newest 100
    assert entries[0]["attempt"] == 7 and entries[-1]["outcome"] == "succeeded"
    assert client.scripts.sweep(3_600_000, 100) == 0  # kept for its retention
    raw.zadd(k.runs_status("succeeded"), {rid: 1})  # as if it finished long ago
    assert client.scripts.sweep(3_600_000, 100) == 1
    assert not raw.exists(k.run_attempts(rid)) and not raw.exists(k.run(rid))


def test_a_step_outcome_keeps_the_seq_of_its_running_record(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = enq()
    tok = _claim(client, rid)

    def write(name: str, status: str) -> None:
        rec = StoredStep(seq=0, status=status, started_at=1, finished_at=0, attempt=1)
        assert client.scripts.write_step(rid, tok, name, encode_step(rec), 5_000)[0]

    write("a", "running")
    write("b", "running")  # started while a was in flight (an async handler)
    write("b", "succeeded")
    write("a", "failed")
    write("c", "succeeded")
    seqs = {
        text(name): json.loads(data)["seq"]
        for name, data in raw.hgetall(client.keys.run_steps(rid)).items()
    }
    assert seqs == {"a": 1, "b": 2, "c": 3}
    steps = client.get_run_steps(rid)
    assert steps is not None and [s.name for s in steps] == ["a", "b", "c"]


def test_a_run_that_ends_on_its_first_execution_writes_no_history_list(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The common run (one execution, then a finish) keeps its one entry in its
    hash: no attempts key, one key less per finished run."""
    k = client.keys
    rid = enq()
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") == "succeeded"
    assert not raw.exists(k.run_attempts(rid))
    [entry] = _entries(raw, client, rid)
    assert entry["outcome"] == "succeeded" and entry["attempt"] == 1
    # a retry's error left on the hash is not the succeeded attempt's error
    other = enq(max_attempts=2)
    tok = _claim(client, other)
    assert client.scripts.finalize(other, tok, "retry", _ERR, 0) == "queued"
    tok = _claim(client, other)
    assert client.scripts.finalize(other, tok, "succeeded", b"1") == "succeeded"
    state = client.get_run(other)
    assert state is not None
    assert [(a.outcome, a.error is None) for a in state.attempts] == [
        ("retried", False),
        ("succeeded", True),
    ]


def test_a_resume_writes_the_implied_entry_out_before_the_next_attempt(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "failed"
    finished = int(raw.hget(k.run(rid), "finishedAt") or 0)
    assert client.resume_run(rid).id == rid
    # written out as the finish would have: its times, outcome and error kept
    [first] = [json.loads(x) for x in raw.lrange(k.run_attempts(rid), 0, -1)]
    assert first["outcome"] == "failed" and first["finishedAt"] == finished
    assert json.loads(first["errorJson"]) == json.loads(_ERR)
    assert raw.hget(k.run(rid), "finalAttempt") is None
    tok = _claim(client, rid)
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") == "succeeded"
    entries = _entries(raw, client, rid)
    assert [(e["attempt"], e["outcome"]) for e in entries] == [(1, "failed"), (2, "succeeded")]
    assert "errorJson" not in entries[1]
