"""Workflow definitions, the registries that hold them, and the process defaults.

A :class:`Workflow` is a handler plus its options (queue, concurrency, schema,
cron, retries, ``on_failure``, timeout, priority); :func:`~redflow_mp.define.define_workflow`
builds and registers one. A :class:`Registry` maps names to workflows; a name
defined twice in one registry is an error at definition time. The supervisor
freezes the registry before forking children, so every child sees the same
table.

Process defaults (SPEC §2): the default registry that ``define_workflow``
fills, and the slots of the process's default clients that ``Workflow.run()``
and ``Workflow.arun()`` use without ``client=`` (``create_client()`` and
``create_async_client()`` fill them). They are the only module-level mutable
state of the library. The clients are known here only as a :class:`RunStarter`
and an :class:`AsyncRunStarter` (what ``run`` and ``arun`` need), so
definitions sit below the clients that enqueue them.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from .cron import Cron, cron_id_for
from .errors import DuplicateWorkflowError, RedflowError
from .handle import AsyncRunHandle, RunHandle
from .options import check_name, check_priority, check_timeout
from .ratelimit import parse_rate_limit
from .retry import Retries

__all__ = [
    "AsyncRunStarter",
    "Registry",
    "RunStarter",
    "Workflow",
    "default_async_starter",
    "default_starter",
    "get_default_registry",
    "reset_default_registry",
    "set_default_async_starter",
    "set_default_starter",
]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
O = TypeVar("O")  # noqa: E741 - output type of a workflow
I2 = TypeVar("I2")
O2 = TypeVar("O2")


class RunStarter(Protocol):
    """What ``Workflow.run`` needs of a client (a :class:`~redflow_mp.Client` is one)."""

    def enqueue_workflow(
        self,
        workflow: Workflow[I2, O2],
        input: I2 | Mapping[str, Any] | None = ...,
        *,
        run_at: datetime | float | None = ...,
        queue_override: str | None = ...,
        idempotency_key: str | None = ...,
        idempotency_ttl: float | None = ...,
        timeout: float | None = ...,
        priority: int | None = ...,
    ) -> RunHandle[O2]: ...

    def enqueue_workflow_many(
        self,
        workflow: Workflow[I2, O2],
        inputs: Iterable[I2 | Mapping[str, Any] | None],
        *,
        run_at: datetime | float | None = ...,
        queue_override: str | None = ...,
        idempotency_keys: Iterable[str | None] | None = ...,
        idempotency_ttl: float | None = ...,
        timeout: float | None = ...,
        priority: int | None = ...,
    ) -> list[RunHandle[O2]]: ...


class AsyncRunStarter(Protocol):
    """What ``Workflow.arun`` needs of a client (an ``AsyncClient`` is one)."""

    async def enqueue_workflow(
        self,
        workflow: Workflow[I2, O2],
        input: I2 | Mapping[str, Any] | None = ...,
        *,
        run_at: datetime | float | None = ...,
        queue_override: str | None = ...,
        idempotency_key: str | None = ...,
        idempotency_ttl: float | None = ...,
        timeout: float | None = ...,
        priority: int | None = ...,
    ) -> AsyncRunHandle[O2]: ...

    async def enqueue_workflow_many(
        self,
        workflow: Workflow[I2, O2],
        inputs: Iterable[I2 | Mapping[str, Any] | None],
        *,
        run_at: datetime | float | None = ...,
        queue_override: str | None = ...,
        idempotency_keys: Iterable[str | None] | None = ...,
        idempotency_ttl: float | None = ...,
        timeout: float | None = ...,
        priority: int | None = ...,
    ) -> list[AsyncRunHandle[O2]]: ...


class Workflow(Generic[I, O]):
    """A registered workflow: its handler and options. Start runs with :meth:`run`.

    ``I`` is the input type its handler receives (``ctx.input``), ``O`` what the
    handler returns. Build one with ``define_workflow``, which infers both from
    the handler's annotations.
    """

    __slots__ = (
        "cron",
        "handler",
        "is_async",
        "max_concurrency",
        "name",
        "on_failure",
        "priority",
        "queue",
        "rate_limit",
        "retries",
        "schema",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        queue: str = "default",
        max_concurrency: int = 1,
        schema: Any = None,
        cron: Iterable[Cron] = (),
        retries: Retries | None = None,
        on_failure: Callable[..., Any] | None = None,
        timeout: float | None = None,
        priority: int = 0,
        rate_limit: str | None = None,
    ) -> None:
        self.name = check_name(name, "workflow name")
        if not callable(handler):
            raise TypeError("a workflow handler must be callable")
        # The handler takes a Context[I] (or an AsyncContext[I]) and returns O or
        # an awaitable of O; define_workflow checks that for a type checker.
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
        by_id: dict[str, Cron] = {}
        for c in crons:
            if not isinstance(c, Cron):
                raise TypeError("cron must be a list of Cron(...) triggers")
            # Two triggers under one id are one cron entry: the sync would keep
            # the first and drop the other without a word.
            first = by_id.setdefault(cron_id_for(self.name, c), c)
            if first != c:
                raise ValueError(
                    f"workflow {self.name!r}: two cron triggers share the id {c.id!r} "
                    f"({first.expression!r} and {c.expression!r}); give each its own id"
                )
            _check_cron_input(self.name, c, schema)
        self.cron = crons
        if retries is not None and not isinstance(retries, Retries):
            raise TypeError("retries must be a Retries(...) instance")
        self.retries = retries or Retries()
        if on_failure is not None and not callable(on_failure):
            raise TypeError("on_failure must be callable")
        self.on_failure = on_failure
        self.timeout = check_timeout(timeout, "timeout")
        self.priority = check_priority(priority)
        self.rate_limit = parse_rate_limit(rate_limit)
        self.is_async = inspect.iscoroutinefunction(handler)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} queue={self.queue!r}>"

    def run(
        self,
        input: I | Mapping[str, Any] | None = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        client: RunStarter | None = None,
    ) -> RunHandle[O]:
        """Enqueue a run of this workflow and return its handle.

        Args:
            input: the run's input, an ``I`` (or the mapping a ``schema`` converts to
                one); JSON-encodable. With a ``schema`` it is validated here, before
                anything is written (``InputValidationError``); it is stored as
                given. May be left out when the input is None.
            run_at: an aware datetime or epoch seconds; a future time delays the run.
            queue_override: enqueue on this queue instead of the workflow's.
            idempotency_key: the same key returns the same run while the key lives.
            idempotency_ttl: seconds the key lives (default 7 days).
            timeout: hard limit in seconds for this run (overrides the workflow's).
            priority: 0 to 9, higher claimed first (default: the workflow's).
            client: the client to use; default: the process's default client.
        """
        # _starter(client), without its frame for a Client or the default client
        starter = client if client is not None else _default_starter
        if starter is None or getattr(starter, "sync_starter", False) is not True:
            starter = _starter(client)
        return starter.enqueue_workflow(
            self,
            input,
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
        )

    def run_many(
        self,
        inputs: Iterable[I | Mapping[str, Any] | None],
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_keys: Iterable[str | None] | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        client: RunStarter | None = None,
    ) -> list[RunHandle[O]]:
        """Enqueue one run per input; return their handles in the order of ``inputs``.

        Every input is validated as in :meth:`run` before anything is written: the
        first bad one raises (its index in the message) and no run of the batch is
        written. The runs are written in chunks of 500, one round trip each, each
        chunk atomic. ``idempotency_keys``: one per input (None for none); an
        item whose key names an existing run (or one earlier in the batch) gets
        that run's handle. The other options apply to every run, as in :meth:`run`.
        """
        return _starter(client).enqueue_workflow_many(
            self,
            inputs,
            run_at=run_at,
            queue_override=queue_override,
            idempotency_keys=idempotency_keys,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
        )

    async def arun_many(
        self,
        inputs: Iterable[I | Mapping[str, Any] | None],
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_keys: Iterable[str | None] | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        client: AsyncRunStarter | None = None,
    ) -> list[AsyncRunHandle[O]]:
        """:meth:`run_many` from asyncio code (``client``: an ``AsyncClient``)."""
        return await _async_starter(client).enqueue_workflow_many(
            self,
            inputs,
            run_at=run_at,
            queue_override=queue_override,
            idempotency_keys=idempotency_keys,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
        )

    async def arun(
        self,
        input: I | Mapping[str, Any] | None = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        client: AsyncRunStarter | None = None,
    ) -> AsyncRunHandle[O]:
        """Enqueue a run from asyncio code: ``h = await wf.arun(...)``; then
        ``await h.result()``. The same options as :meth:`run`; ``client`` is an
        ``AsyncClient`` (default: the process's default async client, made by
        ``redflow_mp.aio.create_async_client``)."""
        return await _async_starter(client).enqueue_workflow(
            self,
            input,
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
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
_default_starter: RunStarter | None = None
_default_async_starter: AsyncRunStarter | None = None


def _check_cron_input(name: str, trigger: Cron, schema: Any) -> None:
    """Raise ValueError unless ``trigger``'s input converts to ``schema`` as a
    worker converts it (the JSON round trip): else every fire makes a run that
    fails with InputValidationError."""
    if schema is None:
        return
    try:
        msgspec.convert(msgspec.json.decode(msgspec.json.encode(trigger.input)), schema)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValueError(
            f"workflow {name!r}: the input of cron {trigger.expression!r} does not match "
            f"its schema: {exc}"
        ) from None


def get_default_registry() -> Registry:
    """The registry ``define_workflow`` fills when no ``registry=`` is given."""
    return _default_registry


def reset_default_registry(registry: Registry | None = None) -> Registry:
    """Replace the default registry (a fresh one unless given) and return it.

    For code reloaders only (the supervisor's SIGHUP): workflow modules imported
    again register into the new registry instead of colliding with the old one.
    """
    global _default_registry
    _default_registry = registry if registry is not None else Registry()
    return _default_registry


def set_default_starter(starter: RunStarter | None) -> None:
    """Fill (or clear) the default-client slot; ``create_client`` calls it."""
    global _default_starter
    _default_starter = starter


def default_starter() -> RunStarter | None:
    """What fills the default-client slot, if anything."""
    return _default_starter


def set_default_async_starter(starter: AsyncRunStarter | None) -> None:
    """Fill (or clear) the default-async-client slot; ``create_async_client`` calls it."""
    global _default_async_starter
    _default_async_starter = starter


def default_async_starter() -> AsyncRunStarter | None:
    """What fills the default-async-client slot, if anything."""
    return _default_async_starter


def _async_starter(client: AsyncRunStarter | None) -> AsyncRunStarter:
    if client is not None:
        if not inspect.iscoroutinefunction(getattr(client, "enqueue_workflow", None)):
            raise TypeError("client must be a redflow_mp.aio.AsyncClient (arun is async)")
        return client
    if _default_async_starter is None:
        raise RedflowError(
            "no async client: call redflow_mp.aio.create_async_client(...) first (it "
            "becomes the default async client) or pass client=... to arun()"
        )
    return _default_async_starter


def _starter(client: RunStarter | None) -> RunStarter:
    if client is not None:
        if getattr(client, "sync_starter", False) is True:
            return client  # a Client: the checks below cost ~2,000 instructions a run
        enqueue = getattr(client, "enqueue_workflow", None)
        if not callable(enqueue):
            raise TypeError("client must be a redflow_mp Client")
        if inspect.iscoroutinefunction(enqueue):
            # run() would return the coroutine un-awaited: nothing enqueued, no error
            raise TypeError(
                "client is an AsyncClient: use `await workflow.arun(...)` (or arun_many) "
                "with it; run() and run_many() take a sync Client"
            )
        return client
    if _default_starter is None:
        raise RedflowError(
            "no client: call create_client(...) first (it becomes the default client) "
            "or pass client=... to run()"
        )
    return _default_starter
