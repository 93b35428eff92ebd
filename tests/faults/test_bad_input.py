"""Bad input: each case ends with a clear error and loses nothing else.

Corrupted run records, ids whose hash is gone, unknown workflows, schema
violations, payloads and outputs over the size limit, non-encodable outputs,
duplicate step names, a fan-out of 5,000 children, hostile names, a brace in
``--prefix``. Every case runs good runs alongside and checks the invariants.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redflow_mp import (
    Client,
    DuplicateStepError,
    InputValidationError,
    OutputSerializationError,
    PayloadTooLargeError,
    Registry,
    RunFailedError,
    UnknownWorkflowError,
    create_client,
    define_workflow,
)
from tests.faults import workload_bad as bad
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import ONE_WORKLOAD_CHILD
from tests.faults.workload import WORKFLOWS
from tests.process.conftest import run_supervisor_once

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

MODULES = ("tests.faults.workload", "tests.faults.workload_bad")


@pytest.fixture()
def env(fx: Faults) -> Iterator[tuple[str, redis.Redis, Client]]:
    server = fx.redis()
    raw = server.client()
    client = create_client(server.url, prefix=fx.prefix, default=False)
    try:
        yield server.url, raw, client
    finally:
        client.close()
        raw.close()


def _error_type(exc: RunFailedError) -> str:
    assert exc.error is not None
    return exc.error.type


def _good_runs(client: Client, n: int = 20) -> list[str]:
    return [WORKFLOWS["fx-chain"].run(i, client=client).id for i in range(n)]


def _all_done(client: Client, ids: list[str]) -> None:
    for run_id in ids:
        assert client.handle(run_id).result(timeout=60)["n"] is not None


def test_corrupted_run_records_and_ghost_ids(
    fx: Faults, env: tuple[str, redis.Redis, Client]
) -> None:
    url, raw, client = env
    tag = client.keys.tag
    good = _good_runs(client)
    victims = {
        name: WORKFLOWS["fx-chain"].run(name, client=client).id
        for name in ("json", "workflow", "status", "attempt")
    }
    raw.hset(client.keys.run(victims["json"]), "inputJson", "{not json")
    raw.hdel(client.keys.run(victims["workflow"]), "workflow")
    raw.hdel(client.keys.run(victims["status"]), "status")
    raw.hset(client.keys.run(victims["attempt"]), "attempt", "three")
    ghost = "01GHOST0000000000000000000"
    raw.zadd(client.keys.q_ready("fx"), {ghost: 1})
    sup = fx.supervisor(url, modules=MODULES)
    sup.wait_workers(2)
    _all_done(client, good)
    expected = {
        "json": ("InputValidationError", "not valid JSON"),
        "workflow": ("CorruptRecord", "missing its workflow"),
        "status": ("CorruptRecord", "unknown status"),
        "attempt": ("CorruptRecord", "attempt is not an integer"),
    }
    for name, run_id in victims.items():
        with pytest.raises(RunFailedError) as failed:
            client.handle(run_id).result(timeout=30)
        kind, words = expected[name]
        assert failed.value.error is not None
        assert failed.value.error.type == kind and words in failed.value.error.message, (
            name,
            failed.value.error,
        )
        state = client.get_run(run_id)
        assert state is not None and state.status == "failed"
    wait_for(
        lambda: (
            ghost.encode() not in raw.zrange(client.keys.q_ready("fx"), 0, -1)
            and raw.zscore(client.keys.leases, ghost) is None
        ),
        10,
        "the ghost id to go",
    )
    assert not raw.exists(client.keys.run(ghost)), "a run hash was invented for the ghost id"
    assert ghost in sup.log(), "the ghost id was dropped without a word in the log"
    assert client.list_runs(limit=100)  # inspection survives corrupted records
    report = fx.finish(raw, "bad input: corrupted records, ghost id", recovery_s=None)
    report.assert_ok()
    assert report.statuses["succeeded"] == len(good)
    _ = tag


def test_unknown_workflow_and_schema_violation(
    fx: Faults, env: tuple[str, redis.Redis, Client]
) -> None:
    url, raw, client = env
    sup = fx.supervisor(url, modules=MODULES)
    sup.wait_workers(2)
    good = _good_runs(client)
    unknown = client.run_by_name("fx-nope", {"a": 1}, queue_override="fx")
    # This process has the definition: invalid input is refused at the call site.
    with pytest.raises(InputValidationError, match="Expected `int`"):
        client.run_by_name("fx-schema", {"x": "not an int"})
    # A process without it (the schema) enqueues; the worker fails the run.
    bare = create_client(url, prefix=fx.prefix, default=False, registry=Registry())
    invalid = bare.run_by_name("fx-schema", {"x": "not an int"})
    valid = client.run_by_name("fx-schema", {"x": 1, "y": 2})
    with pytest.raises(UnknownWorkflowError):
        unknown.result(timeout=30)
    with pytest.raises(InputValidationError) as failed:
        invalid.result(timeout=30)
    bare.close()
    # result() raises a class that is both RunFailedError and the stored error's class
    err = failed.value
    assert isinstance(err, RunFailedError), err
    assert "Expected `int`" in str(err.error), err.error
    assert valid.result(timeout=30) == 3
    state = client.get_run(invalid.id)
    assert state is not None and state.attempt == 1, "a schema violation was retried"
    _all_done(client, good)
    fx.finish(raw, "bad input: unknown workflow, schema", recovery_s=None).assert_ok()


def test_payload_and_output_limits(fx: Faults, env: tuple[str, redis.Redis, Client]) -> None:
    url, raw, client = env
    before = raw.dbsize()
    with pytest.raises(PayloadTooLargeError, match="limit is 8388608 bytes"):
        WORKFLOWS["fx-chain"].run("x" * (8 * 1024 * 1024), client=client)
    small = create_client(url, prefix=fx.prefix, default=False, max_payload_bytes=4096)
    try:
        with pytest.raises(PayloadTooLargeError, match="max_payload_bytes"):
            WORKFLOWS["fx-chain"].run("x" * 5000, client=small)
    finally:
        small.close()
    assert raw.dbsize() == before, "a refused enqueue left keys behind"
    sup = fx.supervisor(url, modules=MODULES, args=["--max-payload-bytes", "65536"])
    sup.wait_workers(2)
    good = _good_runs(client)
    big_step = client.run_by_name("fx-big-step", 100_000)
    big_out = client.run_by_name("fx-big-output", 100_000)
    fits = client.run_by_name("fx-big-output", 1000)
    for handle in (big_step, big_out):
        with pytest.raises(PayloadTooLargeError) as failed:
            handle.result(timeout=30)
        err = failed.value
        assert isinstance(err, RunFailedError), err
        assert "limit is 65536" in str(err.error)
        state = client.get_run(handle.id)
        assert state is not None and state.attempt == 1, "an oversized output was retried"
    assert fits.result(timeout=30) == "x" * 1000
    steps = client.get_run_steps(big_step.id)
    assert steps and steps[0].status == "failed"
    _all_done(client, good)
    fx.finish(raw, "bad input: payload limits", recovery_s=None).assert_ok()


def test_unencodable_outputs_and_duplicate_steps(
    fx: Faults, env: tuple[str, redis.Redis, Client]
) -> None:
    url, raw, client = env
    sup = fx.supervisor(url, modules=MODULES)
    sup.wait_workers(2)
    good = _good_runs(client)
    for name in ("fx-unencodable-step", "fx-unencodable-output"):
        with pytest.raises(OutputSerializationError, match="not JSON-encodable"):
            client.run_by_name(name).result(timeout=30)
    with pytest.raises(RunFailedError) as failed:
        client.run_by_name("fx-dup-step").result(timeout=30)
    assert _error_type(failed.value) == DuplicateStepError.__name__
    assert "already used" in str(failed.value.error)
    _all_done(client, good)
    fx.finish(raw, "bad input: unencodable, duplicate steps", recovery_s=None).assert_ok()


@pytest.mark.timeout(480)
def test_fan_out_of_5000_children(fx: Faults, env: tuple[str, redis.Redis, Client]) -> None:
    url, raw, client = env
    sup = fx.supervisor(url, modules=MODULES)
    sup.wait_workers(2)
    parent = client.run_by_name("fx-fanout", 5000)
    # CPU-bound (5,000 runs): 120 s was missed once at load 25 on 2 cores
    assert parent.result(timeout=300) == 5000
    report = fx.finish_ok(
        raw, "bad input: fan-out of 5,000 children", recovery_s=None, settle_timeout=120
    )
    assert report.child_runs == 5000 and report.runs == 5001


def test_hostile_ids_and_names(fx: Faults, env: tuple[str, redis.Redis, Client]) -> None:
    url, raw, client = env
    sup = fx.supervisor(url, modules=MODULES)
    sup.wait_workers(2)
    huge = "ü{:} " * 2048  # 10 KB of braces, colons, spaces and unicode
    runs = [
        client.run_by_name(bad.HOSTILE_WORKFLOW, huge, idempotency_key=key)
        for key in ("key with spaces", "{brace}:colon", "ünï 🙂", "k" * 4096)
    ]
    again = client.run_by_name(bad.HOSTILE_WORKFLOW, huge, idempotency_key="{brace}:colon")
    assert again.id == runs[1].id
    for handle in runs:
        out = handle.result(timeout=60)
        assert [o[0] for o in out] == list(bad.HOSTILE_STEPS)
        steps = client.get_run_steps(handle.id)
        assert steps is not None and [s.name for s in steps] == list(bad.HOSTILE_STEPS)
    with pytest.raises(ValueError, match="the limit is 4096"):
        client.run_by_name(bad.HOSTILE_WORKFLOW, 1, idempotency_key="k" * 10_240)
    with pytest.raises(ValueError, match="the limit is 512"):
        define_workflow("w" * 10_240, registry=Registry())(lambda ctx: None)
    with pytest.raises(RunFailedError) as failed:
        client.run_by_name("fx-long-step-name").result(timeout=30)
    assert "the limit is 512" in str(failed.value.error)
    for weird in ("id with spaces", "{x}:y", "ünï 🙂", "z" * 10_240, "*", "\x00"):
        assert client.get_run(weird) is None
        assert client.get_run_steps(weird) is None
        assert client.cancel_run(weird) is False
    fx.finish(raw, "bad input: hostile ids and names", recovery_s=None).assert_ok()


def test_prefix_with_braces_is_refused_clearly(
    fx: Faults, env: tuple[str, redis.Redis, Client]
) -> None:
    url, raw, _client = env
    with pytest.raises(ValueError, match="must not contain"):
        create_client(url, prefix="a{b}", default=False)
    proc = run_supervisor_once(
        *ONE_WORKLOAD_CHILD,
        "--url",
        url,
        "--prefix",
        "a{b}",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "must not contain" in out, out
    assert "Traceback" not in out, f"a bad --prefix should end with one clear line:\n{out}"
    assert raw.dbsize() == 0, "a refused prefix still wrote to Redis"
