"""Run ids (time-ordered ULID layout) and lease tokens."""

from __future__ import annotations

import re
import threading

import pytest

from redflow_mp.ids import new_run_id, new_token

pytestmark = pytest.mark.timeout(10)

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_run_id_format() -> None:
    for _ in range(100):
        assert _ULID.match(new_run_id())


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
