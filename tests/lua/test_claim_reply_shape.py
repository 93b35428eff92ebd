"""claim_run's reply carries no empty table on the steady state (each table of a
script's reply costs redis-server's conversion about 3,500 instructions): no
`dropped` list when nothing was dropped, '' for the steps of a run that never
started, no unread/unreadBytes when every step record is in the reply. The worker
reads the shorter replies as it read the long ones (``Scripts.claim``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from redflow_mp.luafiles import load_sources


def _claim_raw(cl: Client, token: str, finish: tuple[str, str, str] | None = None) -> Any:
    mode, rid, held = finish or ("", "", "")
    payload = "null" if mode else ""
    args = (cl.keys.tag, 60_000, token, mode, rid, held, payload, 0, "", 0, 1, "q")
    return cl.scripts.run("claim_run", (cl.keys.q_ready("q"),), args, retry=False, fresh=False)


def test_steady_state_reply_has_no_empty_table(
    raw: redis.Redis, cl: Client, enq: Callable[..., str]
) -> None:
    first, second = enq(), enq()
    t1 = new_token()
    reply = _claim_raw(cl, t1)
    assert len(reply) == 2, reply  # no dropped list
    assert reply[0] == b""
    assert reply[1][0] == first.encode()
    assert len(reply[1]) == 13 and reply[1][11] == b"", reply[1]  # steps '', no unread
    t2 = new_token()
    reply = _claim_raw(cl, t2, ("succeeded", first, t1))
    assert reply[0] == b"succeeded" and len(reply) == 2
    assert reply[1][0] == second.encode() and reply[1][11] == b""
    # the worker's reading of it
    status, got = cl.scripts.claim(("q",), 60_000, new_token(), None)
    assert status == "" and got is None  # nothing left
    assert raw.hget(cl.keys.run(second), "lease") == t2.encode()


def test_dropped_entries_and_steps_still_come_back(
    raw: redis.Redis, cl: Client, enq: Callable[..., str]
) -> None:
    k = cl.keys
    raw.zadd(k.q_ready("q"), {"NO-SUCH-RUN": 1})
    started = enq(max_concurrency=10)
    raw.hset(k.run(started), "startedAt", "1")  # a run that ran before: its steps come
    raw.hset(k.run_steps(started), "s1", "rec")
    reply = _claim_raw(cl, new_token())
    assert reply[2] == [b"q NO-SUCH-RUN"]
    assert reply[1][0] == started.encode()
    assert reply[1][11] == [b"s1", b"rec"]
    fresh = enq(max_concurrency=10)
    status, got = cl.scripts.claim(("q",), 60_000, new_token(), None)
    assert status == "" and got is not None and got.id == fresh and got.steps == {}


def test_bad_integer_fields_are_still_named(
    raw: redis.Redis, cl: Client, enq: Callable[..., str]
) -> None:
    """One find of a non-digit over the integer fields, then the field is named."""
    k = cl.keys
    bad = {}
    for field, value in (("availableAt", "1,2"), ("timeoutMs", "-5"), ("maxAttempts", "2\x00")):
        rid = enq()
        raw.hset(k.run(rid), field, value)
        bad[rid] = field
    fine = enq()
    raw.hset(k.run(fine), "timeoutMs", "")  # empty: allowed
    _, got = cl.scripts.claim(("q",), 60_000, new_token(), None)
    assert got is not None and got.id == fine
    for rid, field in bad.items():
        assert raw.hget(k.run(rid), "status") == b"failed"
        error = raw.hget(k.run(rid), "errorJson") or b""
        assert f"field {field} is not an integer".encode() in error


def test_steady_state_text_builds_no_constant_table() -> None:
    """The EVALSHA text of claim_run makes no TERMINAL/KNOWN_STATUS/TAKE_FIELDS table
    and names no library constant (written out: luasrc.inline_constants)."""
    for version in ((6, 2), (7, 0)):
        text = load_sources(version)["claim_run"]
        for name in ("TERMINAL", "KNOWN_STATUS", "TAKE_FIELDS", "BELL_CAP", "STEPS_INLINE", "BAND"):
            assert f"\nlocal {name} =" not in text, name
        assert "unpack(TAKE_FIELDS)" not in text
        assert "n <= 1000 and" in text  # STEPS_INLINE written out
