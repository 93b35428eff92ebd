"""The exception tree (SPEC §2) and the combined classes ``result()`` raises."""

from __future__ import annotations

import pytest

import redflow_mp
from redflow_mp import (
    DuplicateStepError,
    ErrorInfo,
    InputValidationError,
    LeaseLostError,
    NonRetriableError,
    OutputSerializationError,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
    StepTimeoutError,
    UnknownWorkflowError,
)
from redflow_mp.errors import run_failed

pytestmark = pytest.mark.timeout(10)


def test_every_spec_error_is_exported_and_a_redflow_error() -> None:
    for name in (
        "RedflowError",
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
    ):
        cls = getattr(redflow_mp, name)
        assert name in redflow_mp.__all__
        assert issubclass(cls, RedflowError)


def test_every_error_the_library_raises_at_users_is_exported_too() -> None:
    # SPEC §2: errors are importable from redflow_mp; the README lists these with them.
    for name in (
        "WaitDeadlockError",  # a durable wait that can never end (issue 12)
        "EventLimitError",  # send_event past max_events_per_run (issue 12)
        "RunNotResumableError",
        "PayloadTooLargeError",
        "ShardsMismatchError",  # create_client(shards=N) against another count
        "WrongTypeError",  # a key of another type under the prefix (send_event names it)
    ):
        cls = getattr(redflow_mp, name)
        assert name in redflow_mp.__all__
        assert issubclass(cls, RedflowError)


def test_result_timeout_is_both_redflow_error_and_timeout_error() -> None:
    assert issubclass(ResultTimeoutError, RedflowError)
    assert issubclass(ResultTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise ResultTimeoutError("late")


def test_non_retriable_family() -> None:
    for cls in (InputValidationError, UnknownWorkflowError, OutputSerializationError):
        assert issubclass(cls, NonRetriableError)
    assert issubclass(StepTimeoutError, TimeoutError)


def test_run_failed_carries_the_stored_error() -> None:
    info = ErrorInfo(type="ValueError", message="bad", traceback="tb")
    exc = run_failed("R1", info)
    assert type(exc) is RunFailedError
    assert exc.run_id == "R1"
    assert exc.error is info
    assert "ValueError: bad" in str(exc)
    assert "no error recorded" in str(run_failed("R2", None))


@pytest.mark.parametrize(
    "cls",
    [
        NonRetriableError,
        InputValidationError,
        UnknownWorkflowError,
        OutputSerializationError,
        StepTimeoutError,
        DuplicateStepError,
        LeaseLostError,
    ],
)
def test_run_failed_is_also_the_original_class(cls: type[Exception]) -> None:
    exc = run_failed("R", ErrorInfo(type=cls.__name__, message="m"))
    assert isinstance(exc, RunFailedError)
    assert isinstance(exc, cls)


def test_run_canceled_message_has_reason() -> None:
    exc = RunCanceledError("R", None, "user asked")
    assert exc.reason == "user asked"
    assert "R" in str(exc) and "user asked" in str(exc)
