"""What the OpenTelemetry hooks cost per run: ``Executor.execute`` of a no-op run
(no steps, and one step), and ``tracing.trace_args`` (the enqueue hook).

    python -m benchmarks.tracing_overhead [--rounds 7] [--n 20000]

Modes, each measured in the same process, rounds interleaved:

- ``plain``: the undecorated function (what runs when the ``otel`` extra is not
  installed: the decorators return the function itself), and ``trace_args``
  with no ``opentelemetry.trace`` module (the enqueue hook without the extra);
- ``no-provider``: the extra installed, no tracer provider set (redis-py 8
  imports the OpenTelemetry API anyway when it is installed);
- ``sdk``: an SDK tracer provider with a simple (synchronous) processor and an
  exporter that drops the spans: span creation, attributes and processing in
  the calling thread, plus the one ``HMGET`` of the stored trace context per
  execution, on a private redis-server (a batch processor moves the export to
  its thread, which competes for the GIL).

Figures are µs per call: the median of the rounds, with their min-max. The
executor path writes nothing to Redis (the worker's finish does), so ``plain``
and ``no-provider`` measure only Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.redis_server import RedisServer


def _per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _measure(mode: str, fn: Callable[[], object], plain: Callable[[], object], n: int) -> float:
    from opentelemetry import trace

    from redflow_mp import steps, tracing

    if mode.startswith("plain"):
        if fn is not tracing.trace_args:
            # Undecorated, the step runner too: what runs without the extra.
            traced = steps._StepCore._run
            steps._StepCore._run = traced.__wrapped__  # type: ignore[attr-defined,method-assign]
            try:
                return _per_call(plain, n)
            finally:
                steps._StepCore._run = traced  # type: ignore[method-assign]
        # The enqueue hook with the extra absent: no opentelemetry.trace module.
        saved = sys.modules.pop("opentelemetry.trace")
        try:
            return _per_call(fn, n)
        finally:
            sys.modules["opentelemetry.trace"] = saved
    if mode == "sdk" and fn is tracing.trace_args:
        with trace.get_tracer("bench").start_as_current_span("enqueuer"):
            return _per_call(fn, n)
    return _per_call(fn, n)


def _report(
    results: dict[tuple[str, str], list[float]], names: list[str], rounds: int, n: int
) -> None:
    print(f"µs per call, median (min-max) of {rounds} rounds of {n}:")
    for name in names:
        row = []
        for mode in ("plain", "no-provider", "plain ", "sdk"):
            got = results[(name, mode)]
            label = "plain (phase 2)" if mode == "plain " else mode
            row.append(f"{label} {statistics.median(got):.2f} ({min(got):.2f}-{max(got):.2f})")
        print(f"  {name}: " + " | ".join(row))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tracing_overhead", description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=20000, help="calls per round and mode")
    args = ap.parse_args(argv)

    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from redflow_mp import Context, Registry, codec, create_client, define_workflow, tracing
    from redflow_mp.codec import StoredStep
    from redflow_mp.executor import Executor
    from redflow_mp.ids import new_run_id, new_token
    from redflow_mp.lease import LeaseKeeper
    from redflow_mp.scripts import Claimed

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    server = RedisServer()
    server.start()
    try:
        registry = Registry()

        @define_workflow("noop", registry=registry)
        def noop(ctx: Context[Any]) -> None:
            return None

        @define_workflow("one-step", registry=registry)
        def one_step(ctx: Context[Any]) -> None:
            ctx.step.run("s", lambda: None)

        client = create_client(server.url, prefix="bench-otel", registry=registry, default=False)
        keeper = LeaseKeeper(client.scripts, 5000)
        executor = Executor(client, registry, keeper, 5000, lambda run_id: False)

        def claimed(workflow: str, steps: dict[str, bytes]) -> Claimed:
            return Claimed(
                id=new_run_id(),
                workflow=workflow,
                queue="default",
                input_json=b"null",
                attempt=1,
                max_attempts=1,
                created_at=0,
                parent_run_id=None,
                timeout_ms=None,
                cron_id=None,
                started_at=0,
                steps=steps,
                token=new_token(),
                lease_until=time.monotonic() + 3600,  # no lease confirmation round trip
            )

        # A run whose step is cached: the step hook without a step write.
        done = StoredStep(
            status="succeeded", started_at=0, finished_at=0, attempt=1, seq=0, output_json="null"
        )
        cached = {"s": codec.encode_step(done)}
        plain = Executor.execute.__wrapped__  # type: ignore[attr-defined]
        cases: dict[str, Callable[[], object]] = {
            "execute, no-op run": lambda: executor.execute(claimed("noop", {})),
            "execute, one cached step": lambda: executor.execute(claimed("one-step", cached)),
            "trace_args (enqueue hook)": tracing.trace_args,
            "the execution and step hooks' check": tracing._tracing,
        }
        plain_cases: dict[str, Callable[[], object]] = {
            "execute, no-op run": lambda: plain(executor, claimed("noop", {})),
            "execute, one cached step": lambda: plain(executor, claimed("one-step", cached)),
            "trace_args (enqueue hook)": lambda: (),
            "the execution and step hooks' check": lambda: None,
        }
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Drop()))
        results: dict[tuple[str, str], list[float]] = {}

        # Phase 1 without a provider, phase 2 with one (the API sets it once per
        # process); plain runs in both, interleaved, as the reference.
        for phase in (("plain", "no-provider"), ("plain ", "sdk")):
            if "sdk" in phase:
                trace.set_tracer_provider(provider)
            for r in range(args.rounds):
                for mode in phase if r % 2 == 0 else phase[::-1]:
                    for name in cases:
                        got = _measure(mode, cases[name], plain_cases[name], args.n)
                        results.setdefault((name, mode), []).append(got)
        provider.shutdown()
        _report(results, list(cases), args.rounds, args.n)
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
