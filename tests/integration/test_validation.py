"""Validation at enqueue: a process that has the workflow's definition (the
``Workflow`` object, or ``run_by_name`` with its registry) checks the input
against the ``schema`` before anything is written and raises
``InputValidationError`` at the call site; the stored input is the input as
given. A process without the definition enqueues, and the worker validates (as
before: ``test_execution.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    InputValidationError,
    Registry,
    RunFailedError,
    RunStatus,
    define_workflow,
)
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


class Resize(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    width: int = 100
    at: datetime | None = None


def _resize(registry: Registry, name: str = "resize") -> Any:
    @define_workflow(name, queue="media", schema=Resize, registry=registry)
    def resize(ctx: Context[Resize]) -> dict[str, Any]:
        return {"url": ctx.input.url, "width": ctx.input.width}

    return resize


def _nothing_written(raw: redis.Redis, client: Client) -> bool:
    return raw.zcard(client.keys.runs_created) == 0 and raw.zcard(client.keys.q_ready("media")) == 0


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"url": 5}, r"Expected `str`, got `int` - at `\$.url`"),
        ({"width": 3}, r"missing required field `url`"),
        ({"url": "u", "height": 3}, r"unknown field `height`"),
        ([1, 2], r"Expected `object`, got `array`"),
        (None, r"Expected `object`, got `null`"),
    ],
)
def test_a_workflow_object_refuses_bad_input_at_the_call_site(
    raw: redis.Redis, client: Client, registry: Registry, bad: Any, says: str
) -> None:
    resize = _resize(registry)
    with pytest.raises(InputValidationError, match=r"input does not match the schema of 'resize'"):
        resize.run(bad)
    with pytest.raises(InputValidationError, match=says):
        resize.run(bad, idempotency_key="k")
    assert _nothing_written(raw, client)
    assert raw.get(client.keys.idempotency("resize", "k")) is None


def test_run_by_name_with_the_registry_refuses_bad_input(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    _resize(registry)
    with pytest.raises(InputValidationError, match=r"\$.url"):
        client.run_by_name("resize", {"url": ["not", "a", "str"]})
    assert _nothing_written(raw, client)


def test_valid_input_is_stored_as_given_and_converted_by_the_worker(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """Validation only: no defaults filled in, a Struct stored as its JSON object, a
    datetime as its ISO string (what the worker converts it from)."""
    resize = _resize(registry)
    given = {"url": "http://x/a.png", "at": "2026-01-02T03:04:05Z"}
    h = resize.run(given)
    assert raw.hget(client.keys.run(h.id), "inputJson") == msgspec.json.encode(given)
    as_struct = resize.run(Resize(url="u", at=datetime(2026, 1, 2, tzinfo=UTC)))
    stored = client.get_run(as_struct.id)
    assert stored is not None and stored.input == {
        "url": "u",
        "width": 100,
        "at": "2026-01-02T00:00:00Z",
    }
    workers.start(queues=["media"])
    assert h.result(timeout=20) == {"url": "http://x/a.png", "width": 100}
    assert as_struct.result(timeout=20) == {"url": "u", "width": 100}


def test_without_the_definition_the_worker_validates(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    make_client: Any,
) -> None:
    _resize(registry)
    client.sync_registry(registry, app="validation-test")
    other = make_client(registry=Registry())  # metadata only, no schema
    h = other.run_by_name("resize", {"url": 5})
    assert raw.zcard(client.keys.runs_created) == 1
    workers.start(queues=["media"])
    with pytest.raises(InputValidationError, match=r"Expected `str`, got `int`") as info:
        h.result(timeout=20)
    assert isinstance(info.value, RunFailedError)
    state = h.state()
    assert state is not None and state.status is RunStatus.FAILED and state.input == {"url": 5}


def test_a_child_with_bad_input_fails_its_parent_step_and_is_never_created(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    _resize(registry, "child")

    @define_workflow("parent", queue="media", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        return ctx.step.emit_workflow("start", "child", {"url": 5})

    workers.start(queues=["media"])
    h = parent.run(None)
    with pytest.raises(InputValidationError, match="schema of 'child'"):
        h.result(timeout=20)
    steps = client.get_run_steps(h.id)
    assert steps is not None and [(s.name, s.status.value) for s in steps] == [("start", "failed")]
    assert [r.workflow for r in client.list_runs()] == ["parent"]


def test_a_timeout_under_a_millisecond_is_kept_not_dropped(
    client: Client, registry: Registry
) -> None:
    """``int(0.0004 * 1000)`` is 0, which a run record reads as "no timeout": a run
    (or a workflow) given a timeout under a millisecond ran without any."""

    @define_workflow("tiny-timeout", timeout=0.0004, registry=registry)
    def tiny(ctx: Context[Any]) -> None:
        return None

    state = client.get_run(tiny.run(timeout=0.0002).id)
    assert state is not None and state.timeout == 0.001
    state = client.get_run(tiny.run().id)
    assert state is not None and state.timeout == 0.001
    assert client.get_run(tiny.run(timeout=0.1).id).timeout == 0.1  # type: ignore[union-attr]


def test_a_timeout_or_ttl_too_long_for_milliseconds_does_not_overflow(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A ``timeout`` (of a run or a workflow) or an ``idempotency_ttl`` is accepted
    at any finite size, but 1e308 s is an infinite number of milliseconds:
    ``run()``, ``run_many()`` and ``sync_registry`` (what a supervisor calls at its
    start) raised ``OverflowError: cannot convert float infinity to integer``. Such
    times are stored as the longest a record holds (what they mean: never)."""

    @define_workflow("long-timeout", timeout=1e308, registry=registry)
    def long(ctx: Context[Any]) -> int:
        return 3

    client.sync_registry(registry, app="long")
    meta = client.get_workflow_meta("long-timeout")
    assert meta is not None
    handles = [
        long.run(timeout=1e308),
        long.run(idempotency_key="long", idempotency_ttl=1e308),
        *long.run_many([None], timeout=1e308, idempotency_ttl=1e308),
        long.run(),
    ]
    for handle in handles:
        state = client.get_run(handle.id)
        assert state is not None and state.timeout is not None
        assert 1e12 < state.timeout < 1e300, state.timeout
    workers.start()
    assert [h.result(timeout=20) for h in handles] == [3, 3, 3, 3]


@pytest.mark.parametrize(
    "parent",
    [123, b"01M977JRVEBW27D7FAPQ2JGN0M", "x\ud800", "a:steps", "x" * 10_000_000],
    ids=["int", "bytes", "lone-surrogate", "colon", "10-MB"],
)
def test_a_parent_run_id_no_run_can_have_is_refused_naming_it(
    raw: redis.Redis, client: Client, registry: Registry, parent: Any
) -> None:
    """``parent_run_id`` was the one option not checked: an int or bytes was stored
    as text, an id holding ':' (which names another key of a run) or 10 MB was
    stored as the run's parent (outside max_payload_bytes), and a lone surrogate
    raised redis-py's bare UnicodeEncodeError."""
    _resize(registry)
    with pytest.raises((TypeError, ValueError), match="parent_run_id"):
        client.run_by_name("resize", {"url": "u"}, parent_run_id=parent)
    assert raw.zcard(client.keys.runs_created) == 0
