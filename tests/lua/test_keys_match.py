"""The key names built in ``lua/_lib.lua`` are exactly those of ``keys.py``,
and a real enqueue + claim creates exactly those keys, all in one hash slot."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.helpers import run_keys

pytestmark = pytest.mark.timeout(30)

_NAMES = ["plain", "with space", "co:lon", "br{ace}s", "ünïcødé-名前"]


def _lib() -> str:
    return resources.files("redflow_mp").joinpath("lua/_lib.lua").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", _NAMES)
def test_lua_key_helpers_match_keys_py(raw: redis.Redis, client: Client, name: str) -> None:
    k = client.keys
    body = """
local t, n = ARGV[1], ARGV[2]
return { k_run(t, n), k_steps(t, n), k_leases(t), k_status(t, 'queued'),
  k_ready(t, n), k_due_queues(t), k_scheduled(t, n), k_bell(t, n), k_wf(t, n),
  k_wf_runs(t, n), k_running(t, n), k_waiting(t, n), k_idem(t, n, n .. '-key'),
  t .. ':runs:created', t .. ':queues', t .. ':parked', t .. ':run-done:' .. n,
  t .. ':cron:next', t .. ':lock:cron', k_attempts(t, n), k_rate(t, n), k_unindexed(t),
  k_ready_queues(t), k_qset(t, n), k_rate_started(t, n), k_fallback_runs(t) }
"""
    got = [x.decode() for x in raw.eval(_lib() + body, 0, k.tag, name)]
    assert got == [
        k.run(name),
        k.run_steps(name),
        k.leases,
        k.runs_status("queued"),
        k.q_ready(name),
        k.due_queues,
        k.q_scheduled(name),
        k.q_bell(name),
        k.workflow(name),
        k.workflow_runs(name),
        k.wf_running(name),
        k.wf_waiting(name),
        k.idempotency(name, name + "-key"),
        k.runs_created,
        k.queues,
        k.parked,
        k.run_done(name),
        k.cron_next,
        k.lock_cron,
        k.run_attempts(name),
        k.rate(name),
        k.runs_unindexed,
        k.ready_queues,
        k.qset(name),
        k.rate_started(name),
        k.fallback_runs,
    ]


@pytest.mark.parametrize("name", _NAMES)
def test_enqueue_and_claim_create_exactly_the_documented_keys(
    raw: redis.Redis, client: Client, prefix: str, enq: Callable[..., str], name: str
) -> None:
    k = client.keys
    run_id = enq(workflow=name, queue=name, key="idem-" + name)
    after_enqueue = run_keys(raw, "{" + prefix + "}*")
    assert after_enqueue == sorted(
        [
            k.run(run_id),
            k.runs_created,
            k.workflow_runs(name),
            k.runs_status("queued"),
            k.queues,
            k.q_ready(name),
            k.q_bell(name),
            k.ready_queues,
            k.idempotency(name, "idem-" + name),
        ]
    )
    assert raw.get(k.idempotency(name, "idem-" + name)) == run_id.encode()

    token = new_token()
    _, claimed = client.scripts.claim((name,), 5_000, token)
    assert claimed is not None and claimed.id == run_id
    keys_now = set(run_keys(raw, "{" + prefix + "}*"))
    assert {
        k.leases,
        k.wf_running(name),
        k.runs_status("running"),
    } <= keys_now
    assert raw.hget(k.run(run_id), "lease") == token.encode()
    assert raw.zrange(k.leases, 0, -1) == [run_id.encode()]
    assert raw.smembers(k.wf_running(name)) == {run_id.encode()}
    assert not raw.exists(k.q_ready(name))
    assert not raw.exists(k.runs_status("queued"))

    # one slot for all of them: the Cluster hash tag is the prefix
    assert {_hash_tag(key) for key in keys_now} == {prefix}


def _hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes (the first {...} with content)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


@pytest.mark.parametrize("name", _NAMES)
def test_lua_wait_key_helpers_match_keys_py(raw: redis.Redis, client: Client, name: str) -> None:
    k = client.keys
    body = """
local t, n = ARGV[1], ARGV[2]
return { k_timers(t), k_awaits(t, n), k_waiters(t, n), k_children(t, n), k_evnames(t, n),
  k_ev(t, n, n .. ':ev'), k_status(t, 'suspended') }
"""
    got = [x.decode() for x in raw.eval(_lib() + body, 0, k.tag, name)]
    assert got == [
        k.timers,
        k.run_awaits(name),
        k.run_waiters(name),
        k.run_children(name),
        k.run_event_names(name),
        k.run_events(name, name + ":ev"),
        k.runs_status("suspended"),
    ]
