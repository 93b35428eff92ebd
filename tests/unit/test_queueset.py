"""queueset.QueueLists: the queue arguments of claim_run (names up to 32, else the
digest of a registered list; a scan the first time, every SCAN_EVERY s, on ask)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from redflow_mp import queueset
from redflow_mp.queueset import QueueLists, digest


def test_up_to_32_queues_the_names_ride_rotated_by_the_turn() -> None:
    lists = QueueLists()
    qs = ("a", "b", "c")
    assert lists.args(qs, 0, False) == (3, "a", "b", "c")
    assert lists.args(qs, 4, True) == (3, "b", "c", "a")


def test_past_32_queues_a_digest_and_a_scan_the_first_time_and_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("redflow_mp.queueset.time", SimpleNamespace(monotonic=lambda: clock[0]))
    lists = QueueLists()
    qs = tuple(f"q{i}" for i in range(40))
    assert lists.args(qs, 41, False) == (-1, digest(qs), 40, 1, "1")
    assert lists.args(qs, 2, False) == (-1, digest(qs), 40, 2, "")
    assert lists.args(qs, 2, True)[-1] == "1"
    clock[0] += queueset.SCAN_EVERY
    assert lists.args(qs, 2, False)[-1] == "1"
    assert lists.register(qs, 3) == (40, *qs, digest(qs), 3)


def test_each_list_gets_its_own_digest_order_included() -> None:
    lists = QueueLists()
    one = tuple(f"q{i}" for i in range(40))
    two = tuple(reversed(one))
    assert digest(one) != digest(two)
    assert digest(("ab", "c") * 20) != digest(("a", "bc") * 20)  # length-prefixed
    for _ in range(3):
        assert lists.args(one, 0, False)[1] == digest(one)
        assert lists.args(two, 0, False)[1] == digest(two)
