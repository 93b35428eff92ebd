"""What a benchmark run is configured with (sizes, options, workloads, variants)
and what it produces per system (samples and raw extras), plus the W3 calibration.

Kept apart from :mod:`benchmarks.runner` so that the report and the command
line depend on these plain types, not on the session machinery.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.systems import System
from benchmarks.tasks import common

WORKLOADS = ("W1", "W2", "W2B", "W3", "W4", "W5", "W6", "W7")

#: Workload variants: handlers that only count themselves done, and handlers
#: that also make one Redis call of their own (``--handler-redis``).
NOOP = "noop"
HANDLER_REDIS = "handler-redis"
VARIANTS = (NOOP, HANDLER_REDIS)
#: Workloads measured in the handler-redis variant too (the others do not
#: depend on what a no-op handler does, or would only repeat themselves).
VARIANT_WORKLOADS = frozenset({"W1", "W3", "W4"})


def tag(variant: str) -> str:
    return "" if variant == NOOP else f" {variant}"


def vkey(key: str, variant: str) -> str:
    """The sample key of ``key`` in ``variant`` (``w1.rate@handler-redis``)."""
    return key if variant == NOOP else f"{key}@{variant}"


@dataclass(frozen=True)
class Sizes:
    drain: int = 5000  # W1 / W2 runs
    cpu_runs: int = 64  # W3
    cpu_ms: float = 50.0  # W3 target per run
    rt: int = 200  # W4 timed round trips
    rt_warmup: int = 10
    step_runs: int = 300  # W5 runs
    steps: int = 20  # W5 steps per run
    fanout: int = 200  # W6 children per phase
    monitor: int = 500  # runs in the MONITOR pass
    scale: tuple[int, ...] = (1_000, 10_000, 100_000)
    bulk: int = 20_000  # W2B runs
    bulk_batch: int = 1_000  # W2B runs per bulk call
    profile: int = 500  # runs in the SLOWLOG pass


QUICK = Sizes(
    drain=50,
    cpu_runs=4,
    cpu_ms=5.0,
    rt=10,
    rt_warmup=2,
    step_runs=5,
    steps=20,
    fanout=5,
    monitor=20,
    scale=(50, 100, 200),
    bulk=20,
    bulk_batch=5,
    profile=20,
)


@dataclass
class Options:
    systems: list[System]
    workloads: set[str]
    procs: int = 2
    reps: int = 3
    sizes: Sizes = field(default_factory=Sizes)
    scale: bool = False
    monitor: bool = True
    profile: bool = True  # the SLOWLOG pass
    variants: tuple[str, ...] = (NOOP,)
    bulk_drain: bool = False  # W2B: also run what was enqueued (a check)
    progress: bool = True
    stall_timeout: float = 60.0
    logs_dir: Path | None = None
    # Shared machines: wait for other programs to go quiet before a session,
    # and redo a session during which they used more CPU than this (in cores).
    quiet_threshold: float = 0.25
    quiet_wait: float = 120.0
    retries: int = 2


@dataclass
class SystemResult:
    name: str
    config: str
    fanout_idiom: str
    steps_idiom: str
    bulk_idiom: str = ""
    status: str = "ok"  # ok | skipped | error
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(key, []).append(float(value))

    def add_extra(self, key: str, value: Any) -> None:
        self.extra.setdefault(key, []).append(value)

    def merge(self, other: SystemResult) -> None:
        for key, values in other.samples.items():
            self.samples.setdefault(key, []).extend(values)
        for key, value in other.extra.items():
            if isinstance(value, list) and isinstance(self.extra.get(key), list):
                self.extra[key].extend(value)
            else:
                self.extra[key] = value
        self.errors.extend(other.errors)

    def max_foreign(self) -> float:
        values = [
            v
            for k, vs in self.samples.items()
            if k.startswith("load.") and k.partition("@")[0].endswith("_foreign")
            for v in vs
        ]
        return max(values, default=0.0)


class CaseError(RuntimeError):
    pass


@dataclass
class WaitResult:
    t_first: float
    c_first: int
    t_done: float
    polls: int
    # CPU seconds of (the parent, the workers) at the first completion
    cpu_first: tuple[float, float] = (0.0, 0.0)


def calibrate(target_ms: float) -> tuple[int, float]:
    """Iterations of :func:`common.burn` that take ``target_ms``, and the measured ms.

    Estimate, then time the estimate 7 times; if the median is more than 5 %
    off the target (a busy machine), re-estimate from the median and try again.
    """
    n = 20_000
    while True:
        start = time.perf_counter()
        common.burn(n)
        took = time.perf_counter() - start
        if took >= 0.05:
            break
        n *= 2
    iterations = max(1, int(n * (target_ms / 1000.0) / took))
    measured = 0.0
    for _ in range(5):
        timings = []
        for _ in range(7):
            start = time.perf_counter()
            common.burn(iterations)
            timings.append((time.perf_counter() - start) * 1000.0)
        measured = statistics.median(timings)
        if abs(measured - target_ms) <= 0.05 * target_ms:
            break
        iterations = max(1, int(iterations * target_ms / measured))
    return iterations, measured


def single_run_ms(iterations: int, samples: int = 5) -> float:
    """Median time of one ``burn(iterations)`` in this process, in ms."""
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        common.burn(iterations)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)
