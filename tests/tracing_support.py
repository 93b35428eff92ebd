"""An OpenTelemetry SDK tracer provider for one test, with an in-memory exporter.

The API lets a process set its global provider once; tests need one per test and
none outside the tracing tests (a provider makes every execution trace, which
other tests' command counts would see). So :func:`global_provider` installs it
and puts the API's "unset" state back afterwards, by the two module globals the
API keeps (as opentelemetry's own test utilities do: ``reset_trace_globals``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

__all__ = ["by_name", "global_provider", "hex_span", "hex_trace", "reset_globals"]


def reset_globals() -> None:
    """The API's "no provider set" state."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextlib.contextmanager
def global_provider() -> Iterator[InMemorySpanExporter]:
    """An SDK provider as the global one while the block runs; yields its exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reset_globals()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        reset_globals()


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """The spans by name (asserting the names are unique)."""
    out = {s.name: s for s in spans}
    assert len(out) == len(spans), [s.name for s in spans]
    return out


def hex_trace(value: int) -> str:
    return format(value, "032x")


def hex_span(value: int) -> str:
    return format(value, "016x")
