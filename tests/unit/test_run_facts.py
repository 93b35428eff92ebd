"""The run's facts (``ctx.run``) and logger (``ctx.logger``) are built when the
handler first reads them, and then hold the same values as when they were built
for every run."""

from __future__ import annotations

import logging
import threading

import pytest

from redflow_mp.claimed import Claimed
from redflow_mp.codec import RunInfo
from redflow_mp.context import Context
from redflow_mp.execution import Execution, RunFacts
from redflow_mp.executor import Outcome, OutcomeMode
from redflow_mp.logs import RunContextFilter, current_run, current_step
from redflow_mp.steps import Step


def _claimed(**over: object) -> Claimed:
    fields: dict[str, object] = {
        "id": "run-1",
        "workflow": "wf",
        "queue": "q",
        "input_json": b"{}",
        "attempt": 2,
        "max_attempts": 5,
        "created_at": 1_700_000_000_000,
        "parent_run_id": "parent-1",
        "timeout_ms": None,
        "cron_id": "cron-1",
        "started_at": 1_700_000_000_500,
        "steps": {},
        "token": "tok",
    }
    fields.update(over)
    return Claimed(**fields)  # type: ignore[arg-type]


EXPECTED = RunInfo(
    id="run-1",
    workflow="wf",
    queue="q",
    attempt=2,
    max_attempts=5,
    created_at=1_700_000_000_000,
    parent_run_id="parent-1",
    cron_id="cron-1",
)


def _context(ex: Execution) -> Context[dict[str, object]]:
    return Context({}, Step(ex), None, ex.cancelled, None, ex.lost, facts=ex)


def test_the_context_builds_run_info_and_logger_only_when_read() -> None:
    ex = Execution(None, _claimed(), 5000, None, None, 4242)  # type: ignore[arg-type]
    ctx = _context(ex)
    assert ex._info is None and ex._logger is None  # nothing made yet
    assert ctx.run == EXPECTED
    assert ctx.run is ctx.run is ex.info  # built once, kept
    assert ex._logger is None
    logger = ctx.logger
    assert logger is ctx.logger is ex.logger
    assert logger.logger.name == "redflow_mp.run"
    assert logger.extra == {
        "workflow": "wf",
        "run_id": "run-1",
        "attempt": 2,
        "step": "",
        "pid": 4242,
    }


def test_a_step_named_on_the_execution_reaches_the_handlers_logger() -> None:
    ex = Execution(None, _claimed(), 5000, None, None, 4242)  # type: ignore[arg-type]
    ctx = _context(ex)
    ex.set_step("charge")  # the adapter is made here, before the handler reads it
    try:
        assert ctx.logger.extra is not None and ctx.logger.extra["step"] == "charge"
    finally:
        current_step.set("")


def test_a_run_without_parent_or_cron_has_none_in_its_info() -> None:
    facts = RunFacts(_claimed(parent_run_id=None, cron_id=None), 1)
    assert facts.info.parent_run_id is None and facts.info.cron_id is None
    assert facts.info.attempt == 2 and facts.info.max_attempts == 5


def test_a_context_given_run_and_logger_uses_them() -> None:
    logger = logging.LoggerAdapter(logging.getLogger("x"), {})
    ctx: Context[int] = Context(1, None, EXPECTED, threading.Event(), logger)  # type: ignore[arg-type]
    assert ctx.run is EXPECTED and ctx.logger is logger
    other = RunInfo(**{**{f: getattr(EXPECTED, f) for f in EXPECTED.__struct_fields__}, "id": "b"})
    ctx.run = other
    assert ctx.run is other
    with pytest.raises(TypeError):
        Context(1, None, None, threading.Event(), logger)  # type: ignore[arg-type]


def test_an_outcome_has_info_and_logger_from_its_facts_and_none_without() -> None:
    assert Outcome(OutcomeMode.LOST).info is None
    assert Outcome(OutcomeMode.LOST).logger is None
    outcome = Outcome(OutcomeMode.FAILED, facts=RunFacts(_claimed(), 7))
    assert outcome.info == EXPECTED
    assert outcome.logger is not None and outcome.logger.extra is not None
    assert outcome.logger.extra["pid"] == 7


def test_records_of_plain_loggers_get_the_claimed_runs_fields() -> None:
    record = logging.LogRecord("user", logging.INFO, __file__, 1, "hi", (), None)
    token = current_run.set(_claimed())
    step = current_step.set("s1")
    try:
        assert RunContextFilter().filter(record)
    finally:
        current_step.reset(step)
        current_run.reset(token)
    fields = tuple(getattr(record, f) for f in ("workflow", "run_id", "attempt", "step"))
    assert fields == ("wf", "run-1", 2, "s1")


def test_the_executors_constant_for_a_none_output_is_what_the_encoder_writes() -> None:
    from redflow_mp.codec import decode_json, encode_json
    from redflow_mp.runs import encode_payload

    assert encode_json(None) == encode_payload(None, "workflow output", 1024) == b"null"
    assert decode_json(b"null") is None
