"""Stored records: payload JSON, run hash -> RunState, step records, workflow
metadata, and how corrupted records stay readable."""

from __future__ import annotations

import msgspec
import pytest

from redflow_mp import ErrorInfo, RunState, RunStatus, StepStatus, codec

pytestmark = pytest.mark.timeout(10)


def test_payload_round_trip_is_json() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"nested": "ü"}}
    data = codec.encode_json(value)
    assert isinstance(data, bytes)
    assert codec.decode_json(data) == value
    assert codec.decode_json(data.decode()) == value


def test_encode_json_rejects_what_msgspec_cannot_encode() -> None:
    with pytest.raises(TypeError):
        codec.encode_json(object())


def test_run_status_values_and_terminal_flags() -> None:
    assert [s.value for s in RunStatus] == [
        "scheduled",
        "queued",
        "running",
        "suspended",
        "succeeded",
        "failed",
        "canceled",
    ]
    assert RunStatus("queued") == "queued"
    assert {s for s in RunStatus if s.terminal} == {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELED,
    }


def test_run_state_from_full_hash() -> None:
    err = codec.encode_error(ErrorInfo(type="ValueError", message="boom", retryable=True))
    raw = {
        b"id": b"R1",
        b"workflow": b"wf",
        b"queue": b"q",
        b"status": b"failed",
        b"inputJson": b'{"x":1}',
        b"outputJson": b"",
        b"errorJson": err,
        b"attempt": b"2",
        b"maxAttempts": b"3",
        b"createdAt": b"1000",
        b"availableAt": b"1001",
        b"startedAt": b"1002",
        b"finishedAt": b"1003",
        b"updatedAt": b"1004",
        b"cancelRequestedAt": b"",
        b"cancelReason": b"",
        b"idempotencyKey": b"k",
        b"parentRunId": b"P",
        b"cronId": b"wf:c",
        b"timeoutMs": b"2500",
    }
    state = codec.run_state_from_hash(raw)
    assert isinstance(state, RunState)
    assert state.id == "R1"
    assert state.status is RunStatus.FAILED
    assert state.input == {"x": 1}
    assert state.output is None
    assert state.error == ErrorInfo(type="ValueError", message="boom", retryable=True)
    assert (state.attempt, state.max_attempts) == (2, 3)
    assert (state.created_at, state.available_at, state.started_at) == (1000, 1001, 1002)
    assert (state.finished_at, state.updated_at) == (1003, 1004)
    assert state.cancel_requested_at is None
    assert state.cancel_reason is None
    assert state.idempotency_key == "k"
    assert state.parent_run_id == "P"
    assert state.cron_id == "wf:c"
    assert state.timeout == 2.5


def test_corrupted_run_hash_is_still_readable() -> None:
    raw = {
        b"id": b"R2",
        b"status": b"no-such-status",
        b"inputJson": b"{not json",
        b"errorJson": b"[1,2",
        b"attempt": b"abc",
        b"createdAt": b"yesterday",
    }
    state = codec.run_state_from_hash(raw)
    # shown as stored, not as failed (which `runs retry` retried): RunStatus.known
    assert state.status.value == "no-such-status" and not state.status.known
    assert isinstance(state.status, RunStatus) and not state.status.terminal
    assert state.input == "{not json"
    assert state.error is not None
    assert state.error.type == "CorruptRecord"
    assert state.attempt == 1
    assert state.created_at == 0


def test_step_record_uses_spec_field_names() -> None:
    stored = codec.StoredStep(
        seq=0, status="succeeded", started_at=1, finished_at=2, attempt=1, output_json='{"v":1}'
    )
    assert codec.encode_step(stored).startswith(b'{"seq":0,')  # write_step.lua splices it
    doc = msgspec.json.decode(codec.encode_step(stored))
    assert doc == {
        "seq": 0,
        "status": "succeeded",
        "startedAt": 1,
        "finishedAt": 2,
        "attempt": 1,
        "outputJson": '{"v":1}',
    }
    state = codec.step_state("s", codec.decode_step(codec.encode_step(stored)))
    assert state.name == "s"
    assert state.status is StepStatus.SUCCEEDED
    assert state.output == {"v": 1}
    assert state.error is None


def test_failed_step_record_decodes_its_error() -> None:
    err = codec.encode_error(ErrorInfo(type="KeyError", message="'k'")).decode()
    stored = codec.StoredStep(
        seq=0, status="failed", started_at=1, finished_at=2, attempt=3, error_json=err
    )
    state = codec.step_state("s", stored)
    assert state.status is StepStatus.FAILED
    assert state.error is not None and state.error.type == "KeyError"
    assert state.attempt == 3


def test_workflow_meta_from_hash_and_defaults() -> None:
    raw = {
        b"name": b"wf",
        b"queue": b"media",
        b"maxConcurrency": b"4",
        b"app": b"etl",
        b"updatedAt": b"123",
        b"cronJson": b'[{"expression":"* * * * *","timezone":"UTC","input":null}]',
        b"retriesJson": b'{"maxAttempts":3}',
        b"cronIdsJson": b'["wf:abc"]',
    }
    meta = codec.workflow_meta_from_hash(raw)
    assert (meta.name, meta.queue, meta.max_concurrency, meta.app) == ("wf", "media", 4, "etl")
    assert meta.updated_at == 123
    assert meta.cron[0].expression == "* * * * *" and meta.cron[0].timezone == "UTC"
    assert meta.retries is not None and meta.retries.max_attempts == 3
    assert meta.retries.initial_delay == 1.0  # defaults fill what was not stored
    assert meta.cron_ids == ["wf:abc"]
    bare = codec.workflow_meta_from_hash({b"name": b"x"})
    assert (bare.queue, bare.max_concurrency, bare.cron, bare.retries) == ("default", 1, [], None)
    assert bare.priority == 0


def test_priority_fields_read_as_the_scripts_read_them() -> None:
    """Absent is 0; a value outside 0..9 (written by hand) is 0, as the scripts take it."""
    for stored, read in ((None, 0), (b"7", 7), (b"0", 0), (b"42", 0), (b"-3", 0), (b"x", 0)):
        raw = {b"name": b"wf", b"id": b"r", b"status": b"queued"}
        if stored is not None:
            raw[b"priority"] = stored
        assert codec.workflow_meta_from_hash(raw).priority == read
        assert codec.run_state_from_hash(raw).priority == read


def test_decode_error_of_nothing_is_none() -> None:
    assert codec.decode_error(None) is None
    assert codec.decode_error(b"") is None
