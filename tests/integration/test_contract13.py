"""Acceptance checks written from SPEC.md and the issue texts (12, 13, 15 above all),
driving the public names as spelled there, at default settings: the calling
convention of every public entry point (keyword-only where SPEC writes ``*``),
``run_many`` writing exactly what ``run`` writes and refusing what ``run`` refuses,
priority over all the queues a worker serves, what a handler's ``Context`` is, the
kinds of failure that are not retried, and the async client's refusals. Items the
other ``test_contract*`` files cover are not repeated here."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

import redflow_mp
from redflow_mp import (
    Client,
    Context,
    NonRetriableError,
    OutputSerializationError,
    Registry,
    Retries,
    RunFailedError,
    RunHandle,
    StepTimeoutError,
    aio,
    define_workflow,
)
from tests.helpers import WorkerPool, text, wait_until

pytestmark = pytest.mark.timeout(90)

KW = inspect.Parameter.KEYWORD_ONLY
POS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def _check(fn: Callable[..., Any], positional: list[str], keyword: dict[str, Any]) -> None:
    """``positional`` (in order, after self) may be passed by position; every name in
    ``keyword`` is keyword-only with that default."""
    params = {n: p for n, p in _params(fn).items() if n != "self"}
    pos = [n for n, p in params.items() if p.kind in POS]
    assert pos[: len(positional)] == positional, (fn, pos)
    for name, default in keyword.items():
        assert name in params, (fn, name)
        assert params[name].kind is KW, (fn, name, params[name].kind)
        assert params[name].default == default, (fn, name, params[name].default)


def test_calling_conventions_are_as_spec_and_the_issues_write_them() -> None:
    # SPEC §2: define_workflow(name, *, queue="default", max_concurrency=1, schema=None,
    # cron=(), retries=None, on_failure=None, registry=None); issue 15: priority 0, rate_limit
    _check(
        define_workflow,
        ["name"],
        {
            "queue": "default",
            "max_concurrency": 1,
            "schema": None,
            "cron": (),
            "retries": None,
            "on_failure": None,
            "registry": None,
            "priority": 0,
            "rate_limit": None,
        },
    )
    opts = {"run_at": None, "queue_override": None, "idempotency_key": None}
    _check(redflow_mp.Workflow.run, ["input"], {**opts, "client": None})
    _check(redflow_mp.Workflow.arun, ["input"], {**opts, "client": None})
    assert inspect.iscoroutinefunction(redflow_mp.Workflow.arun)
    # issue 13: run_many(inputs, *, run_at=None, queue_override=None,
    # idempotency_keys=None, client=None) -> list[RunHandle]
    many = {"run_at": None, "queue_override": None, "idempotency_keys": None}
    _check(redflow_mp.Workflow.run_many, ["inputs"], {**many, "client": None})
    _check(redflow_mp.Workflow.arun_many, ["inputs"], {**many, "client": None})
    assert inspect.iscoroutinefunction(redflow_mp.Workflow.arun_many)
    for cls in (Client, aio.AsyncClient):
        _check(cls.run_by_name, ["name", "input"], opts)
        _check(cls.run_many_by_name, ["name", "inputs"], many)
        # SPEC §2: list_runs(workflow=None, status=None, limit=50, offset=0)
        p = _params(cls.list_runs)
        assert [p[n].default for n in ("workflow", "status", "limit", "offset")] == [
            None,
            None,
            50,
            0,
        ]
        _check(cls.cancel_run, ["run_id", "reason"], {})
        _check(cls.send_event, ["run_id", "event", "payload"], {})
        assert _params(cls.send_event)["payload"].default is None
        _check(cls.resume_run, ["run_id"], {})
        _check(cls.get_workflow_meta, ["name"], {})
    assert inspect.iscoroutinefunction(aio.AsyncClient.aclose)
    assert not inspect.iscoroutinefunction(aio.create_async_client)  # a plain function
    _check(Client.sync_registry, ["registry"], {})
    assert _params(Client.sync_registry)["app"].kind is KW
    for handle in (RunHandle, aio.AsyncRunHandle):
        assert _params(handle.result)["timeout"].default is None
        assert _params(handle.cancel)["reason"].default is None
        _check(handle.send_event, ["event", "payload"], {})
    assert inspect.iscoroutinefunction(aio.AsyncRunHandle.result)
    # SPEC §4 / issue 12 step methods, sync and async alike
    from redflow_mp.steps import AsyncStep, Step

    for step in (Step, AsyncStep):
        p = _params(step.run)
        assert list(p)[1:3] == ["name", "fn"] and p["timeout"].kind is KW
        assert p["timeout"].default is None
        _check(step.run_workflow, ["name", "workflow", "input", "timeout"], {})
        _check(step.run_workflows, ["name", "workflow", "inputs", "timeout"], {})
        _check(step.emit_workflow, ["name", "workflow_or_name", "input"], {})
        _check(step.sleep, ["name", "seconds"], {})
        _check(step.sleep_until, ["name", "when"], {})
        _check(step.wait_for_event, ["name", "event", "timeout"], {})
    assert Retries().max_attempts == 1  # SPEC §4: max_attempts default 1


def test_the_names_the_issues_introduce_are_importable_where_they_say() -> None:
    for name in (
        "RunNotResumableError",  # issue 15: resume refusals
        "WaitDeadlockError",  # issue 12: a wait that can never end
        "EventLimitError",  # issue 12: max_events_per_run
        "ResultTimeoutError",
    ):
        assert issubclass(getattr(redflow_mp, name), redflow_mp.RedflowError), name
        assert name in redflow_mp.__all__, name
    assert redflow_mp.RunStatus.SUSPENDED.value == "suspended"
    assert isinstance(redflow_mp.RunStatus.SUSPENDED, str)
    for name in ("AsyncClient", "AsyncRunHandle", "create_async_client"):
        assert hasattr(aio, name), name
    assert "attempts" in redflow_mp.RunState.__struct_fields__  # issue 15 item 6


class Item(msgspec.Struct):
    n: int


def _rich(registry: Registry) -> Any:
    @define_workflow(
        "c13-rich",
        registry=registry,
        queue="media",
        schema=Item,
        retries=Retries(max_attempts=4),
        priority=3,
        timeout=12,
        max_concurrency=2,
    )
    def rich(ctx: Context[Item]) -> int:
        return ctx.input.n

    return rich


def _member_of(raw: redis.Redis, key: str, run_id: str) -> bool:
    kind = raw.type(key)
    if kind == b"zset":
        return raw.zscore(key, run_id) is not None
    if kind == b"list":
        return run_id.encode() in raw.lrange(key, 0, -1)
    if kind == b"set":
        return bool(raw.sismember(key, run_id))
    return False


def _written(raw: redis.Redis, client: Client, run_id: str, queues: list[str]) -> Any:
    tag = client.keys.tag
    fields = {text(k): text(v) for k, v in raw.hgetall(f"{tag}:run:{run_id}").items()}
    for varying in ("id", "createdAt", "updatedAt", "availableAt", "idempotencyKey"):
        fields.pop(varying, None)
    names = [
        "runs:created",
        "workflow-runs:c13-rich",
        *(f"runs:status:{s.value}" for s in redflow_mp.RunStatus),
        *(f"q:{q}:{part}" for q in queues for part in ("ready", "scheduled")),
    ]
    return fields, sorted(n for n in names if _member_of(raw, f"{tag}:{n}", run_id))


@pytest.mark.parametrize(
    "options",
    [{}, {"run_at": "future"}, {"queue_override": "other", "priority": 7, "timeout": 5}],
    ids=["plain", "run_at", "overrides"],
)
def test_run_many_and_run_many_by_name_write_what_run_writes(
    client: Client, registry: Registry, raw: redis.Redis, options: dict[str, Any]
) -> None:
    rich = _rich(registry)
    if options.get("run_at") == "future":
        options = {"run_at": time.time() + 3600}
    one = rich.run({"n": 1}, idempotency_key="k-run", **options)
    many = rich.run_many([{"n": 1}], idempotency_keys=["k-many"], **options)
    by_name = client.run_many_by_name(
        "c13-rich", [{"n": 1}], idempotency_keys=["k-name"], **options
    )
    assert [type(h) for h in [*many, *by_name]] == [RunHandle, RunHandle]
    queues = ["media", "other"]
    expected = _written(raw, client, one.id, queues)
    assert expected[1], expected  # indexed somewhere
    assert _written(raw, client, many[0].id, queues) == expected
    assert _written(raw, client, by_name[0].id, queues) == expected
    for key, handle in (("k-run", one), ("k-many", many[0]), ("k-name", by_name[0])):
        idem = f"{client.keys.tag}:idempo:8:c13-rich:{len(key)}:{key}"
        assert raw.get(idem) == handle.id.encode(), key
        state = handle.state()
        assert state is not None and state.idempotency_key == key


def test_run_many_edge_inputs(client: Client, registry: Registry, raw: redis.Redis) -> None:
    rich = _rich(registry)
    created = client.keys.runs_created
    assert rich.run_many([]) == [] and client.run_many_by_name("c13-rich", []) == []
    with pytest.raises(ValueError, match="idempotency_keys"):
        rich.run_many([{"n": 1}, {"n": 2}], idempotency_keys=["only-one"])
    with pytest.raises(TypeError, match="idempotency_keys"):
        rich.run_many([{"n": 1}], idempotency_keys="k")  # a str is not a list of keys
    with pytest.raises(TypeError):
        rich.run_many([{"n": 1}], None)  # run_at is keyword-only
    assert raw.zcard(created) == 0
    # any iterable; the same key twice in one batch names one run
    from_gen = rich.run_many({"n": i} for i in range(3))
    assert len({h.id for h in from_gen}) == 3
    twice = rich.run_many([{"n": 1}, {"n": 2}], idempotency_keys=["same", "same"])
    assert twice[0].id == twice[1].id
    assert raw.zcard(created) == 4
    # more than one chunk: every input its own run, in order (newest first when listed)
    big = rich.run_many([{"n": i} for i in range(1201)])
    assert len({h.id for h in big}) == 1201
    states = [h.state() for h in big[:2]] + [big[-1].state()]
    assert [s.input for s in states if s is not None] == [{"n": 0}, {"n": 1}, {"n": 1200}]
    listed = client.list_runs(workflow="c13-rich", limit=3)
    assert [s.id for s in listed] == [h.id for h in reversed(big[-3:])]


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (float("nan"), ValueError),
        (object(), TypeError),
        ("x" * 5000, redflow_mp.PayloadTooLargeError),
        ("\ud800", TypeError),
    ],
    ids=["nan", "object", "too-large", "lone-surrogate"],
)
def test_run_many_refuses_what_run_refuses_and_names_the_item(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis, bad: Any, kind: type
) -> None:
    client = redflow_mp.create_client(
        redis_url, prefix=prefix, registry=registry, default=False, max_payload_bytes=1024
    )
    try:

        @define_workflow("c13-free", registry=registry)
        def free(ctx: Context[Any]) -> Any:
            return ctx.input

        with pytest.raises(kind):
            free.run(bad, client=client)
        with pytest.raises(kind, match=r"inputs\[1\]"):
            free.run_many([1, bad], client=client)
        with pytest.raises(kind, match=r"inputs\[1\]"):
            client.run_many_by_name("c13-free", [1, bad])
        assert raw.zcard(client.keys.runs_created) == 0
    finally:
        client.close()


def test_handles_of_run_many_belong_to_the_client_given(
    client: Client, registry: Registry, make_client: Callable[..., Client]
) -> None:
    rich = _rich(registry)
    other = make_client(prefix=client.keys.tag.strip("{}") + "-other")
    handles = rich.run_many([{"n": 1}, {"n": 2}], client=other)
    assert all(h.state() is not None for h in handles)
    assert client.get_run(handles[0].id) is None  # not on the default client's prefix


def test_run_many_with_a_future_run_at_is_promoted_and_runs(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    rich = _rich(registry)
    due = time.time() + 1.0
    handles = rich.run_many([{"n": 5}, {"n": 6}], run_at=due)
    workers.start(queues=["media"])
    assert [h.result(timeout=30) for h in handles] == [5, 6]
    for h in handles:
        state = h.state()
        # started by the promoter once due, not at once (load can only make it later;
        # the client's clock and the server's are one host's here)
        assert state is not None and state.started_at is not None
        assert state.started_at >= int(due * 1000), (state.started_at, due)


def _next_ms(client: Client) -> None:
    """Wait until the server's clock is past the last enqueue's millisecond."""
    start = client.server_time_ms()
    wait_until(lambda: client.server_time_ms() > start, message="the next millisecond")


def test_a_worker_serving_two_queues_takes_priority_then_age_over_both(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    order: list[Any] = []

    @define_workflow("c13-on-a", registry=registry, queue="a")
    def on_a(ctx: Context[Any]) -> None:
        order.append(ctx.input)

    @define_workflow("c13-on-b", registry=registry, queue="b")
    def on_b(ctx: Context[Any]) -> None:
        order.append(ctx.input)

    plan = [(on_a, "a0", 0), (on_b, "b0", 0), (on_a, "a1", 0), (on_b, "b-high", 9)]
    plan += [(on_a, "a-high", 9), (on_b, "b1", 0), (on_a, "a2", 0)]
    handles = []
    for wf, tag, prio in plan:
        handles.append(wf.run(tag, priority=prio))
        _next_ms(client)
    workers.start(queues=["a", "b"])
    for h in handles:
        h.result(timeout=30)
    assert order == ["b-high", "a-high", "a0", "b0", "a1", "b1", "a2"]


def test_context_is_what_spec_names_for_sync_and_async_handlers(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: dict[str, Any] = {}

    def look(ctx: Any, kind: str) -> None:
        seen[kind] = {
            "event": isinstance(ctx.cancelled, threading.Event),
            "set": ctx.cancelled.is_set(),
            "logger": isinstance(ctx.logger, (logging.Logger, logging.LoggerAdapter)),
            "run": {
                f: getattr(ctx.run, f)
                for f in ("workflow", "queue", "attempt", "max_attempts", "parent_run_id")
            },
            "id": ctx.run.id,
            "created_at": ctx.run.created_at,
        }
        ctx.raise_if_cancelled()  # not cancelled: returns

    @define_workflow("c13-ctx", registry=registry, retries=Retries(max_attempts=2))
    def sync_one(ctx: Context[Any]) -> None:
        look(ctx, "sync")

    @define_workflow("c13-actx", registry=registry)
    async def async_one(ctx: redflow_mp.AsyncContext[Any]) -> None:
        look(ctx, "async")

    workers.start()
    h1, h2 = sync_one.run(), async_one.run()
    h1.result(timeout=30)
    h2.result(timeout=30)
    for kind, handle, wf, attempts in (("sync", h1, "c13-ctx", 2), ("async", h2, "c13-actx", 1)):
        got = seen[kind]
        assert got["event"] and not got["set"] and got["logger"], got
        assert got["run"] == {
            "workflow": wf,
            "queue": "default",
            "attempt": 1,
            "max_attempts": attempts,
            "parent_run_id": None,
        }
        state = handle.state()
        assert state is not None
        assert got["id"] == handle.id and got["created_at"] == state.created_at


def test_kinds_of_failure_spec_says_are_not_retried_end_at_attempt_one(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls: dict[str, int] = {}
    again = Retries(max_attempts=3, initial_delay=0.01)

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    @define_workflow("c13-bad-output", registry=registry, retries=again)
    def bad_output(ctx: Context[Any]) -> Any:
        count("bad-output")
        return object()

    @define_workflow("c13-bad-step-output", registry=registry, retries=again)
    def bad_step_output(ctx: Context[Any]) -> Any:
        count("bad-step-output")
        return ctx.step.run("s", object)

    @define_workflow("c13-step-non-retriable", registry=registry, retries=again)
    def step_non_retriable(ctx: Context[Any]) -> Any:
        count("step-non-retriable")

        def refuse() -> None:
            raise NonRetriableError("no")

        return ctx.step.run("s", refuse)

    workers.start()
    cases = [
        (bad_output, OutputSerializationError, "OutputSerializationError"),
        (bad_step_output, OutputSerializationError, "OutputSerializationError"),
        (step_non_retriable, NonRetriableError, "NonRetriableError"),
    ]
    for wf, cause, type_name in cases:
        handle = wf.run()
        with pytest.raises(RunFailedError) as failed:
            handle.result(timeout=30)
        assert isinstance(failed.value, cause), failed.value
        state = handle.state()
        assert state is not None and state.status == "failed" and state.attempt == 1
        assert state.error is not None and state.error.type == type_name
    assert calls == {"bad-output": 1, "bad-step-output": 1, "step-non-retriable": 1}


def test_a_step_timeout_is_raised_in_the_handler_which_may_catch_it(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("c13-catch", registry=registry)
    def catch(ctx: Context[Any]) -> str:
        try:
            ctx.step.run("slow", threading.Event().wait, 30, timeout=0.2)
        except StepTimeoutError:
            return "caught"
        return "not raised"

    workers.start()
    handle = catch.run()
    assert handle.result(timeout=30) == "caught"
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [(s.name, s.status) for s in steps] == [("slow", "failed")]
    assert steps[0].error is not None and steps[0].error.type == "StepTimeoutError"


def test_on_failure_gets_the_failure_and_its_own_error_changes_nothing(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    hooked: list[Any] = []

    def alert_ops(ctx: Any) -> None:
        hooked.append((ctx.run.id, ctx.input, type(ctx.error).__name__))
        raise RuntimeError("the hook broke")

    @define_workflow("c13-hooked", registry=registry, on_failure=alert_ops)
    def hooked_wf(ctx: Context[Any]) -> None:
        raise ValueError("boom")

    workers.start()
    handle = hooked_wf.run({"x": 1})
    with pytest.raises(RunFailedError, match="boom"):
        handle.result(timeout=30)
    wait_until(lambda: hooked, message="the on_failure hook")
    state = handle.state()
    assert state is not None and state.status == "failed"
    assert state.error is not None and state.error.type == "ValueError"
    assert hooked[0][:2] == (handle.id, {"x": 1}), hooked
    assert len(hooked) == 1


def test_event_names_are_checked_like_step_names(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    bad_names: list[Any] = ["", "x" * 1000, 5, None]
    from_steps: list[str] = []

    @define_workflow("c13-names", registry=registry)
    def names(ctx: Context[Any]) -> Any:
        # a replay runs this again (the wait suspended the run when the event came
        # after it: CI, 'Left contains 4 more items'): the last execution's count
        from_steps.clear()
        for name in bad_names:
            try:
                ctx.step.run(name, int)
            except Exception as exc:
                from_steps.append(type(exc).__name__)
        return ctx.step.wait_for_event("w", "go")

    handle = names.run()
    from_events = []
    for name in bad_names:
        with pytest.raises((TypeError, ValueError)) as refused:
            client.send_event(handle.id, name)
        from_events.append(type(refused.value).__name__)
    workers.start()
    assert handle.send_event("go", {"ok": True}) is True
    assert handle.result(timeout=30) == {"ok": True}
    assert from_steps == from_events == ["ValueError", "ValueError", "TypeError", "TypeError"]
    assert client.send_event(handle.id, "go") is False  # a finished run


def test_the_async_client_refuses_a_second_event_loop_and_use_after_aclose(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    @define_workflow("c13-async", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    ac = aio.create_async_client(redis_url, prefix=prefix, registry=registry, default=False)

    async def enqueue() -> int:
        handles = await asyncio.gather(*(job.arun(i, client=ac) for i in range(20)))
        return len({h.id for h in handles})

    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(enqueue()) == 20  # shared by 20 tasks of one loop
        with pytest.raises(redflow_mp.RedflowError, match="event loop"):
            asyncio.run(enqueue())  # a second loop: refused, not a hang or a wrong reply
    finally:
        first.run_until_complete(ac.aclose())
        first.close()
    ac2 = aio.create_async_client(redis_url, prefix=prefix, registry=registry, default=False)

    async def after_close() -> None:
        handle = await job.arun(1, client=ac2)
        await ac2.aclose()
        with pytest.raises(redflow_mp.RedflowError, match="closed"):
            await ac2.get_run(handle.id)

    asyncio.run(after_close())


def test_concurrent_batches_and_single_runs_with_the_same_keys_name_one_run_each(
    client: Client, registry: Registry, make_client: Callable[..., Client], raw: redis.Redis
) -> None:
    """SPEC §4 "same key -> same run id, even under concurrent callers", for issue 13's
    batches racing each other (keys in opposite orders, across chunks) and plain runs."""
    rich = _rich(registry)
    keys = [f"k{i}" for i in range(1100)]
    clients = [make_client() for _ in range(4)]
    seen: list[dict[str, str]] = [{} for _ in clients]
    start = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def caller(i: int) -> None:
        try:
            start.wait()
            if i < 2:
                order = keys if i == 0 else keys[::-1]
                handles = rich.run_many(
                    [{"n": i}] * len(order), idempotency_keys=order, client=clients[i]
                )
                seen[i] = {k: h.id for k, h in zip(order, handles, strict=True)}
            else:
                for k in keys[i::50]:
                    seen[i][k] = rich.run({"n": i}, idempotency_key=k, client=clients[i]).id
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen[0] == seen[1] and len(set(seen[0].values())) == len(keys)
    for single in seen[2:]:
        assert single and all(seen[0][k] == run_id for k, run_id in single.items())
    assert raw.zcard(client.keys.runs_created) == len(keys)
