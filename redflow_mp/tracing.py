"""OpenTelemetry traces (the optional ``otel`` extra); no-ops without it.

This module owns everything OpenTelemetry in the library, and never imports
``opentelemetry`` before it has something to do: the hooks look for the
``opentelemetry.trace`` module in ``sys.modules`` (the application imported
it; redis-py 8 would at ``import redis``, which ``redispy.py`` prevents) and
act only while a tracer provider is set (the execution and step spans) or a
span is current (the context stored at enqueue). Without the
extra, the decorators below return the functions they decorate unchanged and
:func:`trace_args` is one dictionary lookup, so an untraced process pays
nothing per run (``python -m benchmarks.tracing_overhead``).

What is traced, when a tracer provider is set (not the API's default proxy):

- **enqueue** (``Runs.enqueue``, the async client, child runs from steps): the
  current span context, in W3C Trace Context form, is stored on the run as its
  ``traceparent`` (and ``tracestate``) fields (:func:`trace_args`);
- **an execution** (``Executor.execute``): a span ``redflow.run <workflow>`` of
  kind CONSUMER whose parent is the stored context, with the attributes
  ``redflow.workflow``, ``redflow.run_id``, ``redflow.attempt``,
  ``redflow.queue``, ``redflow.parent_run_id`` (a child run) and
  ``redflow.outcome``; its status is ERROR when the attempt failed, will be
  retried or lost its lease. The stored context costs one ``HMGET`` per
  execution, made only while tracing;
- **a step** (``ctx.step.*``): a span ``redflow.step <name>``, child of the
  run's, with ``redflow.step``, ``redflow.step.cached`` (True for an output
  replayed from an earlier attempt) and ``redflow.outcome`` (``succeeded``,
  ``cached`` or ``failed``). A child workflow started by a step is enqueued
  inside that span, so its run span is a child of the step span: parent and
  child runs share one trace.

Supervisor children: configure the SDK in a function given to
:func:`setup_in_workers`; each child calls it right after the fork (the
parent never runs it, so it starts no exporter thread there: the parent forks
and must have no threads), and :func:`shutdown` flushes the provider's
pending spans before the child leaves by ``os._exit`` (no ``atexit`` hook,
hence no SDK shutdown, runs in a child).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .urls import mask_secrets

__all__ = [
    "INSTALLED",
    "setup_in_workers",
    "shutdown",
    "start_worker",
    "trace_args",
    "traced_execution",
    "traced_step",
    "traced_step_async",
]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

INSTALLED: bool = importlib.util.find_spec("opentelemetry") is not None
"""Whether the OpenTelemetry API is importable here (found without importing it)."""

_TRACE = "opentelemetry.trace"
_CONTEXT = "opentelemetry.context"
_NAME = "redflow_mp"
_worker_setup: Callable[[], object] | None = None


class _Otel:
    """The W3C propagator and this library's tracer of the current global provider,
    built on first use while a provider is set or a span is current (imports no
    module before that)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self.context = context
        self.version = __version__
        self.w3c = TraceContextTextMapPropagator()
        self.error = trace.StatusCode.ERROR
        self.consumer = trace.SpanKind.CONSUMER
        self.provider: object = None
        self.tracer: Any = None


_otel_state: _Otel | None = None


def _otel() -> _Otel:
    global _otel_state
    if _otel_state is None:
        _otel_state = _Otel()
    return _otel_state


_UNKNOWN = object()

# What get_tracer_provider() looks for while no provider is set, looked up in the
# dictionary behind os.environ (kept current by os.environ's own writes) under its
# encoded key: a dictionary lookup, where ``in os.environ`` is four Python calls
# and a KeyError. Elsewhere than CPython's _Environ: os.environ itself.
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"
_ENVIRON: Any = getattr(os.environ, "_data", os.environ)
_PROVIDER_KEY: Any = (
    os.environ.encodekey(_PROVIDER_VARIABLE) if _ENVIRON is not os.environ else _PROVIDER_VARIABLE
)


def _tracing() -> tuple[_Otel, Any] | None:
    """This library's tracer (with the helpers), or None while no tracer provider is
    set: ``opentelemetry.trace`` not imported (by the application or a library), or
    the API's default proxy, which records nothing (then no span, no read).

    Asked at every execution and step, so that a provider set at any time (also
    after this process's first run) is used from the next one on. While none is
    set, ``get_tracer_provider()`` looks for ``OTEL_PYTHON_TRACER_PROVIDER`` in
    ``os.environ`` each time (a ``KeyError`` raised and caught: about 5 % of a
    no-op run's Python in a supervisor child); the API module's global it returns
    is read here first, and the API is asked only when a provider is set, when the
    variable names one (the API loads it then), or when the global is gone (an API
    version that keeps it elsewhere)."""
    api = sys.modules.get(_TRACE)
    if api is None:
        return None
    provider = getattr(api, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and _PROVIDER_KEY not in _ENVIRON:
        return None
    provider = api.get_tracer_provider()
    if isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider):
        return None
    ot = _otel()
    if provider is not ot.provider:
        ot.provider, ot.tracer = provider, provider.get_tracer(_NAME, ot.version)
    return ot, ot.tracer


# ---------------------------------------------------------------- enqueue


#: (runtime context, its ContextVar) of OpenTelemetry's contextvars runtime, the
#: default: the current context read from the variable itself, two Python calls
#: fewer than ``context.get_current()`` (about 1,000 CPU instructions an enqueue,
#: benchmarks.enqueue_instr). Another runtime is asked through the API.
_runtime_var: tuple[Any, Any] = (None, None)


def _current_context(context: Any) -> Any:
    """``context.get_current()`` (``context``: the opentelemetry.context module)."""
    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    cached = _runtime_var
    if runtime is not None and runtime is cached[0]:
        return cached[1].get()
    return _context_of(context, runtime)


def _context_of(context: Any, runtime: Any) -> Any:
    global _runtime_var
    var = getattr(runtime, "_current_context", None)
    module = sys.modules.get("opentelemetry.context.contextvars_context")
    kind = getattr(module, "ContextVarsRuntimeContext", None)
    if (
        runtime is not None
        and kind is not None
        and type(runtime) is kind
        and isinstance(var, contextvars.ContextVar)
    ):
        _runtime_var = (runtime, var)
        return var.get()
    return context.get_current()


def trace_args() -> tuple[str, ...]:
    """The ``traceparent`` and ``tracestate`` arguments of ``enqueue_run``
    (ARGV[16], ARGV[17], after the cron id): the current span context in
    W3C form, or nothing when there is no valid one (or no OpenTelemetry)."""
    api = sys.modules.get(_TRACE)
    if api is None:
        return ()
    # An empty current context holds no span (the common case of an application
    # that imported OpenTelemetry, or whose redis-py did, and traces nothing here):
    # one read of the context instead of the span lookup, about 2,500 CPU
    # instructions an enqueue (benchmarks.enqueue_instr). opentelemetry.trace
    # imports opentelemetry.context.
    context = sys.modules.get(_CONTEXT)
    if context is not None:
        # _current_context(context), its usual case without its frame
        runtime = getattr(context, "_RUNTIME_CONTEXT", None)
        cached = _runtime_var
        if runtime is not None and runtime is cached[0]:
            if not cached[1].get():
                return ()
        elif not _context_of(context, runtime):
            return ()
    if not api.get_current_span().get_span_context().is_valid:
        return ()
    carrier: dict[str, str] = {}
    _otel().w3c.inject(carrier)
    parent = carrier.get("traceparent")
    if not parent:
        return ()
    return parent, carrier.get("tracestate", "")


# -------------------------------------------------------------- execution


def traced_execution(fn: F) -> F:
    """Decorate ``Executor.execute(claimed) -> Outcome``: a span per execution."""
    if not INSTALLED:
        return fn

    @functools.wraps(fn)
    def execute(executor: Any, claimed: Any) -> Any:
        active = _tracing()
        if active is None:
            return fn(executor, claimed)
        return _run_span(*active, fn, executor, claimed)

    return execute  # type: ignore[return-value]


def _stored_context(ot: _Otel, executor: Any, claimed: Any) -> Any:
    """The context stored on the run at enqueue (an empty one: a new trace)."""
    try:
        shard = executor.runs.shard_of_run(claimed.id)
        parent, state = shard.transport.call(
            "HMGET", shard.keys.run(claimed.id), "traceparent", "tracestate"
        )
    except Exception as exc:  # tracing must never fail a run
        log.debug("cannot read the trace context of run %s: %s", claimed.id, exc)
        return ot.context.Context()
    if not parent:
        return ot.context.Context()
    carrier = {"traceparent": parent.decode("ascii", "replace")}
    if state:
        carrier["tracestate"] = state.decode("ascii", "replace")
    return ot.w3c.extract(carrier, context=ot.context.Context())


def _run_span(ot: Any, tracer: Any, fn: Callable[..., Any], executor: Any, claimed: Any) -> Any:
    attributes: dict[str, Any] = {
        "redflow.workflow": claimed.workflow,
        "redflow.run_id": claimed.id,
        "redflow.attempt": claimed.attempt,
        "redflow.queue": claimed.queue,
        "messaging.system": "redflow",
        "messaging.destination.name": claimed.queue,
        "messaging.operation.type": "process",
    }
    if claimed.parent_run_id:
        attributes["redflow.parent_run_id"] = claimed.parent_run_id
    with tracer.start_as_current_span(
        f"redflow.run {claimed.workflow}",
        context=_stored_context(ot, executor, claimed),
        kind=ot.consumer,
        attributes=attributes,
        **_NO_RAW_ERRORS,
    ) as span:
        try:
            outcome = fn(executor, claimed)
        except BaseException as exc:  # not an outcome: the worker's own trouble
            _failed(ot, span, exc)
            raise
        mode = str(outcome.mode)
        span.set_attribute("redflow.outcome", mode)
        error = outcome.error
        if mode in ("failed", "retry") and error is not None:
            span.set_status(ot.error, f"{error.type}: {error.message}")
            span.add_event(
                "exception",
                {"exception.type": error.type, "exception.message": error.message},
            )
        elif mode == "lost":
            span.set_status(ot.error, "the run's lease was lost")
        return outcome


# ------------------------------------------------------------------ steps


#: The spans do not let the SDK record an exception raised through them: its
#: event and status hold ``str(exc)`` and the traceback as they are, and a
#: handler's error may name a Redis URL with its password (the run stores it
#: masked: ``execution.error_info``). :func:`_failed` records it masked instead.
_NO_RAW_ERRORS: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}


def _failed(ot: Any, span: Any, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` as the SDK would (an error status and an
    ``exception`` event), each Redis URL's password in them masked. As the SDK,
    only for an ``Exception``: a BaseException is the runtime's control flow
    (``Suspend`` of a run that suspends, cancellation, a drain), no error."""
    span.set_attribute("redflow.outcome", "failed")
    if not isinstance(exc, Exception):
        return
    try:
        message = mask_secrets(str(exc))
        stack = mask_secrets("".join(traceback.format_exception(exc)))
    except Exception:  # a __str__ that raises: tracing must never fail a run
        message = stack = f"<{type(exc).__name__}: its text could not be read>"
    kind = type(exc)
    module = kind.__module__  # the type as the SDK names it: module and qualified name
    full = kind.__qualname__ if module in ("builtins", None) else f"{module}.{kind.__qualname__}"
    span.set_status(ot.error, f"{kind.__name__}: {message}")
    span.add_event(
        "exception",
        {
            "exception.type": full,
            "exception.message": message,
            "exception.stacktrace": stack,
            "exception.escaped": "True",
        },
    )


def _step_attributes(core: Any, name: object) -> dict[str, Any]:
    ex = core._ex
    return {
        "redflow.workflow": ex.workflow,
        "redflow.run_id": ex.run_id,
        "redflow.attempt": ex.attempt,
        "redflow.step": str(name),
    }


def _end_step(span: Any, called: bool) -> None:
    span.set_attribute("redflow.step.cached", not called)
    span.set_attribute("redflow.outcome", "succeeded" if called else "cached")


def traced_step(fn: F) -> F:
    """Decorate the step runner ``_run(self, name, body)``: a span per step. The
    body not called but a value returned means a cached output."""
    if not INSTALLED:
        return fn

    @functools.wraps(fn)
    def run(core: Any, name: Any, body: Callable[[str], Any]) -> Any:
        active = _tracing()
        if active is None:
            return fn(core, name, body)
        tracer = active[1]
        called = False

        def traced(step: str) -> Any:
            nonlocal called
            called = True
            return body(step)

        with tracer.start_as_current_span(
            f"redflow.step {name}", attributes=_step_attributes(core, name), **_NO_RAW_ERRORS
        ) as span:
            try:
                value = fn(core, name, traced)
            except BaseException as exc:
                _failed(active[0], span, exc)
                raise
            _end_step(span, called)
            return value

    return run  # type: ignore[return-value]


def traced_wait(fn: F) -> F:
    """Decorate a durable wait's check ``(core, name, ...) -> (done, value)``
    (run_workflow(s), sleep, sleep_until, wait_for_event): a span per execution
    that reaches the wait. The children it starts are enqueued inside it, so they
    join the trace under it; its outcome is ``succeeded`` when the wait is over,
    ``suspended`` when the run suspends on it, ``failed`` when it raised."""
    if not INSTALLED:
        return fn

    @functools.wraps(fn)
    def check(core: Any, name: Any, *args: Any, **kwargs: Any) -> Any:
        active = _tracing()
        if active is None:
            return fn(core, name, *args, **kwargs)
        with active[1].start_as_current_span(
            f"redflow.step {name}", attributes=_step_attributes(core, name), **_NO_RAW_ERRORS
        ) as span:
            try:
                done, value = fn(core, name, *args, **kwargs)
            except BaseException as exc:
                _failed(active[0], span, exc)
                raise
            span.set_attribute("redflow.step.wait", True)
            span.set_attribute("redflow.outcome", "succeeded" if done else "suspended")
            return done, value

    return check  # type: ignore[return-value]


def traced_step_async(fn: F) -> F:
    """:func:`traced_step` for the async step runner ``_run_async``."""
    if not INSTALLED:
        return fn

    @functools.wraps(fn)
    async def run(core: Any, name: Any, body: Callable[[str], Awaitable[Any]]) -> Any:
        active = _tracing()
        if active is None:
            return await fn(core, name, body)
        tracer = active[1]
        called = False

        async def traced(step: str) -> Any:
            nonlocal called
            called = True
            return await body(step)

        with tracer.start_as_current_span(
            f"redflow.step {name}", attributes=_step_attributes(core, name), **_NO_RAW_ERRORS
        ) as span:
            try:
                value = await fn(core, name, traced)
            except BaseException as exc:
                _failed(active[0], span, exc)
                raise
            _end_step(span, called)
            return value

    return run  # type: ignore[return-value]


# ------------------------------------------------------ supervisor children


def setup_in_workers(setup: Callable[[], object]) -> Callable[[], object]:
    """Have each supervisor child call ``setup()`` right after it is forked,
    before its first run: configure the OpenTelemetry SDK there (a tracer
    provider, its span processors and exporters). Call it at import of a
    workflow module; usable as a decorator. The parent never calls it, so no
    exporter thread exists when it forks. The last function given wins (a
    reload imports the module again)."""
    global _worker_setup
    _worker_setup = setup
    return setup


def start_worker() -> None:
    """In a supervisor child, after the fork: the :func:`setup_in_workers`
    function, if any. Its errors are logged; the child runs untraced then."""
    if _worker_setup is None:
        return
    try:
        _worker_setup()
    except Exception:
        log.exception("the tracing setup given to setup_in_workers raised; tracing is off")


def shutdown(timeout_ms: int = 5000) -> None:
    """Flush and shut down the global tracer provider, when the application set
    an SDK one: what its ``atexit`` hook would do, for a process that leaves by
    ``os._exit`` (a supervisor child). Errors are logged, never raised."""
    if _TRACE not in sys.modules:
        return
    provider = sys.modules[_TRACE].get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    close = getattr(provider, "shutdown", None)
    try:
        if callable(flush):
            flush(timeout_ms)
        if callable(close):
            close()
    except Exception:
        log.exception("flushing the tracer provider failed")
