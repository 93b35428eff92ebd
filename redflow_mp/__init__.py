"""redflow-mp: durable multi-step workflows for Python, with state in Redis.

Importing this package starts nothing and opens no sockets. The public API
(SPEC §2) is listed in ``__all__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# First: imports redis-py without the OpenTelemetry modules it would pull in.
from . import redispy as _redispy  # noqa: F401  # isort: skip
from .client import Client, create_client, get_default_client
from .codec import (
    AttemptState,
    ErrorInfo,
    RunInfo,
    RunState,
    RunStatus,
    StepState,
    StepStatus,
    WorkflowMeta,
)
from .connection import NotReplicatedError
from .context import AsyncContext, Context, FailureContext
from .cron import Cron
from .define import define_workflow
from .errors import (
    ConfigError,
    DuplicateStepError,
    DuplicateWorkflowError,
    InputValidationError,
    LeaseLostError,
    NonRetriableError,
    OutputSerializationError,
    PayloadTooLargeError,
    RedflowError,
    RedisBusyError,
    RedisClusterDownError,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
    RunNotResumableError,
    ShardsMismatchError,
    StepExitError,
    StepTimeoutError,
    UnknownWorkflowError,
    WaitDeadlockError,
    WrongTypeError,
)
from .handle import RunHandle
from .registry import Registry, Workflow, get_default_registry
from .retry import Retries
from .wait_scripts import EventLimitError

if TYPE_CHECKING:
    from .worker import Worker


def __getattr__(name: str) -> Any:
    """``Worker`` is imported on first use, not with the package: ``python -m
    redflow_mp.worker`` (not a command; it says which ones are) then runs without
    runpy's RuntimeWarning about a module already imported by its package."""
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AsyncContext",
    "AttemptState",
    "Client",
    "ConfigError",
    "Context",
    "Cron",
    "DuplicateStepError",
    "DuplicateWorkflowError",
    "ErrorInfo",
    "EventLimitError",
    "FailureContext",
    "InputValidationError",
    "LeaseLostError",
    "NonRetriableError",
    "NotReplicatedError",
    "OutputSerializationError",
    "PayloadTooLargeError",
    "RedflowError",
    "RedisBusyError",
    "RedisClusterDownError",
    "RedisOutOfMemoryError",
    "RedisReadOnlyError",
    "Registry",
    "ResultTimeoutError",
    "Retries",
    "RunCanceledError",
    "RunFailedError",
    "RunHandle",
    "RunInfo",
    "RunNotResumableError",
    "RunState",
    "RunStatus",
    "ShardsMismatchError",
    "StepExitError",
    "StepState",
    "StepStatus",
    "StepTimeoutError",
    "UnknownWorkflowError",
    "WaitDeadlockError",
    "Worker",
    "Workflow",
    "WorkflowMeta",
    "WrongTypeError",
    "__version__",
    "create_client",
    "define_workflow",
    "get_default_client",
    "get_default_registry",
]
