"""resume_run.lua: failed|canceled -> queued as the same run, attempt + 1, in one
script: indexes, ready set, idempotency key, step records (only succeeded ones
kept), the attempt budget; a resend of the same call is harmless; anything else
changes nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable

import msgspec
import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import StoredStep, encode_step
from redflow_mp.ids import new_token

pytestmark = pytest.mark.timeout(30)

_ERR = msgspec.json.encode({"type": "ValueError", "message": "boom", "retryable": True})


def _resume(client: Client, rid: str, token: str | None = None) -> list[object]:
    keys, args = client.scripts.resume_call(rid, token or new_token())
    return list(client.scripts.run("resume_run", keys, args, retry=False))


def _failed_with_steps(client: Client, enq: Callable[..., str]) -> str:
    rid = enq(max_attempts=2, key="k1")
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == rid
    for name, status in (("a", "succeeded"), ("b", "failed")):
        rec = StoredStep(seq=0, status=status, started_at=1, finished_at=2, attempt=1)
        assert client.scripts.write_step(rid, tok, name, encode_step(rec), 5_000)[0]
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "failed"
    return rid


def test_resume_puts_a_failed_run_back_as_the_same_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = _failed_with_steps(client, enq)
    assert raw.pttl(k.idempotency("wf", "k1")) > 0  # the finish set its expiry
    assert _resume(client, rid) == [1, b"queued", 2]
    run = raw.hgetall(k.run(rid))
    assert run[b"status"] == b"queued"
    assert (run[b"attempt"], run[b"maxAttempts"], run[b"attemptBudget"]) == (b"2", b"3", b"2")
    for gone in (b"errorJson", b"finishedAt", b"doneToken", b"cancelRequestedAt"):
        assert gone not in run
    assert list(raw.hgetall(k.run_steps(rid))) == [b"a"]  # the failed record is dropped
    assert raw.zscore(k.runs_status("failed"), rid) is None
    assert raw.zscore(k.runs_status("queued"), rid) is not None
    assert raw.zrange(k.q_ready("q"), 0, -1) == [rid.encode()]
    assert raw.llen(k.q_bell("q")) >= 1
    assert raw.pttl(k.idempotency("wf", "k1")) == -1  # held again while unfinished
    # claimed like any queued run, with its kept steps
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == rid and got.attempt == 2 and list(got.steps) == ["a"]


def test_a_resend_of_the_same_resume_is_harmless(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = _failed_with_steps(client, enq)
    token = new_token()
    assert _resume(client, rid, token) == [1, b"queued", 2]
    before = raw.hgetall(client.keys.run(rid))
    assert _resume(client, rid, token) == [1, b"queued", 2]
    assert raw.hgetall(client.keys.run(rid)) == before
    assert raw.zcard(client.keys.q_ready("q")) == 1
    assert _resume(client, rid)[:2] == [-1, b"queued"]  # another call is refused


def test_resume_refuses_other_statuses_and_unknown_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    assert _resume(client, "nope") == [0, b""]
    assert not raw.exists(k.run("nope"))
    queued = enq()
    scheduled = enq(run_at_ms=10**13)
    for rid, status in ((queued, b"queued"), (scheduled, b"scheduled")):
        before = raw.hgetall(k.run(rid))
        assert _resume(client, rid) == [-1, status]
        assert raw.hgetall(k.run(rid)) == before
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == queued
    assert _resume(client, queued) == [-1, b"running"]
    assert client.scripts.finalize(queued, tok, "succeeded", b"1") == "succeeded"
    before = raw.hgetall(k.run(queued))
    assert _resume(client, queued) == [-1, b"succeeded"]
    assert raw.hgetall(k.run(queued)) == before


def test_a_canceled_run_resumes_without_its_cancel_request(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq(max_attempts=3)
    assert client.scripts.cancel(rid, "stop") == "canceled"
    assert _resume(client, rid) == [1, b"queued", 2]
    run = raw.hgetall(k.run(rid))
    assert b"cancelRequestedAt" not in run and b"cancelReason" not in run
    assert (run[b"attempt"], run[b"maxAttempts"]) == (b"2", b"4")
    # a second resume after another failure adds the same budget again
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "failed"
    assert _resume(client, rid) == [1, b"queued", 3]
    assert raw.hmget(k.run(rid), "attempt", "maxAttempts") == [b"3", b"5"]


def test_a_resumed_run_with_a_huge_attempt_budget_is_claimed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # Retries(max_attempts=sys.maxsize): "retry for ever". The resume's budget
    # arithmetic (Lua doubles) wrote maxAttempts as "9.2233720368547758e+18",
    # and the claim failed the run as a corrupted record.
    rid = enq(max_attempts=sys.maxsize)
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.max_attempts == sys.maxsize
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "failed"
    assert _resume(client, rid)[:2] == [1, b"queued"]
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    error = raw.hget(client.keys.run(rid), "errorJson")
    assert got is not None, f"the resumed run was not claimed: {error!r}"
    assert got.attempt == 2 and got.max_attempts >= sys.maxsize
    for field in (b"maxAttempts", b"attemptBudget"):
        assert (raw.hget(client.keys.run(rid), field) or b"").isdigit()
