"""A function library serves every prefix, and its locals (RING_LATER, DROPPED)
outlive a call: a claim_run that deferred a ring and then raised must leave no
deferral, and no dropped entry, to the next call, least of all to a call for
another prefix (review of branch luacut: RING_LATER became lazily a table)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redflow_mp import Client, create_client
from redflow_mp.ids import new_run_id, new_token
from tests.helpers import command

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def pair(redis_url: str, prefix: str, raw: redis.Redis) -> Iterator[tuple[Client, Client]]:
    one = create_client(redis_url, prefix=prefix + "-a", default=False, redis_functions=True)
    two = create_client(redis_url, prefix=prefix + "-b", default=False, redis_functions=True)
    try:
        yield one, two
    finally:
        one.close()
        two.close()
        if one.transport.server_version() >= (7, 0):
            command(raw, "FUNCTION", "FLUSH")


def _parked(c: Client) -> tuple[str, str, str]:
    """(running run, its token, a run parked behind it: max_concurrency 1)."""
    s = c.scripts
    first, second = new_run_id(), new_run_id()
    for rid in (first, second):
        s.enqueue(rid, "wf", "q", b"{}", 1, 0, "", 1000, "", "", 1, None)
    token = new_token()
    _, got = s.claim(("q",), 5_000, token)
    assert got is not None and got.id == first
    assert s.claim(("q",), 5_000, new_token()) == ("", None)  # parks `second`
    return first, token, second


def test_a_call_that_defers_a_ring_then_raises_leaks_nothing_to_another_prefix(
    raw: redis.Redis, pair: tuple[Client, Client]
) -> None:
    a, b = pair
    a_first, a_token, a_second = _parked(a)
    b_first, b_token, b_second = _parked(b)
    ka, kb = a.keys, b.keys
    raw.delete(ka.q_bell("q"), kb.q_bell("q"))
    # Prefix a: a resent claim (flags '2') riding on a finish that releases
    # a_second (its ring deferred: RING_LATER holds it), then raising in the
    # resend's lookup (a lease_ms that is no number: arithmetic on nil), past the
    # finish and before any flush.
    args = (a.scripts._tag, "x", new_token(), "succeeded", a_first, a_token, '"ok"', 0, "",
            "2", 1, "q")  # fmt: skip
    with pytest.raises(redis.ResponseError):
        a.scripts._claim_run((ka.q_ready("q"),), args)
    assert raw.hget(ka.run(a_first), "status") == b"succeeded"  # the finish was applied
    assert raw.zscore(ka.q_ready("q"), a_second) is not None  # and released a_second
    # Prefix b, next call on the same library: a plain finalize releasing b_second
    # rings b's bell at once, and nothing of prefix a's call is rung under b.
    assert b.scripts.finalize(b_first, b_token, "succeeded", b"1") == "succeeded"
    assert raw.zscore(kb.q_ready("q"), b_second) is not None
    assert raw.llen(kb.q_bell("q")) == 1, "b's release was deferred into a's leftover list"
    assert raw.llen(ka.q_bell("q")) == 0
    # And a claim on b after it: steady-state reply, no dropped list of a's.
    raw.delete(kb.q_bell("q"))
    reply = b.scripts._claim_run(
        (kb.q_ready("q"),), (b.scripts._tag, 5000, new_token(), "", "", "", "", 0, "", "", 1, "q")
    )
    assert len(reply) == 2, reply  # no dropped entries (a's or any)
    assert reply[1] and reply[1][0] == b_second.encode()
    assert raw.llen(kb.q_bell("q")) == 0
    assert raw.llen(ka.q_bell("q")) == 0


def test_dropped_entries_of_one_call_are_not_reported_by_the_next(
    raw: redis.Redis, pair: tuple[Client, Client]
) -> None:
    """A claim that dropped a ready entry (its run record gone) and then raised: the
    next claim (another prefix) reports no dropped entry of it."""
    a, b = pair
    ka, kb = a.keys, b.keys
    gone = new_run_id()
    a.scripts.enqueue(gone, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None, priority=9)
    raw.delete(ka.run(gone))  # its ready entry stays: take drops it (DROPPED)
    bad = new_run_id()
    a.scripts.enqueue(bad, "bad", "q", b"{}", 1, 0, "", 1000, "", "", None, None)
    raw.set(ka.wf_running("bad"), "not a set")  # the claim then raises (WRONGTYPE)
    with pytest.raises(redis.ResponseError):
        a.scripts._claim_run(
            (ka.q_ready("q"),),
            (a.scripts._tag, 5000, new_token(), "", "", "", "", 0, "", "", 1, "q"),
        )
    assert raw.zscore(ka.q_ready("q"), gone) is None  # it was dropped (DROPPED set)
    ok = new_run_id()
    b.scripts.enqueue(ok, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None)
    reply = b.scripts._claim_run(
        (kb.q_ready("q"),), (b.scripts._tag, 5000, new_token(), "", "", "", "", 0, "", "", 1, "q")
    )
    assert len(reply) == 2, reply  # a's dropped entry is not reported under b
    assert reply[1][0] == ok.encode()
