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
from tests.faults.invariants import check
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
