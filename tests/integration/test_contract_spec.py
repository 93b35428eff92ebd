"""Acceptance checks written from SPEC.md (§2 API, §3 keyspace, §4 semantics) and the
issue texts, driving the public names exactly as spelled there, at default settings.
Items other tests already cover in depth are checked here only by name."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import msgspec
import pytest
import redis

import redflow_mp
from redflow_mp import (
    Client,
    Context,
    Cron,
    DuplicateStepError,
    NonRetriableError,
    Registry,
    Retries,
    RunCanceledError,
    RunFailedError,
    RunHandle,
    RunState,
    RunStatus,
    StepState,
    StepTimeoutError,
    WorkflowMeta,
    create_client,
    define_workflow,
    get_default_registry,
)
from tests.helpers import WorkerPool, text, wait_until

pytestmark = pytest.mark.timeout(90)


class Resize(msgspec.Struct):
    url: str


def _h(raw: redis.Redis, key: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.hgetall(key).items()}


def test_every_spec_error_name_is_importable_and_a_redflow_error() -> None:
    names = [
        "NonRetriableError",
        "InputValidationError",
        "UnknownWorkflowError",
        "OutputSerializationError",
        "StepTimeoutError",
        "RunCanceledError",
        "RunFailedError",
        "LeaseLostError",
        "DuplicateStepError",
        "ResultTimeoutError",
    ]
    for name in names:
        cls = getattr(redflow_mp, name)
        assert issubclass(cls, redflow_mp.RedflowError), name
    assert issubclass(redflow_mp.ResultTimeoutError, TimeoutError)
    assert get_default_registry() is get_default_registry()
    assert [s.value for s in RunStatus] == [
        "scheduled",
        "queued",
        "running",
        "suspended",
        "succeeded",
        "failed",
        "canceled",
    ]
    assert isinstance(RunStatus.QUEUED, str)


def test_spec_example_end_to_end_with_keyspace_fields(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis, prefix: str
) -> None:
    @define_workflow("index-image", queue="media", registry=registry)
    def index_image(ctx: Context[Any]) -> dict[str, Any]:
        seen["child_parent"] = ctx.run.parent_run_id
        return {"indexed": ctx.input["id"]}

    @define_workflow("send-email", queue="media", registry=registry)
    def send_email(ctx: Context[Any]) -> None:
        return None

    seen: dict[str, Any] = {}

    @define_workflow(
        "resize-image",
        queue="media",
        max_concurrency=8,
        schema=Resize,
        retries=Retries(max_attempts=3),
        registry=registry,
    )
    def resize(ctx: Context[Resize]) -> dict[str, Any]:
        seen["run"] = ctx.run
        seen["cancelled"] = ctx.cancelled
        meta = ctx.step.run("probe", lambda u: {"url": u}, ctx.input.url, timeout=10)
        thumb = ctx.step.run("thumb", lambda m: {"id": m["url"] + "-t"}, meta)
        child_id = ctx.step.emit_workflow("notify", "send-email", {"to": "o"})
        seen["child_id"] = child_id
        report = ctx.step.run_workflow("index", index_image, {"id": thumb["id"]}, timeout=60)
        return {"thumb": thumb, "report": report}

    client.sync_registry(registry, app="contract")
    workers.start(queues=["media"])
    handle = resize.run({"url": "u"}, idempotency_key="upload-123")
    assert isinstance(handle, RunHandle)
    assert resize.run({"url": "u"}, idempotency_key="upload-123").id == handle.id
    assert handle.result(timeout=60) == {"thumb": {"id": "u-t"}, "report": {"indexed": "u-t"}}
    info = seen["run"]
    assert (info.id, info.workflow, info.queue, info.attempt, info.max_attempts) == (
        handle.id,
        "resize-image",
        "media",
        1,
        3,
    )
    assert info.parent_run_id is None and info.created_at is not None
    assert isinstance(seen["cancelled"], threading.Event)

    state = client.get_run(handle.id)
    assert isinstance(state, RunState) and state.status is RunStatus.SUCCEEDED
    assert state.idempotency_key == "upload-123" and state.max_attempts == 3
    steps = client.get_run_steps(handle.id)
    assert steps is not None and all(isinstance(s, StepState) for s in steps)
    assert [s.name for s in steps] == ["probe", "thumb", "notify", "index"]
    assert steps[0].status == "succeeded" and steps[0].output == {"url": "u"}

    # §3: the run hash under its SPEC field names, times in epoch ms
    tag = "{" + prefix + "}"
    h = _h(raw, f"{tag}:run:{handle.id}")
    for field in [
        "id",
        "workflow",
        "queue",
        "status",
        "inputJson",
        "outputJson",
        "attempt",
        "maxAttempts",
        "createdAt",
        "availableAt",
        "startedAt",
        "finishedAt",
        "updatedAt",
        "idempotencyKey",
    ]:
        assert field in h, field
    assert h["status"] == "succeeded" and h["maxAttempts"] == "3"
    assert msgspec.json.decode(h["inputJson"]) == {"url": "u"}
    now_ms = time.time() * 1000
    for field in ("createdAt", "startedAt", "finishedAt", "updatedAt"):
        assert abs(int(h[field]) - now_ms) < 600_000, field

    # §4: a step persists {status, outputJson | errorJson, startedAt, finishedAt, attempt}
    step = msgspec.json.decode(raw.hget(f"{tag}:run:{handle.id}:steps", "probe") or b"{}")
    assert isinstance(step, dict), step
    assert step["status"] == "succeeded" and "outputJson" in step, step
    for field in ("startedAt", "finishedAt", "attempt"):
        assert field in step, (field, step)

    # §4: the child of step.run_workflow carries the deterministic key and parentRunId
    child = client.list_runs(workflow="index-image")[0]
    pid = handle.id
    assert child.idempotency_key == f"stepwf:{len(pid)}:{pid}:5:index:11:index-image"
    assert child.parent_run_id == pid
    emitted = client.get_run(seen["child_id"])
    assert emitted is not None and emitted.workflow == "send-email"
    assert emitted.parent_run_id == pid and seen["child_parent"] == pid
    assert emitted.idempotency_key == f"stepwf:{len(pid)}:{pid}:6:notify:10:send-email"

    # §3 indexes answer their queries
    assert raw.sismember(f"{tag}:workflows", "resize-image")
    assert raw.zscore(f"{tag}:workflow-runs:resize-image", handle.id) is not None
    assert raw.zscore(f"{tag}:runs:created", handle.id) == int(h["createdAt"])
    assert raw.zscore(f"{tag}:runs:status:succeeded", handle.id) == int(h["finishedAt"])
    assert raw.zscore(f"{tag}:workflow-runs:resize-image", handle.id) == int(h["createdAt"])
    meta = _h(raw, f"{tag}:workflow:resize-image")
    for field in [
        "name",
        "queue",
        "maxConcurrency",
        "app",
        "updatedAt",
        "cronJson",
        "retriesJson",
        "cronIdsJson",
    ]:
        assert field in meta, field
    assert meta["maxConcurrency"] == "8" and meta["app"] == "contract"
    idem = f"{tag}:idempo:12:resize-image:10:upload-123"
    assert raw.get(idem) == handle.id.encode()


def test_workflow_meta_and_lookups_of_unknown_ids(client: Client, registry: Registry) -> None:
    @define_workflow(
        "metered", queue="q1", max_concurrency=3, retries=Retries(max_attempts=2), registry=registry
    )
    def metered(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(registry, app="contract")
    meta = client.get_workflow_meta("metered")
    assert isinstance(meta, WorkflowMeta)
    assert (meta.name, meta.queue, meta.max_concurrency, meta.app) == (
        "metered",
        "q1",
        3,
        "contract",
    )
    assert meta.retries is not None and meta.retries.max_attempts == 2
    assert meta.updated_at is not None and list(meta.cron) == []
    assert [m.name for m in client.list_workflows()] == ["metered"]
    assert all(isinstance(m, WorkflowMeta) for m in client.list_workflows())
    assert client.get_workflow_meta("nope") is None
    assert client.get_run("nope") is None
    assert client.get_run_steps("nope") is None
    assert client.cancel_run("nope") is False
    with pytest.raises(ValueError):
        client.sync_registry(registry, app="")


def test_duplicate_names_in_one_registry_fail_at_definition(registry: Registry) -> None:
    @define_workflow("dup", registry=registry)
    def one(ctx: Context[Any]) -> None:
        return None

    with pytest.raises(redflow_mp.RedflowError):

        @define_workflow("dup", registry=registry)
        def two(ctx: Context[Any]) -> None:
            return None


def test_default_client_rules(redis_url: str, prefix: str, registry: Registry) -> None:
    @define_workflow("dflt", registry=registry)
    def dflt(ctx: Context[Any]) -> None:
        return None

    redflow_mp.client.set_default_client(None)
    with pytest.raises(redflow_mp.RedflowError, match="client"):
        dflt.run()
    other = create_client(url=redis_url, prefix=prefix, default=False, registry=registry)
    try:
        with pytest.raises(redflow_mp.RedflowError, match="client"):
            dflt.run()
        assert dflt.run(client=other).state() is not None
        main = create_client(url=redis_url, prefix=prefix, registry=registry)
        try:
            assert main is redflow_mp.get_default_client()
            assert dflt.run().state() is not None
        finally:
            main.close()
    finally:
        other.close()
        redflow_mp.client.set_default_client(None)


def test_run_options_run_at_and_list_runs(
    client: Client, registry: Registry, raw: redis.Redis, prefix: str
) -> None:
    @define_workflow("later", registry=registry)
    def later(ctx: Context[Any]) -> None:
        return None

    with pytest.raises(ValueError, match="aware"):
        later.run(run_at=datetime(2030, 1, 1))
    a = later.run(run_at=time.time() + 3600)
    b = later.run(queue_override="other")
    c = client.run_by_name("later", None, idempotency_key="k", idempotency_ttl=60)
    assert a.state().status is RunStatus.SCHEDULED  # type: ignore[union-attr]
    assert raw.zscore("{" + prefix + "}:q:default:scheduled", a.id) is not None
    assert b.state().queue == "other"  # type: ignore[union-attr]
    ttl = raw.ttl("{" + prefix + "}:idempo:5:later:1:k")
    assert ttl == -1 or 0 < ttl <= 60
    assert [r.id for r in client.list_runs()] == [c.id, b.id, a.id]  # newest first
    assert [r.id for r in client.list_runs(workflow="later", status="queued")] == [c.id, b.id]
    assert [r.id for r in client.list_runs(status=RunStatus.SCHEDULED)] == [a.id]
    assert [r.id for r in client.list_runs(limit=1, offset=1)] == [b.id]
    with pytest.raises(ValueError):
        client.list_runs(status="nope")


def test_result_timeout_affects_waiting_only(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    gate = threading.Event()

    @define_workflow("slowish", registry=registry)
    def slowish(ctx: Context[Any]) -> str:
        gate.wait(30)
        return "done"

    handle = slowish.run()
    workers.start()
    with pytest.raises(redflow_mp.ResultTimeoutError):
        handle.result(timeout=0.2)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.1)
    gate.set()
    assert handle.result(timeout=30) == "done"


def test_failed_and_canceled_results_raise_their_errors(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls: list[int] = []
    failures: list[str] = []

    def alert(ctx: Any) -> None:
        failures.append(ctx.run.id)
        raise RuntimeError("the hook's own error changes nothing")

    @define_workflow("boom", registry=registry, on_failure=alert)
    def boom(ctx: Context[Any]) -> None:
        calls.append(ctx.run.attempt)
        raise RuntimeError("kaput")

    @define_workflow("nope-retry", registry=registry, retries=Retries(max_attempts=3))
    def nope(ctx: Context[Any]) -> None:
        calls.append(100 + ctx.run.attempt)
        raise NonRetriableError("no point")

    workers.start()
    h = boom.run()
    with pytest.raises(RunFailedError, match="kaput"):
        h.result(timeout=30)
    assert calls == [1]  # max_attempts default 1
    wait_until(lambda: failures == [h.id], timeout=10)
    assert h.state().status is RunStatus.FAILED  # type: ignore[union-attr]
    h2 = nope.run()
    with pytest.raises(RunFailedError):
        h2.result(timeout=30)
    assert calls == [1, 101]
    st = client.get_run(h2.id)
    assert st is not None and st.attempt == 1 and len(st.attempts) == 1

    workers.stop_all()
    h3 = boom.run()
    assert h3.cancel(reason="why") is True
    with pytest.raises(RunCanceledError):
        h3.result(timeout=5)


def test_steps_duplicate_name_and_timeout(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[str] = []

    @define_workflow("stepper", registry=registry)
    def stepper(ctx: Context[Any]) -> str:
        ctx.step.run("a", lambda: 1)
        try:
            ctx.step.run("a", lambda: 2)
        except DuplicateStepError:
            seen.append("dup")
        try:
            ctx.step.run("slow", time.sleep, 5, timeout=0.2)
        except StepTimeoutError:
            seen.append("timeout")
        return "ok"

    workers.start()
    assert stepper.run().result(timeout=60) == "ok"
    assert seen == ["dup", "timeout"]


def test_retries_are_scheduled_with_backoff(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    attempts: list[int] = []

    @define_workflow("flaky", registry=registry, retries=Retries(max_attempts=2, initial_delay=0.2))
    def flaky(ctx: Context[Any]) -> int:
        attempts.append(ctx.run.attempt)
        if ctx.run.attempt == 1:
            raise RuntimeError("once")
        return ctx.run.attempt

    workers.start()
    h = flaky.run()
    assert h.result(timeout=60) == 2
    assert attempts == [1, 2]
    st = h.state()
    assert st is not None and [a.attempt for a in st.attempts] == [1, 2]


def test_send_event_and_resume(client: Client, registry: Registry, workers: WorkerPool) -> None:
    @define_workflow("waiter", registry=registry)
    def waiter(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    workers.start()
    h = waiter.run()
    wait_until(lambda: (s := h.state()) is not None and s.status is RunStatus.SUSPENDED, timeout=30)
    assert [r.id for r in client.list_runs(status="suspended")] == [h.id]
    assert client.send_event(h.id, "go", {"p": 1}) is True
    assert h.result(timeout=30) == {"p": 1}
    assert client.send_event(h.id, "go") is False
    assert client.send_event("unknown-run", "go") is False
    with pytest.raises(redflow_mp.RunNotResumableError):
        client.resume_run(h.id)


def test_workflow_options_refused_clearly(registry: Registry) -> None:
    def f(ctx: Context[Any]) -> None:
        return None

    for kwargs in (
        {"priority": 10},
        {"priority": "1"},
        {"rate_limit": "100/fortnight"},
        {"rate_limit": "0/s"},
        {"rate_limit": "-1/m"},
        {"max_concurrency": 0},
        {"queue": ""},
    ):
        with pytest.raises((ValueError, TypeError)):
            define_workflow("opt", registry=Registry(), **kwargs)(f)
    for name in ("", 5):
        with pytest.raises((ValueError, TypeError)):
            define_workflow(name, registry=Registry())(f)  # type: ignore[arg-type]
    wf = define_workflow("okay", registry=registry, priority=9, rate_limit="100/m")(f)
    assert wf.name == "okay"


def test_closed_client_is_a_clear_error(redis_url: str, prefix: str, registry: Registry) -> None:
    c = create_client(url=redis_url, prefix=prefix, default=False, registry=registry)
    c.close()
    with pytest.raises(redflow_mp.RedflowError, match="closed"):
        c.get_run("x")


def test_async_handler_steps_have_the_same_names(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[Any] = []

    @define_workflow("child-a", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return int(ctx.input) * 2

    @define_workflow("async-parent", registry=registry, schema=int)
    async def parent(ctx: Any) -> Any:
        seen.append(isinstance(ctx.cancelled, threading.Event))
        a = await ctx.step.run("a", lambda x, y=0: x + y, ctx.input, y=1)
        b = await ctx.step.run_workflow("b", child, a)
        c = await ctx.step.run_workflows("c", "child-a", [1, 2])
        d = await ctx.step.emit_workflow("d", "child-a", 5)
        await ctx.step.sleep("e", 0.01)
        await ctx.step.sleep_until("f", time.time())
        return [a, b, c, isinstance(d, str)]

    workers.start()
    assert parent.run(3).result(timeout=60) == [4, 8, [2, 4], True]
    assert seen[-1] is True


def test_emit_workflow_takes_spec_parameter_names(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """SPEC §4: ``step.emit_workflow(name, workflow_or_name, input, ...)``, by
    keyword too, sync and async, with a Workflow or a name."""

    @define_workflow("kw-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return int(ctx.input) + 1

    @define_workflow("kw-parent", registry=registry)
    def parent(ctx: Context[Any]) -> list[str]:
        a = ctx.step.emit_workflow("a", workflow_or_name=child, input=1)
        b = ctx.step.emit_workflow(name="b", workflow_or_name="kw-child", input=2)
        return [a, b]

    @define_workflow("kw-async-parent", registry=registry)
    async def aparent(ctx: Any) -> str:
        run_id: str = await ctx.step.emit_workflow("a", workflow_or_name=child, input=3)
        return run_id

    workers.start()
    child_id = aparent.run(None).result(timeout=60)
    assert client.handle(child_id).result(timeout=60) == 4
    a, b = parent.run(None).result(timeout=60)
    assert [client.handle(a).result(timeout=60), client.handle(b).result(timeout=60)] == [2, 3]


def test_resume_run_keeps_succeeded_steps_and_counts_an_attempt(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    ran: list[str] = []
    gate = {"fail": True}

    @define_workflow("resumable", registry=registry)
    def resumable(ctx: Context[Any]) -> str:
        ctx.step.run("first", lambda: ran.append("first"))
        if gate["fail"]:
            raise RuntimeError("second fails")
        ctx.step.run("second", lambda: ran.append("second"))
        return "ok"

    workers.start()
    h = resumable.run()
    with pytest.raises(RunFailedError):
        h.result(timeout=30)
    gate["fail"] = False
    again = client.resume_run(h.id)
    assert isinstance(again, RunHandle) and again.id == h.id
    assert again.result(timeout=30) == "ok"
    assert ran == ["first", "second"]
    st = client.get_run(h.id)
    assert st is not None and st.attempt == 2 and [a.attempt for a in st.attempts] == [1, 2]
    with pytest.raises(redflow_mp.RunNotResumableError):
        client.resume_run("no-such-run")


def test_idempotency_ttl_defaults_to_seven_days_after_finish(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis, prefix: str
) -> None:
    @define_workflow("keyed", registry=registry)
    def keyed(ctx: Context[Any]) -> None:
        return None

    workers.start()
    keyed.run(idempotency_key="a").result(timeout=30)
    keyed.run(idempotency_key="b", idempotency_ttl=120).result(timeout=30)
    ttl_a = raw.ttl("{" + prefix + "}:idempo:5:keyed:1:a")
    ttl_b = raw.ttl("{" + prefix + "}:idempo:5:keyed:1:b")
    assert 7 * 86400 - 600 < ttl_a <= 7 * 86400, ttl_a
    assert 0 < ttl_b <= 120, ttl_b


def test_not_retried_and_on_failure_once_after_the_last_attempt(
    client: Client, registry: Registry, make_client: Any, workers: WorkerPool
) -> None:
    calls: list[str] = []
    hooks: list[str] = []

    @define_workflow(
        "unencodable", registry=registry, retries=Retries(max_attempts=3, initial_delay=0.05)
    )
    def unencodable(ctx: Context[Any]) -> Any:
        calls.append("unencodable")
        return object()

    @define_workflow("strict", registry=registry, schema=Resize, retries=Retries(max_attempts=3))
    def strict(ctx: Context[Resize]) -> None:
        calls.append("strict")

    @define_workflow(
        "twice",
        registry=registry,
        retries=Retries(max_attempts=2, initial_delay=0.05),
        on_failure=lambda ctx: hooks.append(ctx.run.id),
    )
    def twice(ctx: Context[Any]) -> None:
        calls.append("twice")
        raise RuntimeError("always")

    client.sync_registry(registry, app="contract")
    workers.start()
    with pytest.raises(redflow_mp.OutputSerializationError):
        unencodable.run().result(timeout=30)
    # a process without the schema enqueues by name; the worker validates
    blind = make_client(registry=Registry())
    h = blind.run_by_name("strict", {"url": 5})
    with pytest.raises(redflow_mp.InputValidationError):
        h.result(timeout=30)
    t = twice.run()
    with pytest.raises(RunFailedError):
        t.result(timeout=30)
    wait_until(lambda: hooks == [t.id], timeout=10)
    time.sleep(0.3)
    assert hooks == [t.id]
    assert calls.count("unencodable") == 1 and calls.count("strict") == 0
    assert calls.count("twice") == 2
    st = client.get_run(h.id)
    assert st is not None and st.attempt == 1 and st.status is RunStatus.FAILED


def test_sync_registry_writes_cron_entries_under_their_spec_keys(
    client: Client, registry: Registry, raw: redis.Redis, prefix: str
) -> None:
    @define_workflow(
        "nightly",
        registry=registry,
        cron=[Cron("0 3 * * *", timezone="Europe/Berlin", input={"n": 1})],
    )
    def nightly(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(registry, app="contract")
    meta = client.get_workflow_meta("nightly")
    assert meta is not None and len(meta.cron_ids) == 1
    cron_id = meta.cron_ids[0]
    tag = "{" + prefix + "}"
    assert raw.type(f"{tag}:cron:def") == b"hash" and raw.hexists(f"{tag}:cron:def", cron_id)
    assert raw.type(f"{tag}:cron:next") == b"zset"
    due = raw.zscore(f"{tag}:cron:next", cron_id)
    assert due is not None and due > time.time() * 1000
    h = _h(raw, f"{tag}:workflow:nightly")
    assert msgspec.json.decode(h["cronIdsJson"]) == [cron_id]
    cron = msgspec.json.decode(h["cronJson"])
    assert "0 3 * * *" in str(cron) and "Europe/Berlin" in str(cron)


def test_list_runs_defaults_and_cancel_of_a_finished_run(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("many", registry=registry)
    def many(ctx: Context[Any]) -> None:
        return None

    handles = many.run_many([None] * 60)
    assert len(client.list_runs()) == 50  # limit=50 by default
    assert [r.id for r in client.list_runs(offset=50)] == [h.id for h in handles[:10]][::-1]
    workers.start()
    handles[0].result(timeout=30)
    assert client.cancel_run(handles[0].id) is False
    assert handles[0].cancel() is False
    gone = RunHandle(client, "no-such-run")
    assert gone.state() is None


def test_cancel_of_a_running_run_at_the_default_lease(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[str] = []
    started = threading.Event()

    @define_workflow("busy", registry=registry)
    def busy(ctx: Context[Any]) -> str:
        started.set()
        seen.append("set" if ctx.cancelled.wait(30) else "timeout")
        try:
            ctx.step.run("after", lambda: None)
        except RunCanceledError:
            seen.append("raised")
            raise
        return "not canceled"

    workers.start(lease_ms=5000)
    h = busy.run()
    assert started.wait(30)
    assert client.cancel_run(h.id, reason="stop") is True
    st = h.state()
    assert st is not None and st.cancel_requested_at is not None
    with pytest.raises(RunCanceledError):
        h.result(timeout=30)
    assert seen == ["set", "raised"]
    st = h.state()
    assert st is not None and st.status is RunStatus.CANCELED and st.cancel_reason == "stop"


def test_a_delayed_run_is_promoted_then_runs(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("delayed", registry=registry)
    def delayed(ctx: Context[Any]) -> Any:
        return ctx.step.run("kw", lambda a, b=0: a + b, 1, b=2)

    h = delayed.run(run_at=time.time() + 0.5)
    assert h.state().status is RunStatus.SCHEDULED  # type: ignore[union-attr]
    workers.start()
    assert h.result(timeout=30) == 3
    st = h.state()
    assert st is not None and st.started_at is not None and st.available_at is not None
    assert st.started_at >= st.available_at


def test_run_lookups_take_the_id_by_spec_name(
    redis_url: str, prefix: str, client: Client, registry: Registry
) -> None:
    """SPEC §2 spells ``get_run(id)``, ``get_run_steps(id)``, ``cancel_run(id,
    reason=None)``; ``run_id=`` (our name) keeps working."""
    import asyncio

    from redflow_mp.aio import create_async_client

    @define_workflow("by-id", registry=registry)
    def by_id(ctx: Context[Any]) -> None:
        return None

    h = by_id.run()
    kw: dict[str, Any] = {"id": h.id}
    assert client.get_run(**kw) is not None
    assert client.get_run(run_id=h.id) is not None
    assert client.get_run_steps(**kw) == []
    with pytest.raises(TypeError, match="once"):
        client.get_run(h.id, **kw)

    async def aio() -> None:
        ac = create_async_client(redis_url, prefix, registry=registry, default=False)
        try:
            assert (await ac.get_run(**kw)) is not None
            assert (await ac.get_run_steps(**kw)) == []
            assert await ac.cancel_run(**kw, reason="async") is True
        finally:
            await ac.aclose()

    asyncio.run(aio())
    st = client.get_run(h.id)
    assert st is not None and st.status is RunStatus.CANCELED and st.cancel_reason == "async"
    h2 = by_id.run()
    assert client.cancel_run(id=h2.id, reason="sync") is True


def test_an_unknown_workflow_fails_with_unknown_workflow_error_not_retried(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("known", registry=registry)
    def known(ctx: Context[Any]) -> None:
        return None

    workers.start()
    h = client.run_by_name("ghost", {"a": 1})
    with pytest.raises(redflow_mp.UnknownWorkflowError):
        h.result(timeout=30)
    st = h.state()
    assert st is not None and st.status is RunStatus.FAILED and st.attempt == 1
