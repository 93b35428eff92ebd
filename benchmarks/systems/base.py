"""The interface every benchmarked system implements.

A system has two halves:

* :class:`System` lives in the harness process. It never imports the system's
  package; it says whether the package is installed, how to start the workers
  (command lines, each started as its own process group) and how many worker
  processes to expect.
* :class:`Client` lives in the client subprocess (``python -m benchmarks.client``)
  and uses the system's normal public API to enqueue runs and wait for results.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

#: Called by a client with the number of items done so far.
ProgressFn = Callable[[int], None]


class System(ABC):
    """Harness-side description of one system (no imports of the system itself)."""

    #: Name used on the command line (``--systems``).
    name: ClassVar[str]
    #: Import names that must be importable for the system to run.
    modules: ClassVar[tuple[str, ...]]
    #: Distributions whose versions are reported.
    distributions: ClassVar[tuple[str, ...]]
    #: Module the workers import (``benchmarks.tasks.<system>_tasks``).
    tasks_module: ClassVar[str]
    #: One-line description of how the workers are configured.
    config: ClassVar[str] = ""
    #: The idiom used for W6 (fan-out), or "" when W6 is not measured.
    fanout_idiom: ClassVar[str] = ""
    #: What a "step" is for W5.
    steps_idiom: ClassVar[str] = "20 by-hand SETs (one key per step)"

    def available(self) -> str | None:
        """``None`` when the system can run, else the reason it is skipped."""
        for module in self.modules:
            try:
                found = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                found = None
            if found is None:
                return f"package {module!r} is not installed (pip install -e '.[bench]')"
        return None

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for dist in self.distributions:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "?"
        return out

    @abstractmethod
    def worker_commands(self, procs: int) -> list[list[str]]:
        """Command lines to start; each becomes one process group."""

    def worker_env(self) -> dict[str, str]:
        """Extra environment for the workers (the harness adds URL and prefix)."""
        return {}

    @abstractmethod
    def expected_processes(self, procs: int) -> int:
        """How many processes the worker trees hold once started (for settling)."""

    def client_class(self) -> type[Client]:
        """The client implementation; imported only in the client subprocess."""
        raise NotImplementedError

    @staticmethod
    def python() -> str:
        return sys.executable


class Client(ABC):
    """Client-side operations, each through the system's normal API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Import and connect; called once before any timed operation."""

    @abstractmethod
    def enqueue(self, kind: str, arg: int) -> None:
        """Enqueue one run of ``kind`` (noop, cpu, steps) with its integer argument."""

    def enqueue_many(self, kind: str, arg: int, n: int, progress: ProgressFn) -> float:
        """Enqueue ``n`` runs one by one; return the seconds spent on runs 2..n.

        The first enqueue (which opens connections and loads scripts) is not
        timed; the rate is (n - 1) / elapsed.
        """
        import time

        if n <= 0:
            return 0.0
        self.enqueue(kind, arg)
        progress(1)
        step = max(1, n // 200)
        start = time.perf_counter()
        for i in range(2, n + 1):
            self.enqueue(kind, arg)
            if i % step == 0:
                progress(i)
        elapsed = time.perf_counter() - start
        progress(n)
        return elapsed

    @abstractmethod
    def round_trip(self, value: int) -> int:
        """Enqueue a run returning ``value`` and wait for its result."""

    def round_trips(self, n: int, warmup: int, progress: ProgressFn) -> list[float]:
        """``warmup`` untimed then ``n`` timed sequential round trips, in ms."""
        import time

        for i in range(warmup):
            self._checked_round_trip(i)
        out: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            self._checked_round_trip(i)
            out.append((time.perf_counter() - start) * 1000.0)
            if (i + 1) % 10 == 0 or i + 1 == n:
                progress(i + 1)
        return out

    def _checked_round_trip(self, value: int) -> None:
        got = self.round_trip(value)
        if got != value:
            raise RuntimeError(f"round trip returned {got!r}, expected {value!r}")

    def fanout(self, mode: str, n: int) -> None:
        """Enqueue the W6 parent (``mode`` is ``emit`` or ``seq``)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
