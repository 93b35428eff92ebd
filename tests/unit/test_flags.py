"""LazyEvent: a threading.Event made without its condition, which behaves as one."""

from __future__ import annotations

import threading
import time

from redflow_mp.flags import LazyEvent


def test_lazy_event_is_an_event_that_sets_waits_and_clears() -> None:
    e = LazyEvent()
    assert isinstance(e, threading.Event)
    assert "_lazy_cond" not in e.__dict__  # nothing made until needed
    assert not e.is_set()
    started = time.monotonic()
    assert e.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    timer = threading.Timer(0.05, e.set)
    timer.start()
    assert e.wait(5) is True  # woken by a set from another thread
    assert e.is_set()
    e.clear()
    assert not e.is_set()
    e.set()
    assert e.wait(0) is True
    assert "set" in repr(e)
    assert not LazyEvent().is_set()  # a set of one is not seen by another


def test_a_new_lazy_event_has_no_flag_of_its_own_until_set_or_cleared() -> None:
    e = LazyEvent()
    assert "_flag" not in e.__dict__ and not e.is_set() and not e.wait(0)
    e.set()
    assert e.__dict__["_flag"] is True and e.is_set()
    f = LazyEvent()
    f.clear()
    assert f.__dict__["_flag"] is False and not f.is_set()


def test_many_threads_waiting_on_one_lazy_event_are_all_woken() -> None:
    e = LazyEvent()
    woken: list[bool] = []
    threads = [threading.Thread(target=lambda: woken.append(e.wait(5))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    e.set()
    for t in threads:
        t.join(5)
    assert woken == [True] * 8
