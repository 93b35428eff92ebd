"""A terminal finish's lease check is the ZREM of the run's `leases` entry on
Redis 7 (lease_check in _lib.lua): every way a finish can stop after that ZREM
must leave no run `running` outside `leases` (the reaper finds a run only there:
such a run would be lost). Each refusal or detour after the check, through
claim_run (EVALSHA and FCALL) and finalize_run; and the finishes that are not
terminal (retry, requeue), which keep the entry when they fail half-way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.claimed import Claimed, Finish
from redflow_mp.ids import new_token
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(30)


def _claim(cl: Client, enq: Callable[..., str], **kw: Any) -> Claimed:
    enq(**kw)
    _, claimed = cl.scripts.claim(("q",), 60_000, new_token())
    assert claimed is not None
    return claimed


def _not_lost(raw: Any, cl: Client, run_id: str) -> str | None:
    """The run's status; a running run must still be in `leases` (else lost)."""
    status = status_of(raw, cl, run_id)
    if status == "running":
        assert raw.zscore(cl.keys.leases, run_id) is not None, "running, not in leases: lost"
    return status


def test_a_finish_with_another_token_keeps_the_lease_entry(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    c = _claim(cl, enq)
    score = raw.zscore(cl.keys.leases, c.id)
    finished, _ = cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, new_token(), b"1"))
    assert finished == "lease-lost"
    assert cl.scripts.finalize(c.id, new_token(), "failed", b'{"type":"E"}') is None
    assert _not_lost(raw, cl, c.id) == "running"
    assert raw.zscore(cl.keys.leases, c.id) == score
    assert raw.sismember(cl.keys.wf_running("wf"), c.id) == 1


def test_a_finish_of_a_run_canceled_meanwhile_ends_it_canceled(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    c = _claim(cl, enq)
    assert cl.scripts.cancel(c.id, "stop") == "running"  # requested: its worker ends it
    finished, _ = cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, c.token, b"7"))
    assert finished == "canceled"
    assert _not_lost(raw, cl, c.id) == "canceled"
    assert raw.hget(cl.keys.run(c.id), "outputJson") == b"7"
    assert raw.zscore(cl.keys.leases, c.id) is None
    assert raw.sismember(cl.keys.wf_running("wf"), c.id) == 0


def test_a_finish_of_a_run_already_finished_with_a_stale_entry(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    """A run ended by hand (status written, its `leases` entry left): the finish
    changes nothing and answers the status; the stale entry may go."""
    c = _claim(cl, enq)
    raw.hset(cl.keys.run(c.id), "status", "failed")
    finished, _ = cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, c.token, b"1"))
    assert finished == "failed"
    assert raw.hget(cl.keys.run(c.id), "outputJson") is None


@pytest.mark.parametrize("key", ["wf_waiting", "waiters", "wf_running", "status_index"])
def test_a_finish_past_a_neighbours_key_of_another_type(
    raw: Any, cl: Client, enq: Callable[..., str], key: str
) -> None:
    c = _claim(cl, enq)
    k = cl.keys
    name = {
        "wf_waiting": k.wf_waiting("wf"),
        "waiters": k.run_waiters(c.id),
        "wf_running": k.wf_running("wf"),
        "status_index": k.runs_status("succeeded"),
    }[key]
    if key == "wf_running":
        raw.delete(name)
    raw.set(name, "neighbour")
    finished, _ = cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, c.token, b"1"))
    assert finished == "succeeded"
    assert _not_lost(raw, cl, c.id) == "succeeded"
    assert raw.zscore(k.leases, c.id) is None
    assert raw.get(name) == b"neighbour"


def test_a_claim_refused_after_the_finish_loses_no_run(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    """The call fails in its claim (the ready set of another type) after the
    finish was applied: the finish stays whole, and its resend learns the status."""
    c = _claim(cl, enq)
    raw.set(cl.keys.q_ready("q"), "neighbour")
    with pytest.raises(Exception, match="WRONGTYPE"):
        cl.scripts.claim(("q",), 60_000, new_token(), Finish("succeeded", c.id, c.token, b"1"))
    assert _not_lost(raw, cl, c.id) == "succeeded"
    assert raw.zscore(cl.keys.leases, c.id) is None
    assert raw.sismember(cl.keys.wf_running("wf"), c.id) == 0
    finished, _ = cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, c.token, b"1"))
    assert finished == "succeeded"


def test_the_leases_set_of_another_type_refuses_the_finish_whole(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    c = _claim(cl, enq)
    raw.delete(cl.keys.leases)
    raw.set(cl.keys.leases, "neighbour")
    with pytest.raises(Exception, match="WRONGTYPE"):
        cl.scripts.claim(("q",), 60_000, "", Finish("succeeded", c.id, c.token, b"1"))
    assert status_of(raw, cl, c.id) == "running"
    assert raw.hget(cl.keys.run(c.id), "finishedAt") is None


@pytest.mark.parametrize("mode", ["retry", "requeue"])
@pytest.mark.parametrize("via", ["claim_run", "finalize_run"])
def test_a_put_back_refused_half_way_keeps_the_lease_entry(
    raw: Any, cl: Client, enq: Callable[..., str], mode: str, via: str
) -> None:
    """retry/requeue may fail at their ready set (another type): the run stays
    running and in `leases` (the reaper tries again), not stranded."""
    c = _claim(cl, enq, max_attempts=3)
    raw.set(cl.keys.q_ready("q"), "neighbour")
    finish = Finish(mode, c.id, c.token, b'{"type":"E"}' if mode == "retry" else b"cause")
    with pytest.raises(Exception, match="WRONGTYPE"):
        if via == "claim_run":
            cl.scripts.claim(("q",), 60_000, "", finish)
        else:
            cl.scripts.finalize(c.id, c.token, mode, finish.payload)
    assert _not_lost(raw, cl, c.id) == "running"
    assert raw.zscore(cl.keys.leases, c.id) is not None


def test_finalize_run_terminal_finish_takes_the_entry_and_answers_a_resend(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    c = _claim(cl, enq)
    assert cl.scripts.finalize(c.id, c.token, "succeeded", b"1") == "succeeded"
    assert raw.zscore(cl.keys.leases, c.id) is None
    assert raw.sismember(cl.keys.wf_running("wf"), c.id) == 0
    assert cl.scripts.finalize(c.id, c.token, "succeeded", b"1") == "succeeded"


def test_redis_version_seen_by_the_scripts(raw: Any, cl: Client) -> None:
    """The ZREM-as-check runs where Lua has redis.REDIS_VERSION (Redis >= 7, Valkey,
    which reports redis_version 7.2.x there and in INFO): the same servers the
    client sends flagged scripts (`#!lua`) to, which an OOM server refuses whole."""
    seen = raw.eval("return tostring(redis.REDIS_VERSION)", 0)
    seen = seen.decode() if isinstance(seen, bytes) else seen
    info = str(raw.info("server")["redis_version"])
    if int(info.split(".")[0]) >= 7:
        assert seen == info
    else:
        assert seen == "nil"
    assert isinstance(raw, redis.Redis | redis.RedisCluster)


def test_a_claim_with_a_huge_lease_is_not_reaped_at_once(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    """Worker takes any lease_ms >= 100 (sys.maxsize for "never expires"; the lease
    keeper caps its own wait for 1e17 ms): the claim's expiry, printed with '%d'
    (a C long), wrapped past 2^63 to -2^63, and the reaper put the run back at
    once while its worker still ran it (two executions)."""
    run_id = enq()
    lease_ms = 10**19
    _, claimed = cl.scripts.claim(("q",), lease_ms, new_token())
    assert claimed is not None and claimed.id == run_id
    expiry = raw.zscore(cl.keys.leases, run_id)
    assert expiry is not None and expiry > 9e18, f"lease expiry {expiry}"
    assert float(raw.hget(cl.keys.run(run_id), "leaseMs")) == float(lease_ms)
    assert cl.scripts.reap(100)[1] == []
    assert status_of(raw, cl, run_id) == "running"
