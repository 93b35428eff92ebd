"""The exception tree of redflow-mp.

Everything a caller can catch derives from :class:`RedflowError`. Errors that
describe a *run's* outcome (raised by ``RunHandle.result``) carry the stored
:class:`ErrorInfo`, never a pickled exception: failures cross processes as
msgspec JSON. ``ErrorInfo`` is defined here, at the bottom of the library,
because both the exceptions and the stored records use it.

Invariant: a handler steers retries by raising :class:`NonRetriableError` (or a
subclass); every other exception from a handler is retried while attempts
remain.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis

from .options import shown_run_id

__all__ = [
    "NETWORK_ERRORS",
    "TRANSIENT_ERRORS",
    "ConfigError",
    "DuplicateStepError",
    "DuplicateWorkflowError",
    "ErrorInfo",
    "InputValidationError",
    "LeaseLostError",
    "NonRetriableError",
    "OutputSerializationError",
    "PayloadTooLargeError",
    "RedflowError",
    "RedisBusyError",
    "RedisClusterDownError",
    "RedisOutOfMemoryError",
    "RedisReadOnlyError",
    "ResultTimeoutError",
    "RunCanceledError",
    "RunFailedError",
    "RunNotResumableError",
    "ShardsMismatchError",
    "StepExitError",
    "StepTimeoutError",
    "UnknownWorkflowError",
    "WaitDeadlockError",
    "WrongTypeError",
]


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A failure as it crosses processes: type name, message, retryable flag, traceback."""

    type: str
    message: str
    retryable: bool = True
    traceback: str | None = None

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access (``error["message"]``), for code that treats errors as JSON."""
        if key in ("type", "message", "retryable", "traceback"):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class RedflowError(Exception):
    """Root of every error raised by redflow-mp."""


class ConfigError(RedflowError):
    """A setting is unknown or has a bad value; the message names key and source."""


class NonRetriableError(RedflowError):
    """Raise from a handler or step to fail the run now, without further attempts."""


class InputValidationError(NonRetriableError):
    """The run's input does not match the workflow's schema (never retried)."""


class UnknownWorkflowError(NonRetriableError):
    """No workflow of that name is registered where the run executes (never retried)."""


class OutputSerializationError(NonRetriableError):
    """A handler or step returned a value msgspec cannot encode as JSON (never retried)."""


class PayloadTooLargeError(NonRetriableError, ValueError):
    """An input or output exceeds the client's ``max_payload_bytes`` limit."""


class StepTimeoutError(RedflowError, TimeoutError):
    """A step ran longer than its ``timeout``; raised inside the handler."""


class StepExitError(RedflowError):
    """A step function raised ``SystemExit`` (``sys.exit()``, or a library that ends
    with it: a click command's ``main()`` does even on success). It is the step's
    error, retried like any other, not the end of the worker process; ``code`` is
    the exit code it was given."""

    def __init__(self, step: str, code: object) -> None:
        super().__init__(f"step {step!r} called sys.exit({code!r})")
        self.step = step
        self.code = code

    def __reduce__(self) -> Any:
        return (StepExitError, (self.step, self.code))


class WaitDeadlockError(NonRetriableError):
    """A durable wait could never end: the awaited child can never start because
    every ``max_concurrency`` slot of its workflow is held by runs that wait
    (the waiting parent included). Raised by the wait step instead of hanging."""


class DuplicateStepError(RedflowError):
    """The same step name was used twice within one execution of a handler."""


class DuplicateWorkflowError(RedflowError, ValueError):
    """A workflow name was defined twice in one registry."""


class LeaseLostError(RedflowError):
    """This process no longer holds the run's lease; its writes were rejected."""


class RedisOutOfMemoryError(RedflowError):
    """Redis refused a write because it reached ``maxmemory``; nothing was changed.

    Scripts that write carry a ``#!lua`` shebang on Redis >= 7, so the server
    refuses them before they start: a transition is never half-applied. Workers
    treat this as transient and retry with backoff.
    """


class RedisBusyError(RedflowError, redis.ResponseError):
    """Redis refused a command with ``BUSY``: a script or function (another
    program's, on a shared server) has run past ``busy-reply-threshold``; nothing
    was changed. Workers treat this as transient and retry with backoff.

    Raised by writes and reads alike (``get_run``, ``list_runs``...). Also a
    ``redis.ResponseError`` (the class redis-py gives the raw reply), so code
    that caught that on a read keeps working.
    """


class RedisClusterDownError(RedflowError):
    """A Redis Cluster kept answering ``CLUSTERDOWN``, ``TRYAGAIN``, ``ASK`` or
    ``MOVED`` (a failover, a master out of reach under
    ``cluster-require-full-coverage yes``, a slot being moved) for longer than a
    command's patience (``CLUSTER_PATIENCE``, 10 s); the command was not run
    (nothing was changed, except the writes a script stopped at a key being
    moved made before: a resend is safe, as after a network error). Workers and
    the supervisor treat it as transient and retry with backoff.
    """


class RedisReadOnlyError(RedflowError):
    """Redis refused a write and changed nothing because it does not accept writes
    now: it is a read-only replica (``READONLY``: the URL names a replica, or a
    failover without Sentinel demoted the master), it cannot persist
    (``MISCONF``: an RDB save failed, e.g. a full disk, under the default
    ``stop-writes-on-bgsave-error yes``), or it has fewer replicas than
    ``min-replicas-to-write`` (``NOREPLICAS``). Workers and the supervisor treat
    it as transient and retry with backoff, as for :class:`RedisOutOfMemoryError`.
    """


class ResultTimeoutError(RedflowError, TimeoutError):
    """``RunHandle.result(timeout=...)`` ran out; the run itself goes on."""


class _RunOutcomeError(RedflowError):
    """Base of the errors that report how a run ended."""

    def __init__(self, run_id: str, error: ErrorInfo | None, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error = error


class RunFailedError(_RunOutcomeError):
    """The run ended ``failed``; ``error`` holds the stored cause (type, message, traceback)."""

    def __init__(self, run_id: str, error: ErrorInfo | None) -> None:
        detail = f"{error.type}: {error.message}" if error is not None else "no error recorded"
        super().__init__(run_id, error, f"run {run_id} failed: {detail}")


class RunCanceledError(_RunOutcomeError):
    """The run was canceled; raised by ``result()`` and at a step boundary inside a
    handler whose run was asked to cancel."""

    def __init__(
        self, run_id: str = "", error: ErrorInfo | None = None, reason: str | None = None
    ) -> None:
        text = f"run {run_id} was canceled" if run_id else "run was canceled"
        if reason:
            text += f": {reason}"
        super().__init__(run_id, error, text)
        self.reason = reason


class RunNotResumableError(RedflowError, ValueError):
    """``resume_run`` of a run that does not exist (``status`` None) or is not
    ``failed`` or ``canceled`` (``status`` says what it is); nothing was changed."""

    def __init__(self, run_id: str, status: str | None) -> None:
        shown = shown_run_id(run_id)  # a 1 MB "id" from a request: cut, as everywhere
        if status is None:
            text = f"run {shown} does not exist; nothing to resume"
        else:
            text = (
                f"run {shown} is {status}; only a failed or canceled run can be resumed "
                "(nothing was changed)"
            )
        super().__init__(text)
        self.run_id = run_id
        self.status = status


# Error types a failed run may carry that are also exported classes: ``result()``
# raises an exception that is both a RunFailedError and the original class, so
# callers can catch either. Built once at import; never mutated.
_COMBINED: dict[str, type[RunFailedError]] = {
    cls.__name__: type(f"RunFailed{cls.__name__}", (RunFailedError, cls), {})
    for cls in (
        NonRetriableError,
        InputValidationError,
        UnknownWorkflowError,
        OutputSerializationError,
        PayloadTooLargeError,
        StepTimeoutError,
        DuplicateStepError,
        LeaseLostError,
        WaitDeadlockError,
    )
}


def run_failed(run_id: str, error: ErrorInfo | None) -> RunFailedError:
    """Build the exception ``result()`` raises for a failed run."""
    cls = _COMBINED.get(error.type, RunFailedError) if error is not None else RunFailedError
    return cls(run_id, error)


# Redis trouble, as redis-py and our transport raise it (both wrap socket errors
# in these classes). The one definition of both tuples; the worker, transport,
# executor and supervisor all use them:
# - NETWORK_ERRORS: the connection failed or timed out, so a reply may be lost
#   (a resend must be idempotent);
# - TRANSIENT_ERRORS: trouble that is not the run's fault and passes by itself:
#   the network, or Redis refusing writes at maxmemory, as a read-only replica,
#   after a failed save (MISCONF) or without its min-replicas, answering BUSY
#   while a long script runs, or a cluster answering CLUSTERDOWN/TRYAGAIN/ASK/MOVED
#   past a command's patience (nothing was applied).
#   Ridden out with backoff, never charged as an attempt of a run.
# Neither holds OSError: the built-in TimeoutError is one, and so are
# StepTimeoutError and ResultTimeoutError, which are never Redis trouble.
NETWORK_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    *NETWORK_ERRORS,
    RedisOutOfMemoryError,
    RedisReadOnlyError,
    redis.ReadOnlyError,  # a plain write (not a script) sent to a read-only replica
    RedisBusyError,
    RedisClusterDownError,
)


class ShardsMismatchError(RedflowError):
    """The ``shards`` setting differs from the shard count the keyspace records (or
    a shard's hash tag holds another application's keyspace). Re-shard with
    ``redflow migrate --shards N`` (supervisors stopped) or use the recorded count."""


class WrongTypeError(RedflowError, redis.ResponseError):
    """A key under the prefix holds another type of value than redflow-mp writes
    there (set by hand or by another program, or a keyspace of an older version);
    Redis refused the command (``WRONGTYPE``). Raised by writes and reads alike;
    also a ``redis.ResponseError`` (the class redis-py gives the raw reply), so
    code that caught that on a read keeps working."""
