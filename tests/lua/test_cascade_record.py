"""The cancel cascade owed (``cascades``): recorded by the script that ends a run
with children ``canceled``, removed by the walk or a resume, finished by
``cascade.finish_pending`` when its canceller left it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.cascade import _print, finish_pending
from redflow_mp.ids import new_token
from redflow_mp.maintenance import stores
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(30)


def _family(raw: redis.Redis, client: Client, enq: Callable[..., str]) -> tuple[str, str]:
    parent = enq()
    child = enq(workflow="kid", parent=parent)
    raw.sadd(client.keys.run_children(parent), child)
    return parent, child


def test_the_cancel_script_records_the_cascade_owed_and_the_walk_removes_it(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent, child = _family(raw, client, enq)
    lone = enq()
    assert client.scripts.cancel(parent, "") == "canceled"
    assert client.scripts.cancel(lone, "") == "canceled"
    assert raw.zscore(client.keys.cascades, parent) is not None
    assert raw.zscore(client.keys.cascades, lone) is None  # no children: nothing owed
    assert client.cancel_children(parent) == 1
    assert status_of(raw, client, child) == "canceled"
    assert raw.zscore(client.keys.cascades, parent) is None


def test_a_resume_removes_the_cascade_owed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent, child = _family(raw, client, enq)
    assert client.scripts.cancel(parent, "") == "canceled"
    client.resume_run(parent)
    assert raw.zscore(client.keys.cascades, parent) is None
    assert finish_pending(client, stores(client)[0], age_ms=0) == []
    assert status_of(raw, client, child) == "queued"


def test_finish_pending_walks_the_old_entries_only(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent, child = _family(raw, client, enq)
    assert client.scripts.cancel(parent, "") == "canceled"  # its canceller "died" here
    store = stores(client)[0]
    assert finish_pending(client, store) == []  # younger than PENDING_AGE_MS
    assert status_of(raw, client, child) == "queued"
    assert finish_pending(client, store, age_ms=0) == [parent]
    assert status_of(raw, client, child) == "canceled"
    assert raw.zcard(client.keys.cascades) == 0


def test_a_running_parent_that_ends_canceled_records_the_cascade_owed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The worker's path: a cancel asked of a running parent, then its finish
    (finalize_run) ends it canceled: the same call records the cascade, so a
    worker killed before its walk leaves it to the supervisor."""
    parent, child = _family(raw, client, enq)
    _, run = client.scripts.claim(("q",), 5_000, new_token())
    assert run is not None and run.id == parent
    assert client.scripts.cancel(parent, "") == "running"
    assert raw.zscore(client.keys.cascades, parent) is None  # not canceled yet
    assert client.scripts.finalize(parent, run.token, "succeeded", b'"ok"') == "canceled"
    assert raw.zscore(client.keys.cascades, parent) is not None
    assert finish_pending(client, stores(client)[0], age_ms=0) == [parent]
    assert status_of(raw, client, child) == "canceled"


def test_a_first_walk_ending_after_a_resume_and_a_second_cancel_keeps_the_second_record(
    raw: redis.Redis,
    client: Client,
    enq: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancel, resume and cancel again while the first cancel's walk is still
    under way: the first walk's end must not remove the record the second
    cancel wrote, else a second canceller that dies before its walk leaves the
    children running for good (the supervisor's duty finds no record)."""
    parent, child = _family(raw, client, enq)
    assert client.scripts.cancel(parent, "") == "canceled"  # the first cancel
    real = client._cancel_many

    def interleaved(ids: list[str], why: str, parent_id: str) -> list[tuple[str | None, bool]]:
        out = real(ids, why, parent_id)  # the first walk cancels the child...
        assert status_of(raw, client, child) == "canceled"
        client.resume_run(parent)  # ...the parent is resumed (its replay resumes
        client.resume_run(child)  # the child), then canceled again by a second
        assert client.scripts.cancel(parent, "") == "canceled"  # canceller that dies
        return out

    monkeypatch.setattr(client, "_cancel_many", interleaved)
    assert client.cancel_children(parent) == 1  # the first walk ends here
    monkeypatch.undo()
    assert raw.zscore(client.keys.cascades, parent) is not None, "the second cancel's record"
    assert finish_pending(client, stores(client)[0], age_ms=0) == [parent]
    assert status_of(raw, client, child) == "canceled"
    assert raw.zcard(client.keys.cascades) == 0


def test_cascade_at_marks_only_an_existing_run_of_the_generation_read(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Where a cut walk stopped (``cascadeAt``): written only on the run hash of the
    generation the walk read (a later cancel's walk starts afresh), never on a
    run gone meanwhile (a run key of one field), removed with the entry."""
    parent, child = _family(raw, client, enq)
    assert client.scripts.cancel(parent, "") == "canceled"
    run = client.keys.run(parent)
    gen = raw.hget(run, "cascadeGen")
    assert gen == b"1"

    def mark(key: str, gen: str, last: str) -> int:
        return int(client.scripts.run("cascade_at", (key,), (gen, last), retry=True))

    assert mark(run, "0", child) == 0  # another generation's walk
    assert raw.hget(run, "cascadeAt") is None
    assert mark(run, "1", child) == 1
    assert raw.hget(run, "cascadeAt") == f"1:{child}".encode()
    gone = client.keys.run("gone-run")
    assert mark(gone, "", "child") == 0
    assert raw.exists(gone) == 0
    raw.set(gone, "x")  # a key of another type: refused, not an error
    assert mark(gone, "", "child") == 0
    assert client.cancel_children(parent) == 0  # its one child was sent its cancel
    assert status_of(raw, client, child) == "queued"  # (by the "walk" marked above)
    assert raw.zscore(client.keys.cascades, parent) is None
    assert raw.hget(run, "cascadeAt") is None  # gone with the entry


def test_a_walk_cut_by_its_limit_goes_on_after_the_last_child_sent(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent = enq()
    children = sorted(enq(workflow="kid", parent=parent) for _ in range(5))
    raw.sadd(client.keys.run_children(parent), *children)
    assert client.scripts.cancel(parent, "") == "canceled"
    assert client.cancel_children(parent, None, 2) == 2
    assert [status_of(raw, client, c) for c in children] == ["canceled"] * 2 + ["queued"] * 3
    # (a small set is one SSCAN page: cursor 0; 5 children when the cascade began;
    # the fingerprint of the page)
    at = f"1:!0:5:{_print(children)}:{children[1]}"
    assert raw.hget(client.keys.run(parent), "cascadeAt") == at.encode()
    assert raw.zscore(client.keys.cascades, parent) is not None
    assert client.cancel_children(parent, None, 2) == 2
    assert client.cancel_children(parent, None, 2) == 1
    assert all(status_of(raw, client, c) == "canceled" for c in children)
    assert raw.zscore(client.keys.cascades, parent) is None
