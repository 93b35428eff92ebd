"""The helpers of the rarer exits are made on first use by their makers
(exit_helpers in _lib.lua, retry_helpers in _lib_retry.lua, claim_faults in
_lib_runs.lua): per call in an EVALSHA, once per load in the function library
(kept across calls). Each rare path of claim_run taken in two rounds over one
client (one library), between common finishes: the second round runs on what
the first made, and each path still does what it did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from redflow_mp import Client
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_token
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(60)

_ERR = msgspec.json.encode({"type": "ValueError", "message": "x"})


def test_each_rare_exit_of_a_claim_works_again_on_the_helpers_made_before(
    raw: Any, cl: Client, enq: Callable[..., str]
) -> None:
    k = cl.keys
    s = cl.scripts
    for n in range(2):
        q = f"q{n}"
        # a retry finishing the run claims it again (retry_helpers; record_attempt)
        a = enq(queue=q, max_attempts=3)
        tok = new_token()
        _, got = s.claim((q,), 60_000, tok)
        assert got is not None and got.id == a
        tok2 = new_token()
        done, got = s.claim((q,), 60_000, tok2, finish=("retry", a, tok, _ERR, 0))
        assert done == "queued" and got is not None and got.id == a and got.attempt == 2
        assert raw.llen(k.run_attempts(a)) == 1
        # a put-back, then the common finish
        tok3 = new_token()
        done, got = s.claim((q,), 60_000, tok3, finish=("requeue", a, tok2, "stopping", 0))
        assert done == "queued" and got is not None and got.id == a
        assert raw.llen(k.run_attempts(a)) == 2
        assert s.claim((q,), 60_000, "", finish=("succeeded", a, tok3, b"1", 0))[0] == "succeeded"
        assert status_of(raw, cl, a) == "succeeded"

        # a finish that frees a slot releases the parked run (release_parked) and claims it
        wf = f"one{n}"
        p1 = enq(wf, queue=q, max_concurrency=1)
        p2 = enq(wf, queue=q, max_concurrency=1)
        t1 = new_token()
        _, got = s.claim((q,), 60_000, t1)
        assert got is not None and got.id == p1
        assert s.claim((q,), 60_000, new_token())[1] is None  # p2 parked
        assert raw.zrange(k.wf_waiting(wf), 0, -1) == [p2.encode()]
        t2 = new_token()
        done, got = s.claim((q,), 60_000, t2, finish=("succeeded", p1, t1, b"1", 0))
        assert done == "succeeded" and got is not None and got.id == p2
        assert s.claim((q,), 60_000, "", finish=("failed", p2, t2, _ERR, 0))[0] == "failed"

        # a corrupted record fails its run (claim_faults: fail_corrupt)
        c = enq(queue=q)
        raw.hset(k.run(c), "attempt", "x")
        assert s.claim((q,), 60_000, new_token())[1] is None
        assert status_of(raw, cl, c) == "failed"

        # a key of another type gives the run back and fails the call (give_back)
        bad_wf = f"bad{n}"
        raw.set(k.workflow(bad_wf), "not a redflow key")
        g = enq(bad_wf, queue=q)
        with pytest.raises(WrongTypeError, match=k.workflow(bad_wf)):
            s.claim((q,), 60_000, new_token())
        assert status_of(raw, cl, g) == "queued"
        assert raw.zscore(k.q_ready(q), g) is not None
        assert raw.scard(k.wf_running(bad_wf)) == 0
