"""claim_run's deferred rings: a finish whose freed slot releases a parked run rings
that run's bell only if the claim riding on the finish did not take the run itself
(RING_LATER in _lib.lua), and rings it even when that claim fails."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, create_client
from redflow_mp.claimed import Finish
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_run_id, new_token
from tests.helpers import command

pytestmark = pytest.mark.timeout(30)


def test_a_released_run_taken_by_the_same_call_rings_no_bell(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Before the fix the release rang at once: one LPUSH on the bell per finish, and
    an idle worker woke for a run that was already taken (bell length 1, not 0)."""
    k = client.keys
    first, second = enq(max_concurrency=1), enq(max_concurrency=1)
    token = new_token()
    _, got = client.scripts.claim(("q",), 5_000, token)
    assert got is not None and got.id == first
    assert client.scripts.claim(("q",), 5_000, new_token()) == ("", None)  # parks `second`
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [second.encode()]
    raw.delete(k.q_bell("q"))
    status, nxt = client.scripts.claim(
        ("q",), 5_000, new_token(), Finish("succeeded", first, token, b'"ok"')
    )
    assert status == "succeeded"
    assert nxt is not None and nxt.id == second
    assert raw.llen(k.q_bell("q")) == 0  # nobody woken for it
    assert not raw.exists(k.wf_waiting("wf"))


def test_a_released_run_left_ready_by_the_claim_rings_its_bell(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The claim riding on the finish serves another queue only: the released run
    stays ready and its bell rings, as a finish without a claim does."""
    k = client.keys
    first, second = enq(max_concurrency=1), enq(max_concurrency=1)
    token = new_token()
    _, got = client.scripts.claim(("q",), 5_000, token)
    assert got is not None and got.id == first
    assert client.scripts.claim(("q",), 5_000, new_token()) == ("", None)
    raw.delete(k.q_bell("q"))
    status, nxt = client.scripts.claim(
        ("other",), 5_000, new_token(), Finish("succeeded", first, token, b'"ok"')
    )
    assert (status, nxt) == ("succeeded", None)
    assert raw.zrange(k.q_ready("q"), 0, -1) == [second.encode()]
    assert raw.llen(k.q_bell("q")) == 1


@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "library"])
def test_a_claim_that_fails_after_a_release_still_rings_and_leaves_no_deferral(
    raw: redis.Redis, redis_url: str, prefix: str, functions: bool
) -> None:
    """The claim after the finish fails (a neighbour's key of the wrong type): the run
    the finish released is rung for all the same; and with a function library, whose
    locals outlive a call, the next script (a plain finalize) rings at once instead of
    deferring into a list nobody flushes (that finalize's bell stayed empty)."""
    client = create_client(redis_url, prefix=prefix, default=False, redis_functions=functions)
    try:
        k = client.keys
        s = client.scripts
        ids = [new_run_id() for _ in range(4)]
        for rid in ids:
            s.enqueue(rid, "wf", "q", b"{}", 1, 0, "", 1000, "", "", 2, None)
        tokens = [new_token(), new_token()]
        for i, t in enumerate(tokens):
            _, got = s.claim(("q",), 5_000, t)
            assert got is not None and got.id == ids[i]
        assert s.claim(("q",), 5_000, new_token()) == ("", None)  # parks ids[2], ids[3]
        assert raw.zcard(k.wf_waiting("wf")) == 2
        # a run of another workflow at the head (priority 9) whose slot set is a string
        bad = new_run_id()
        s.enqueue(bad, "bad", "q", b"{}", 1, 0, "", 1000, "", "", None, None, priority=9)
        raw.set(k.wf_running("bad"), "not a set")
        raw.delete(k.q_bell("q"))
        with pytest.raises(WrongTypeError):
            s.claim(("q",), 5_000, new_token(), Finish("succeeded", ids[0], tokens[0], b"1"))
        assert raw.hget(k.run(ids[0]), "status") == b"succeeded"  # the finish was applied
        assert raw.zscore(k.q_ready("q"), ids[2]) is not None  # and released ids[2]
        assert raw.llen(k.q_bell("q")) == 1  # rung despite the failed claim
        raw.delete(k.q_bell("q"))
        assert s.finalize(ids[1], tokens[1], "succeeded", b"1") == "succeeded"
        assert raw.zscore(k.q_ready("q"), ids[3]) is not None
        assert raw.llen(k.q_bell("q")) == 1
    finally:
        client.close()
        if functions and client.transport.server_version() >= (7, 0):
            command(raw, "FUNCTION", "FLUSH")
