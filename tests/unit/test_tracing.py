"""tracing.py's supervisor-child helpers: the set-up given to ``setup_in_workers``
runs on ``start_worker`` (errors logged, never raised), and ``shutdown`` flushes a
batch processor's spans (what a child does before ``os._exit``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redflow_mp import tracing
from tests.tracing_support import reset_globals


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    saved = tracing._worker_setup
    yield
    tracing._worker_setup = saved
    reset_globals()


def test_start_worker_runs_the_last_setup_and_survives_its_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    tracing.setup_in_workers(lambda: calls.append("first"))

    @tracing.setup_in_workers
    def second() -> None:
        calls.append("second")
        raise RuntimeError("no collector")

    assert second is not None  # usable as a decorator: the function stays
    with caplog.at_level("ERROR", logger="redflow_mp.tracing"):
        tracing.start_worker()
    assert calls == ["second"]
    assert "setup_in_workers raised" in caplog.text and "no collector" in caplog.text


def test_shutdown_flushes_a_batch_processor() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    reset_globals()
    trace.set_tracer_provider(provider)
    with trace.get_tracer("test").start_as_current_span("buffered"):
        pass
    assert exporter.get_finished_spans() == ()  # still in the processor's queue
    tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["buffered"]


def test_shutdown_without_a_provider_does_nothing() -> None:
    reset_globals()
    tracing.shutdown()  # the API's proxy has neither force_flush nor shutdown
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_a_provider_set_after_the_first_look_is_used_from_the_next_one_on() -> None:
    """The executor asks for the tracer at every execution (``_tracing``), reading
    the API's global before asking the API (whose ``os.environ`` lookup cost 5 % of
    a no-op run): a provider set at any time, or taken away, is seen at once."""
    reset_globals()
    assert tracing._tracing() is None
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    active = tracing._tracing()
    assert active is not None and active[0].provider is provider
    reset_globals()
    assert tracing._tracing() is None
    other = TracerProvider()
    trace.set_tracer_provider(other)
    active = tracing._tracing()
    assert active is not None and active[0].provider is other


def test_a_provider_named_by_the_environment_is_loaded_as_the_api_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``OTEL_PYTHON_TRACER_PROVIDER`` set, even after a first look found no
    provider: the API loads the one it names (the SDK's entry point), and runs
    are traced by it."""
    reset_globals()
    assert tracing._tracing() is None
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    active = tracing._tracing()
    assert active is not None and isinstance(active[0].provider, TracerProvider)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER")
    reset_globals()
    assert tracing._tracing() is None


def test_the_current_context_is_read_as_the_api_reads_it() -> None:
    """trace_args reads the default runtime's ContextVar itself: the same context
    as ``context.get_current()``, empty or not, in this thread and in another
    asyncio task's copy; another runtime is asked through the API."""
    import threading
    import types

    from opentelemetry import context

    assert tracing._current_context(context) == context.get_current() == {}
    token = context.attach(context.set_value("k", 1))
    try:
        assert tracing._current_context(context) is context.get_current()
        assert tracing._current_context(context).get("k") == 1
        seen: list[object] = []
        t = threading.Thread(target=lambda: seen.append(tracing._current_context(context)))
        t.start()
        t.join()
        assert seen == [{}]  # a new thread starts from the empty context
    finally:
        context.detach(token)
    assert not tracing._current_context(context)

    class Other:
        def get_current(self) -> object:
            return {"other": True}

    fake = types.SimpleNamespace(_RUNTIME_CONTEXT=Other(), get_current=lambda: {"api": True})
    assert tracing._current_context(fake) == {"api": True}
    assert tracing._current_context(context) == {}  # the default runtime again
