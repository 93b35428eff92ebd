"""``define_workflow``: turn a handler into a registered :class:`~redflow_mp.registry.Workflow`.

The decorator is where types enter: from the handler's annotation
(``ctx: Context[I]``) and return type (``O``; for ``async def``, what it
returns once awaited) it builds a ``Workflow[I, O]``, so ``workflow.run(input)``
takes an ``I`` and gives a ``RunHandle[O]``. (``run()`` also takes a mapping:
the JSON form a ``schema`` converts to ``I`` when the run executes.) Options are
checked at the decorator line, before the handler is known, so a bad
definition fails where it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar, overload

from .context import AsyncContext, Context, FailureContext
from .cron import Cron
from .options import check_name
from .registry import Registry, Workflow, get_default_registry
from .retry import Retries

__all__ = ["Handler", "WorkflowDecorator", "define_workflow"]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
O = TypeVar("O")  # noqa: E741 - output type of a workflow

# What a handler may be: ``def h(ctx: Context[I]) -> O`` or
# ``async def h(ctx: AsyncContext[I]) -> O`` (an ``AsyncContext``'s steps are
# awaitable; parameters are contravariant, so an async handler annotated with
# ``Context`` fits too).
Handler = Callable[[AsyncContext[I]], Coroutine[Any, Any, O]] | Callable[[Context[I]], O]
FailureHook = Callable[[FailureContext[Any]], Any]


class WorkflowDecorator(Protocol):
    """What ``define_workflow("name", ...)`` returns: a decorator that types the
    workflow by its handler (``Workflow[I, O]``)."""

    @overload
    def __call__(
        self, handler: Callable[[AsyncContext[I]], Coroutine[Any, Any, O]], /
    ) -> Workflow[I, O]: ...

    @overload
    def __call__(self, handler: Callable[[Context[I]], O], /) -> Workflow[I, O]: ...


@overload
def define_workflow(
    name: Callable[[AsyncContext[I]], Coroutine[Any, Any, O]], /
) -> Workflow[I, O]: ...


@overload
def define_workflow(name: Callable[[Context[I]], O], /) -> Workflow[I, O]: ...


@overload
def define_workflow(
    name: str,
    *,
    queue: str = ...,
    max_concurrency: int = ...,
    schema: Any = ...,
    cron: Iterable[Cron] = ...,
    retries: Retries | None = ...,
    on_failure: FailureHook | None = ...,
    registry: Registry | None = ...,
    timeout: float | None = ...,
    priority: int = ...,
    rate_limit: str | None = ...,
) -> WorkflowDecorator: ...


def define_workflow(
    name: str | Handler[Any, Any],
    *,
    queue: str = "default",
    max_concurrency: int = 1,
    schema: Any = None,
    cron: Iterable[Cron] = (),
    retries: Retries | None = None,
    on_failure: FailureHook | None = None,
    registry: Registry | None = None,
    timeout: float | None = None,
    priority: int = 0,
    rate_limit: str | None = None,
) -> Workflow[Any, Any] | Callable[[Handler[Any, Any]], Workflow[Any, Any]]:
    """Define a workflow; use as ``@define_workflow("name", queue=..., ...)``.

    Args:
        name: unique name within the registry (also usable bare: ``@define_workflow``
            takes the function's name).
        queue: the queue its runs are enqueued on.
        max_concurrency: most runs of this workflow running at once, across all
            supervisors (default 1).
        schema: type the input is converted to (a ``msgspec.Struct`` or any type
            msgspec can convert to). A process that has this definition refuses
            input that does not convert at enqueue (``InputValidationError``);
            a run enqueued by name elsewhere fails in the worker, without retry.
        cron: ``Cron(...)`` triggers.
        retries: ``Retries(max_attempts=...)``; default one attempt.
        on_failure: called once with a failure context when a run fails for good
            (after the failure is written). Under a supervisor, a worker still
            in its hook after 60 s is killed and replaced.
        registry: registry to add to (default: :func:`get_default_registry`).
        timeout: hard limit in seconds per run, enforced by the supervisor.
        priority: 0 (default) to 9; a worker claims the highest-priority ready run
            of the queues it serves first, oldest first within a priority. A run
            may override it. No starvation rule: low-priority runs wait as long as
            higher ones keep coming.
        rate_limit: ``"100/m"`` (also ``/s``, ``/h``): at most that many runs of
            this workflow start in any one period (a sliding window), across all
            supervisors. A run over the limit waits in its
            queue's scheduled set until its turn, holding no process. Enforced
            from the synced metadata (a supervisor syncs at start). A malformed
            rate raises ``ValueError`` (``TypeError`` for a non-str) here.
    """
    target = registry if registry is not None else get_default_registry()
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
            priority=priority,
            rate_limit=rate_limit,
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
        priority=priority,
        rate_limit=rate_limit,
    )
    wf_name = name

    def decorator(handler: Handler[Any, Any]) -> Workflow[Any, Any]:
        return wrap(handler, wf_name)

    return decorator


def _placeholder(ctx: Any) -> None:
    """Stand-in handler used to validate options before the real one is known."""
