"""Workflow definitions and the registries that hold them.

``define_workflow`` turns a handler into a :class:`Workflow` and registers it in
the default registry (or the one given). A registry maps names to workflows;
a name defined twice in one registry is an error at definition time. The
supervisor freezes the registry before forking children, so every child sees
the same table.

The default registry is the only module-level mutable state of the library
(besides the process's default client, SPEC §2).
"""

from __future__ import annotations

import builtins
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .cron import Cron
from .errors import DuplicateWorkflowError
from .retry import Retries

if TYPE_CHECKING:
    from .client import Client, RunHandle
    from .context import AsyncContext, Context, FailureContext

__all__ = ["Registry", "Workflow", "define_workflow", "get_default_registry"]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
O = TypeVar("O")  # noqa: E741 - output type of a workflow

MAX_NAME_LENGTH = 512

# An ``async def`` handler is typically annotated with ``AsyncContext`` (whose
# ``step`` methods are awaitable); parameters are contravariant, so it must be
# listed on its own or mypy rejects every such handler at ``define_workflow``.
Handler = (
    Callable[["Context[I]"], O]
    | Callable[["Context[I]"], Awaitable[O]]
    | Callable[["AsyncContext[I]"], Awaitable[O]]
)


def check_name(value: object, what: str) -> str:
    """Validate a workflow, queue or step name: a non-blank str of bounded length."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    return value


def check_timeout(value: object, what: str) -> float | None:
    """Validate an optional positive number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds or None")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds")
    return float(value)


class Workflow(Generic[I, O]):
    """A registered workflow: its handler and options. Start runs with :meth:`run`."""

    __slots__ = (
        "cron",
        "handler",
        "is_async",
        "max_concurrency",
        "name",
        "on_failure",
        "queue",
        "retries",
        "schema",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        handler: Handler[I, O],
        *,
        queue: str = "default",
        max_concurrency: int = 1,
        schema: Any = None,
        cron: Iterable[Cron] = (),
        retries: Retries | None = None,
        on_failure: Callable[[FailureContext[I]], Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = check_name(name, "workflow name")
        if not callable(handler):
            raise TypeError("a workflow handler must be callable")
        self.handler = handler
        self.queue = check_name(queue, "queue")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError("max_concurrency must be an int")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.max_concurrency = max_concurrency
        if schema is not None and not (isinstance(schema, type) or _is_type_form(schema)):
            raise TypeError("schema must be a type (a msgspec.Struct or any type msgspec converts)")
        self.schema = schema
        if isinstance(cron, Cron | str):
            raise TypeError("cron must be a list of Cron(...) triggers")
        crons = tuple(cron)
        for c in crons:
            if not isinstance(c, Cron):
                raise TypeError("cron must be a list of Cron(...) triggers")
        self.cron = crons
        if retries is not None and not isinstance(retries, Retries):
            raise TypeError("retries must be a Retries(...) instance")
        self.retries = retries or Retries()
        if on_failure is not None and not callable(on_failure):
            raise TypeError("on_failure must be callable")
        self.on_failure = on_failure
        self.timeout = check_timeout(timeout, "timeout")
        self.is_async = inspect.iscoroutinefunction(handler)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} queue={self.queue!r}>"

    def run(
        self,
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        client: Client | None = None,
    ) -> RunHandle:
        """Enqueue a run of this workflow and return its handle.

        Args:
            input: the run's input (JSON-encodable; validated against ``schema``
                when the run executes).
            run_at: an aware datetime or epoch seconds; a future time delays the run.
            queue_override: enqueue on this queue instead of the workflow's.
            idempotency_key: the same key returns the same run while the key lives.
            idempotency_ttl: seconds the key lives (default 7 days).
            timeout: hard limit in seconds for this run (overrides the workflow's).
            client: the client to use; default: the process's default client.
        """
        from .client import client_or_default

        return client_or_default(client).enqueue_workflow(
            self,
            input,
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
        )


def _is_type_form(value: object) -> bool:
    """True for typing constructs msgspec can convert to (``list[int]``, unions, ...)."""
    return getattr(value, "__origin__", None) is not None or type(value).__module__ == "typing"


class Registry:
    """A name -> :class:`Workflow` table."""

    __slots__ = ("_frozen", "_workflows")

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        self._frozen = False

    def add(self, workflow: Workflow[Any, Any]) -> None:
        if not isinstance(workflow, Workflow):
            raise TypeError("only Workflow objects can be registered")
        if self._frozen:
            raise RuntimeError(
                "this registry is frozen (workers are running); define workflows "
                "at import time of the modules given to the supervisor"
            )
        if workflow.name in self._workflows:
            raise DuplicateWorkflowError(
                f"workflow {workflow.name!r} is already defined in this registry"
            )
        self._workflows[workflow.name] = workflow

    def get(self, name: str) -> Workflow[Any, Any] | None:
        return self._workflows.get(name)

    def list(self) -> builtins.list[Workflow[Any, Any]]:
        return [*self._workflows.values()]

    def queues(self) -> builtins.list[str]:
        """The distinct queues of the registered workflows, in definition order."""
        return list(dict.fromkeys(wf.queue for wf in self._workflows.values()))

    def freeze(self) -> None:
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __len__(self) -> int:
        return len(self._workflows)

    def __iter__(self) -> Iterator[Workflow[Any, Any]]:
        return iter(list(self._workflows.values()))


_default_registry = Registry()


def get_default_registry() -> Registry:
    """The registry ``define_workflow`` fills when no ``registry=`` is given."""
    return _default_registry


@overload
def define_workflow(name: Callable[..., Any], /) -> Workflow[Any, Any]: ...


@overload
def define_workflow(
    name: str,
    *,
    queue: str = ...,
    max_concurrency: int = ...,
    schema: Any = ...,
    cron: Iterable[Cron] = ...,
    retries: Retries | None = ...,
    on_failure: Callable[..., Any] | None = ...,
    registry: Registry | None = ...,
    timeout: float | None = ...,
) -> Callable[[Handler[Any, Any]], Workflow[Any, Any]]: ...


def define_workflow(
    name: str | Callable[..., Any],
    *,
    queue: str = "default",
    max_concurrency: int = 1,
    schema: Any = None,
    cron: Iterable[Cron] = (),
    retries: Retries | None = None,
    on_failure: Callable[..., Any] | None = None,
    registry: Registry | None = None,
    timeout: float | None = None,
) -> Workflow[Any, Any] | Callable[[Handler[Any, Any]], Workflow[Any, Any]]:
    """Define a workflow; use as ``@define_workflow("name", queue=..., ...)``.

    Args:
        name: unique name within the registry (also usable bare: ``@define_workflow``
            takes the function's name).
        queue: the queue its runs are enqueued on.
        max_concurrency: most runs of this workflow running at once, across all
            supervisors (default 1).
        schema: type the input is converted to (a ``msgspec.Struct`` or any type
            msgspec can convert to); a mismatch fails the run without retry.
        cron: ``Cron(...)`` triggers.
        retries: ``Retries(max_attempts=...)``; default one attempt.
        on_failure: called once with a failure context when a run fails for good.
        registry: registry to add to (default: :func:`get_default_registry`).
        timeout: hard limit in seconds per run, enforced by the supervisor.
    """
    target = registry if registry is not None else _default_registry
    if registry is not None and not isinstance(registry, Registry):
        raise TypeError("registry must be a Registry")

    def wrap(handler: Handler[Any, Any], wf_name: str) -> Workflow[Any, Any]:
        wf: Workflow[Any, Any] = Workflow(
            wf_name,
            handler,
            queue=queue,
            max_concurrency=max_concurrency,
            schema=schema,
            cron=cron,
            retries=retries,
            on_failure=on_failure,
            timeout=timeout,
        )
        target.add(wf)
        return wf

    if callable(name) and not isinstance(name, str):
        fn = name
        return wrap(fn, getattr(fn, "__name__", ""))
    check_name(name, "workflow name")
    # Validate options now, so a bad definition fails at the decorator line.
    Workflow(
        name,
        _placeholder,
        queue=queue,
        max_concurrency=max_concurrency,
        schema=schema,
        cron=cron,
        retries=retries,
        on_failure=on_failure,
        timeout=timeout,
    )
    wf_name = name

    def decorator(handler: Handler[Any, Any]) -> Workflow[Any, Any]:
        return wrap(handler, wf_name)

    return decorator


def _placeholder(ctx: Any) -> None:
    """Stand-in handler used to validate options before the real one is known."""


def reset_default_registry(registry: Registry | None = None) -> Registry:
    """Replace the default registry (a fresh one unless given) and return it.

    For code reloaders only (the supervisor's SIGHUP): workflow modules imported
    again register into the new registry instead of colliding with the old one.
    """
    global _default_registry
    _default_registry = registry if registry is not None else Registry()
    return _default_registry
