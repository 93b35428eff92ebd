"""An orphan's cancel check (``childlife.CancelCheck``) reads Redis on a thread of
its own so that a stalled Redis does not hold up the orphan watch. The watch
calls it once a second and must never see it raise: an exception there ends the
watch thread, and with it the orphan's beats and its enforcement of the run's
timeout and ``cancel_grace``. A thread that cannot start (the handler used up
the process's threads, RLIMIT_NPROC, no memory for a stack) raised
RuntimeError from ``Thread.start`` through the call, and left the check marked
"asking" for good, so no cancel was seen again."""

from __future__ import annotations

import threading
import time

import pytest

from redflow_mp.client import Client
from redflow_mp.ids import new_run_id
from redflow_supervisor.childlife import CancelCheck


def test_a_thread_that_cannot_start_neither_raises_nor_stops_later_checks(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = new_run_id()
    shard = client.shard_of_run(run_id)
    shard.redis.hset(shard.keys.run(run_id), "cancelRequestedAt", "1")
    check = CancelCheck()
    check.client = client

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert check(run_id) is False  # no thread to ask on: not known yet, no exception
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while not check(run_id):  # asked again, on a thread that starts now
        assert time.monotonic() < deadline, "the cancel was never seen again"
        time.sleep(0.05)
