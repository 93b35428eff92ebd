"""The helpers that exit_helpers(), retry_helpers() and claim_faults() make are
kept across calls by the function library (EXIT_HELPERS, RETRY_HELPERS,
CLAIM_FAULTS), and one library serves every prefix on a server: a helper must
hold nothing of the call that made it. Two prefixes on one server take each
rare path in turn (the first made the helpers, the second runs on them): each
touches only its own keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from redflow_mp import Client
from redflow_mp.codec import RunWait
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_token
from tests.helpers import status_of
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(90)

_ERR = msgspec.json.encode({"type": "ValueError", "message": "x"})


def _retry_and_requeue(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    k, s, q = cl.keys, cl.scripts, f"q{n}"
    a = enq(queue=q, max_attempts=3)
    tok = new_token()
    assert s.claim((q,), 60_000, tok)[1] is not None
    tok2 = new_token()
    done, got = s.claim((q,), 60_000, tok2, finish=("retry", a, tok, _ERR, 0))
    assert done == "queued" and got is not None and got.id == a and got.attempt == 2
    tok3 = new_token()
    done, got = s.claim((q,), 60_000, tok3, finish=("requeue", a, tok2, "stopping", 0))
    assert done == "queued" and got is not None and got.id == a
    assert raw.llen(k.run_attempts(a)) == 2
    assert s.finalize(a, tok3, "succeeded", b"1") == "succeeded"


def _release_parked(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    s, q, wf = cl.scripts, f"q{n}", f"one{n}"
    p1 = enq(wf, queue=q, max_concurrency=1)
    p2 = enq(wf, queue=q, max_concurrency=1)
    t1 = new_token()
    assert s.claim((q,), 60_000, t1)[1] is not None
    assert s.claim((q,), 60_000, new_token())[1] is None  # p2 parked
    t2 = new_token()
    done, got = s.claim((q,), 60_000, t2, finish=("succeeded", p1, t1, b"1", 0))
    assert done == "succeeded" and got is not None and got.id == p2
    assert s.finalize(p2, t2, "failed", _ERR) == "failed"


def _claim_faults(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    k, s, q = cl.keys, cl.scripts, f"q{n}"
    c = enq(queue=q)
    raw.hset(k.run(c), "attempt", "x")
    assert s.claim((q,), 60_000, new_token())[1] is None
    assert status_of(raw, cl, c) == "failed"
    bad_wf = f"bad{n}"
    raw.set(k.workflow(bad_wf), "not a redflow key")
    g = enq(bad_wf, queue=q)
    with pytest.raises(WrongTypeError, match=k.workflow(bad_wf)):
        s.claim((q,), 60_000, new_token())
    assert status_of(raw, cl, g) == "queued"
    raw.delete(k.workflow(bad_wf), k.q_ready(q))


def _wake_parent_and_idempotency(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    k, s = cl.keys, cl.scripts
    pq, cq = f"pq{n}", f"cq{n}"
    parent_id = enq(workflow=f"p{n}", queue=pq)
    parent = s.claim((pq,), 60_000, new_token())[1]
    assert parent is not None and parent.id == parent_id
    child_id = enq(workflow=f"c{n}", queue=cq, parent=parent_id, key=f"idem{n}", ttl_ms=3_600_000)
    wait = RunWait(steps=["s"], kinds=["children"], children=[child_id])
    assert s.suspend(parent_id, parent.token, wait) == "suspended"
    child = s.claim((cq,), 60_000, new_token())[1]
    assert child is not None and child.id == child_id
    assert s.finalize(child_id, child.token, "succeeded", b"1") == "succeeded"  # wakes the parent
    assert status_of(raw, cl, parent_id) == "queued"
    assert raw.pttl(k.idempotency(f"c{n}", f"idem{n}")) > 0  # expire_idempotency


def _reap_and_wake_timers(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    k, s, q = cl.keys, cl.scripts, f"rq{n}"
    r = enq(queue=q, max_attempts=3)
    got = s.claim((q,), 60_000, new_token())[1]
    assert got is not None and got.id == r
    raw.zadd(k.leases, {r: 1})  # its lease expired long ago
    assert r in s.reap(100)[1]  # requeue, in reap_runs
    assert status_of(raw, cl, r) == "queued"
    now = cl.server_time_ms()
    sl = enq(workflow=f"sl{n}", queue=f"sq{n}")
    run = s.claim((f"sq{n}",), 60_000, new_token())[1]
    assert run is not None and run.id == sl
    wait = RunWait(steps=["z"], kinds=["sleep"], wake_at=now + 3_600_000)
    assert s.suspend(sl, run.token, wait) == "suspended"
    raw.zadd(k.timers, {sl: 1})  # due now
    assert s.wake_timers(100)[0] >= 1  # wake
    assert status_of(raw, cl, sl) == "queued"


def _lost_lease_and_clock_ahead(raw: Any, cl: Client, enq: Enq, n: int) -> None:
    k, s, q, wf = cl.keys, cl.scripts, f"lq{n}", f"lost{n}"
    r1 = enq(wf, queue=q, max_concurrency=1)
    r2 = enq(wf, queue=q, max_concurrency=1)
    assert s.claim((q,), 60_000, new_token())[1] is not None
    assert s.claim((q,), 60_000, new_token())[1] is None  # r2 parked
    raw.zrem(k.leases, r1)  # its leases entry removed behind our back
    assert r1 in s.reap(100)[1]  # put back by the reaper's slot check
    assert status_of(raw, cl, r1) == "queued"
    assert raw.zscore(k.q_ready(q), r2) is not None  # released
    # a sleep suspended at a clock a day ahead: woken by wake_timers' clock check
    now = cl.server_time_ms()
    sl = enq(workflow=f"ah{n}", queue=f"aq{n}")
    run = s.claim((f"aq{n}",), 60_000, new_token())[1]
    assert run is not None and run.id == sl
    wait = RunWait(steps=["z"], kinds=["sleep"], wake_at=now + 3_600_000)
    assert s.suspend(sl, run.token, wait) == "suspended"
    raw.zadd(k.runs_status("suspended"), {sl: now + 86_400_000})
    s.wake_timers(100)
    assert status_of(raw, cl, sl) == "queued"


def _snapshot(raw: Any, prefix: str) -> dict[bytes, tuple[bytes, int]]:
    """Each key of ``prefix``: its value and its expiry (the time, on Redis >= 7)."""
    at = int(str(raw.info("server")["redis_version"]).split(".")[0]) >= 7

    def expiry(key: bytes) -> int:
        return int(raw.execute_command("PEXPIRETIME", key)) if at else int(raw.pttl(key) >= 0)

    return {key: (raw.dump(key), expiry(key)) for key in raw.scan_iter(match=f"*{prefix}*")}


@pytest.mark.parametrize(
    "path",
    [
        _retry_and_requeue,
        _release_parked,
        _claim_faults,
        _wake_parent_and_idempotency,
        _reap_and_wake_timers,
        _lost_lease_and_clock_ahead,
    ],
)
@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "fcall"])
def test_two_prefixes_on_one_library_each_touch_only_their_own_keys(
    raw: Any,
    prefix: str,
    make_client: Callable[..., Client],
    path: Callable[[Any, Client, Enq, int], None],
    functions: bool,
) -> None:
    if functions and int(str(raw.info("server")["redis_version"]).split(".")[0]) < 7:
        pytest.skip("function libraries need Redis >= 7")
    names = (f"{prefix}-A", f"{prefix}-B")  # neither a substring of the other
    clients = [make_client(prefix=p, redis_functions=functions) for p in names]
    enqs = [Enq(c) for c in clients]
    before = set(raw.scan_iter())  # other tests' keys on this server
    for n in range(2):
        for i in (0, 1):
            other = _snapshot(raw, names[1 - i])
            path(raw, clients[i], enqs[i], n)
            assert _snapshot(raw, names[1 - i]) == other, f"{names[i]} wrote {names[1 - i]}'s keys"
            strays = [
                key
                for key in raw.scan_iter()
                if key not in before and not any(p.encode() in key for p in names)
            ]
            assert strays == [], f"keys of neither prefix: {strays}"
