"""What the sync and async clients share that does no I/O: the checks of
``create_client`` / ``create_async_client``, the :class:`RunOptions` of a run
(or a batch) built from an enqueue method's keyword arguments, and the target of
a workflow this process knows.

``client.py`` and ``aio.py`` mirror each other where one awaits and the other does
not; the pure logic they both need lives here once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis.exceptions import ResponseError

from .errors import RedflowError
from .listing import read_error
from .options import NO_OPTIONS, RunOptions, check_name, shown_run_id
from .registry import Registry, Workflow
from .runs import EnqueueTarget, target_of_definition
from .shards import check_shards

__all__ = [
    "batch_options",
    "cascade_refused",
    "check_client_args",
    "known_target",
    "run_options",
]


def check_client_args(
    url: str | None,
    redis: object,
    redis_functions: object,
    shards: object,
    verify_shards: object,
    registry: object = None,
) -> None:
    """The argument checks ``create_client`` and ``create_async_client`` make
    before they build anything, in this order."""
    check_shards(shards)
    if not isinstance(verify_shards, bool):
        raise TypeError("verify_shards must be a bool")
    if url is not None and redis is not None:
        raise ValueError("pass either url or redis, not both")
    if not isinstance(redis_functions, bool):
        raise TypeError("redis_functions must be a bool")
    if registry is not None and not isinstance(registry, Registry):
        # A str was kept and failed the first run_by_name with AttributeError
        # ('str' object has no attribute 'get'); a dict read as an empty registry.
        raise TypeError(
            f"registry must be a redflow_mp Registry or None, not {type(registry).__name__}"
        )


def run_options(
    run_at: datetime | float | None,
    queue_override: str | None,
    idempotency_key: str | None,
    idempotency_ttl: float | None,
    timeout: float | None,
    priority: int | None,
    parent_run_id: str | None,
) -> RunOptions:
    """The checked options of one run (``RunOptions.of``): :data:`NO_OPTIONS`,
    without that call, for the common run that sets none."""
    if (
        run_at is None
        and queue_override is None
        and idempotency_key is None
        and idempotency_ttl is None
        and timeout is None
        and priority is None
        and not parent_run_id
    ):  # what RunOptions.of() answers, without its keyword call
        return NO_OPTIONS
    return RunOptions.of(
        run_at=run_at,
        queue_override=queue_override,
        idempotency_key=idempotency_key,
        idempotency_ttl=idempotency_ttl,
        timeout=timeout,
        priority=priority,
        parent_run_id=parent_run_id,
    )


def batch_options(
    run_at: datetime | float | None,
    queue_override: str | None,
    idempotency_ttl: float | None,
    timeout: float | None,
    priority: int | None,
) -> RunOptions:
    """The checked options every run of a batch shares (its keys are per item)."""
    return run_options(run_at, queue_override, None, idempotency_ttl, timeout, priority, None)


def known_target(
    registry: Registry, workflow: Workflow[Any, Any] | str, options: RunOptions
) -> EnqueueTarget | None:
    """Where runs of ``workflow`` go when this process knows it: a definition, or a
    name ``registry`` holds (checked first). None for a name it does not hold: its
    synced metadata decides (``target_of_name``), read by the caller on its own
    transport."""
    if isinstance(workflow, Workflow):
        return target_of_definition(workflow, options)
    wf = registry.get(check_name(workflow, "workflow name"))
    return None if wf is None else target_of_definition(wf, options)


def cascade_refused(exc: ResponseError, run_id: str) -> Exception | None:
    """The error ``cancel_run`` raises when Redis refused a read or cancel of the
    cascade that follows the cancel of ``run_id`` (``WRONGTYPE``: a children set
    a neighbour replaced; ``BUSY``): the library's class, naming the key (as the
    library's error or redis-py's pipeline error names it) and saying that the
    run itself was canceled. None for another refusal (raised as it is). It used
    to be the bare reply, once the run was canceled."""
    named = exc if isinstance(exc, RedflowError) else read_error(exc, [])
    if named is None:
        return None
    return type(named)(
        f"run {shown_run_id(run_id)} was canceled, but the cancel of its run_workflow "
        f"children stopped: {named}"
    )
