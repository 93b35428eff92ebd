"""Durable waits when a neighbour sharing the Redis overwrote a key a wait
script reads with another type of value: a child's run hash, ``workflow:<wf>``,
``leases``, the run's steps hash, the run hash an event is sent to. Each call is
refused with an error naming the key, nothing is half-applied (status, lease,
status index, timers, wake-ups, steps and events as before), and once the key
is removed the run goes on to its finish."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_token
from tests.helpers import claim_one, text
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(60)

_JUNK = "not a redflow key"
_RECORD = (b'{"seq":0,"status":"succeeded","outputJson":', b"}")


def _state(raw: redis.Redis, client: Client, run_id: str) -> dict[str, Any]:
    """What a half-applied wait would change."""
    k = client.keys
    return {
        "run": raw.hgetall(k.run(run_id)),
        "lease": raw.zscore(k.leases, run_id) if raw.type(k.leases) == b"zset" else "n/a",
        "running": raw.zscore(k.runs_status("running"), run_id),
        "suspended": raw.zscore(k.runs_status("suspended"), run_id),
        "timers": raw.zscore(k.timers, run_id),
        "awaits": raw.smembers(k.run_awaits(run_id)),
        "steps": raw.hgetall(k.run_steps(run_id))
        if raw.type(k.run_steps(run_id)) == b"hash"
        else "n/a",
        "events": raw.lrange(k.run_events(run_id, "go"), 0, -1),
    }


def _finish(client: Client, run_id: str, token: str) -> None:
    assert client.scripts.finalize(run_id, token, "succeeded", b'{"ok":1}') == "succeeded"


def test_a_childs_run_hash_of_the_wrong_type_names_the_key_and_changes_nothing(
    raw: redis.Redis, client: Client
) -> None:
    enq = Enq(client)
    parent = enq(workflow="p", queue="q")
    run = claim_one(client, "q")
    child = enq(workflow="c", queue="cq", parent=parent)
    child_run = client.keys.run(child)
    saved = raw.dump(child_run)
    assert saved is not None
    raw.delete(child_run)
    raw.set(child_run, _JUNK)
    before = _state(raw, client, parent)
    wait = RunWait(steps=["s"], kinds=["children"], children=[child])
    with pytest.raises(WrongTypeError, match=re.escape(child_run)):
        client.scripts.suspend(parent, run.token, wait)
    assert _state(raw, client, parent) == before
    assert raw.scard(client.keys.run_waiters(child)) == 0
    # the key restored, the same token suspends; the child's finish wakes the parent
    raw.delete(child_run)
    raw.restore(child_run, 0, saved)
    assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    c = claim_one(client, "cq")
    _finish(client, child, c.token)
    assert text(raw.hget(client.keys.run(parent), "status")) == "queued"
    _finish(client, parent, claim_one(client, "q").token)


def test_a_workflow_hash_of_the_wrong_type_names_the_key_and_changes_nothing(
    raw: redis.Redis, client: Client
) -> None:
    """The deadlock rule reads ``workflow:<wf>`` maxConcurrency when a run awaits
    a child of its own workflow."""
    enq = Enq(client)
    parent = enq(workflow="w", queue="q")
    run = claim_one(client, "q")
    child = enq(workflow="w", queue="cq", parent=parent)
    wf = client.keys.workflow("w")
    saved = raw.dump(wf)
    raw.delete(wf)
    raw.set(wf, _JUNK)
    before = _state(raw, client, parent)
    wait = RunWait(steps=["s"], kinds=["children"], children=[child])
    with pytest.raises(WrongTypeError, match=re.escape(wf)):
        client.scripts.suspend(parent, run.token, wait)
    assert _state(raw, client, parent) == before
    raw.delete(wf)
    if saved is not None:
        raw.restore(wf, 0, saved)
    # read again: one slot, held by the parent, would deadlock (resume) ...
    assert client.scripts.suspend(parent, run.token, wait) == "resume"
    # ... two leave the child a slot
    raw.hset(wf, "maxConcurrency", 2)
    assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    _finish(client, child, claim_one(client, "cq").token)
    _finish(client, parent, claim_one(client, "q").token)


@pytest.mark.parametrize("call", ["suspend", "consume_event"])
def test_a_leases_key_of_the_wrong_type_names_the_key_and_changes_nothing(
    raw: redis.Redis, client: Client, call: str
) -> None:
    enq = Enq(client)
    run_id = enq(workflow="e", queue="q")
    run = claim_one(client, "q")
    assert client.scripts.send_event(run_id, "go", b'"p"', 10) is True
    leases = client.keys.leases
    saved = raw.dump(leases)
    assert saved is not None
    raw.delete(leases)
    raw.set(leases, _JUNK)
    before = _state(raw, client, run_id)
    wait = RunWait(steps=["a"], kinds=["sleep"], wake_at=client.server_time_ms() + 60_000)
    with pytest.raises(WrongTypeError, match=re.escape(leases)):
        if call == "suspend":
            client.scripts.suspend(run_id, run.token, wait)
        else:
            client.scripts.consume_event(run_id, run.token, "a", "go", _RECORD, 60_000)
    assert _state(raw, client, run_id) == before
    raw.delete(leases)
    raw.restore(leases, 0, saved)
    assert client.scripts.consume_event(run_id, run.token, "a", "go", _RECORD, 60_000)[0] == 1
    _finish(client, run_id, run.token)


def test_a_steps_hash_of_the_wrong_type_names_the_key_and_consumes_no_event(
    raw: redis.Redis, client: Client
) -> None:
    enq = Enq(client)
    run_id = enq(workflow="e", queue="q")
    run = claim_one(client, "q")
    assert client.scripts.send_event(run_id, "go", b'"p"', 10) is True
    steps = client.keys.run_steps(run_id)
    raw.set(steps, _JUNK)
    before = _state(raw, client, run_id)
    with pytest.raises(WrongTypeError, match=re.escape(steps)):
        client.scripts.consume_event(run_id, run.token, "a", "go", _RECORD, 60_000)
    assert _state(raw, client, run_id) == before
    assert raw.get(steps) == _JUNK.encode()
    raw.delete(steps)
    reply = client.scripts.consume_event(run_id, run.token, "a", "go", _RECORD, 60_000)
    assert reply[:2] == (1, b'"p"')
    _finish(client, run_id, run.token)


@pytest.mark.parametrize("key", ["", "k1"])
def test_a_run_hash_of_the_wrong_type_refuses_an_event_naming_the_key(
    raw: redis.Redis, client: Client, key: str
) -> None:
    enq = Enq(client)
    run_id = enq(workflow="e", queue="q")
    run_key = client.keys.run(run_id)
    saved = raw.dump(run_key)
    assert saved is not None
    raw.delete(run_key)
    raw.set(run_key, _JUNK)
    with pytest.raises(WrongTypeError, match=re.escape(run_key)):
        client.scripts.send_event(run_id, "go", b'"p"', 10, key)
    assert raw.exists(client.keys.run_events(run_id, "go")) == 0
    assert raw.exists(client.keys.run_event_names(run_id)) == 0
    assert raw.exists(client.keys.run_event_keys(run_id)) == 0
    assert raw.get(run_key) == _JUNK.encode()
    raw.delete(run_key)
    raw.restore(run_key, 0, saved)
    assert client.scripts.send_event(run_id, "go", b'"p"', 10, key) is True
    run = claim_one(client, "q")
    assert client.scripts.consume_event(run_id, run.token, "a", "go", _RECORD, 60_000)[0] == 1
    _finish(client, run_id, run.token)


def test_a_run_hash_of_the_wrong_type_refuses_a_resume_naming_the_key(
    raw: redis.Redis, client: Client
) -> None:
    run_id = Enq(client)(workflow="e", queue="q")
    run = claim_one(client, "q")
    assert client.scripts.finalize(run_id, run.token, "failed", b'{"message":"x"}') == "failed"
    run_key = client.keys.run(run_id)
    saved = raw.dump(run_key)
    assert saved is not None
    raw.delete(run_key)
    raw.set(run_key, _JUNK)
    with pytest.raises(WrongTypeError, match=re.escape(run_key)):
        client.scripts.resume(run_id, new_token())
    assert raw.zscore(client.keys.runs_status("failed"), run_id) is not None
    assert raw.zscore(client.keys.q_ready("q"), run_id) is None
    raw.delete(run_key)
    raw.restore(run_key, 0, saved)
    assert client.scripts.resume(run_id, new_token()) == 2
    _finish(client, run_id, claim_one(client, "q").token)
