"""Run ids (time-ordered ULID layout) and lease tokens."""

from __future__ import annotations

import itertools
import re
import threading

import pytest

from redflow_mp.ids import new_run_id, new_token

pytestmark = pytest.mark.timeout(10)

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_run_id_format() -> None:
    for _ in range(100):
        assert _ULID.match(new_run_id())


def test_run_id_digits_are_those_of_the_130_bit_value() -> None:
    """The id is written pair by pair over parts of at most 30 bits (ids.py): the
    same digits as the 130-bit value's 13 pairs of 10 bits."""
    import random

    from redflow_mp import ids

    rng = random.Random(7)
    cases = [(0, 0), (2**48 - 1, 2**80 - 1), (1_764_979_200_000, 1)]
    cases += [(rng.getrandbits(48), rng.getrandbits(80)) for _ in range(2_000)]
    for ms, rand in cases:
        value = (ms << 80) | rand
        want = "".join(ids._PAIRS[(value >> s) & 1023] for s in range(120, -1, -10))
        assert ids._digits(ms, rand) == want, (ms, rand)


def test_the_next_id_of_one_ms_rewrites_its_last_pair_and_carries() -> None:
    """Ids of one ms: random part + 1, written by rewriting the last pair of digits
    unless the increment carries out of it (then written whole)."""
    from redflow_mp import ids

    state = ids._Monotonic()
    far = 10**15  # a ms later than the clock: every id stays in it
    for start in (5, 1020, 2**80 - 3):
        state.last_ms, state.last_rand = far, start
        state.digits = ids._digits(far, start)
        for i in range(1, 6):
            got = state.next_id()
            rand = start + i
            if rand >= 2**80:  # borrowed the next ms, a new random part
                assert state.last_ms == far + 1 and got == ids._digits(far + 1, state.last_rand)
                break
            assert (state.last_ms, state.last_rand) == (far, rand)
            assert got == ids._digits(far, rand)


def test_the_first_id_of_a_ms_is_the_value_it_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id of a new ms is written from os.urandom's bytes as digits (ids.py), its
    time's first 8 digits kept per 1,024 ms: its digits are those of the ms and
    random part kept for the next id of the same ms, across 1,024-ms boundaries."""
    import types

    from redflow_mp import ids

    clock = [0]
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: clock[0] * 1_000_000))
    state = ids._Monotonic()
    seen = set()
    for ms in (
        1_764_979_199_999,
        1_764_979_200_000,
        1_764_979_201_023,
        1_764_979_201_024,
        2**48 - 1,
    ):
        clock[0] = ms
        got = state.next_id()
        assert state.last_ms == ms and got == ids._digits(ms, state.last_rand)
        assert 0 <= state.last_rand < 2**80 and _ULID.match(got)
        seen.add(state.last_rand)
        nxt = state.next_id()  # the same ms: random part + 1, from the kept value
        assert nxt == ids._digits(ms, state.last_rand) and nxt > got
    assert len(seen) == 5


def test_run_ids_sort_by_time() -> None:
    assert new_run_id(1_000) < new_run_id(2_000) < new_run_id(10**12)


def test_run_ids_are_monotonic_within_one_process() -> None:
    # runs:created ties (same millisecond) are ordered by id, so ids made one
    # after the other must sort in creation order for "newest first" to hold.
    ids = [new_run_id() for _ in range(5_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_run_ids_are_unique_across_threads() -> None:
    out: list[list[str]] = []

    def make() -> None:
        out.append([new_run_id() for _ in range(2_000)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for chunk in out for i in chunk]
    assert len(set(flat)) == len(flat) == 8_000


def test_tokens_are_random_and_distinct() -> None:
    tokens = {new_token() for _ in range(1_000)}
    assert len(tokens) == 1_000
    assert all(re.fullmatch(r"[0-9a-f]{24}", t) for t in tokens)


def test_tokens_of_two_processes_and_of_threads_never_collide() -> None:
    """A token is a per-process random prefix and a counter (no os.urandom a
    claim): a forked child draws its own prefix (the fork hook), threads never share a count,
    and a spent counter draws a new prefix instead of wrapping around."""
    from redflow_mp import ids

    mine = {new_token() for _ in range(100)}
    parent = ids._tokens
    ids._reset_after_fork()  # what os.fork runs in the child (register_at_fork)
    try:
        child = {new_token() for _ in range(100)}
    finally:
        ids._tokens = parent
    assert len(child) == 100 and not child & mine
    assert len({t[:16] for t in child}) == 1 and {t[:16] for t in child} != {t[:16] for t in mine}

    out: list[list[str]] = [[] for _ in range(4)]

    def make(chunk: list[str]) -> None:
        chunk.extend(new_token() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out[i],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [t for chunk in out for t in chunk]
    assert len(set(flat)) == len(flat) == 20_000

    spent = ids._tokens
    spent.count = itertools.count(ids._TOKEN_LIMIT - 1)
    last, after = new_token(), new_token()
    assert last == spent.prefix + "ffffffff"
    assert ids._tokens is not spent and after == ids._tokens.prefix + "00000000"
    assert ids._tokens.prefix != spent.prefix


def test_monotonic_state_is_reset_in_a_forked_child() -> None:
    # A forked child must not continue the parent's sequence (same ms + same
    # random part + 1 would collide); ids.py resets its state at fork.
    from redflow_mp import ids

    new_run_id()
    parent_state = ids._state
    ids._reset_after_fork()
    try:
        assert ids._state is not parent_state
        assert ids._state.last_ms == -1
    finally:
        ids._state = parent_state
