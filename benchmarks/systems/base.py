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
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

#: Called by a client with the number of items done so far.
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Timed:
    """A timed client loop: wall seconds, this process's CPU seconds, runs timed."""

    elapsed: float
    cpu: float
    runs: int


class NotAvailable(Exception):
    """The system (in the installed version) lacks the API a workload needs."""


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
    #: The bulk-enqueue path used for W2B.
    bulk_idiom: ClassVar[str] = "no bulk API: a loop of enqueue"

    def has_parent(self, procs: int) -> bool:
        """Whether the workers run under one supervising parent process."""
        return len(self.worker_commands(procs)) == 1

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

    def script_names(self, server_version: str) -> dict[str, str]:
        """SHA-1 -> name of the system's Lua scripts (to label EVALSHA in SLOWLOG)."""
        return {}


class Client(ABC):
    """Client-side operations, each through the system's normal API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Import and connect; called once before any timed operation."""

    @abstractmethod
    def enqueue(self, kind: str, arg: int) -> None:
        """Enqueue one run of ``kind`` (noop, cpu, steps) with its integer argument."""

    def enqueue_many(self, kind: str, arg: int, n: int, progress: ProgressFn) -> Timed:
        """Enqueue ``n`` runs one by one; time (wall and CPU) runs 2..n.

        The first enqueue (which opens connections and loads scripts) is not
        timed; the rate is (n - 1) / elapsed.
        """
        if n <= 0:
            return Timed(0.0, 0.0, 0)
        self.enqueue(kind, arg)
        progress(1)
        step = max(1, n // 200)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(2, n + 1):
            self.enqueue(kind, arg)
            if i % step == 0:
                progress(i)
        timed = Timed(time.perf_counter() - start, time.process_time() - cpu, n - 1)
        progress(n)
        return timed

    def enqueue_batch(self, count: int) -> None:
        """Enqueue ``count`` no-op runs through the system's bulk path (W2B).

        The default is the loop a system without a bulk API leaves its users.
        """
        for _ in range(count):
            self.enqueue("noop", 0)

    def enqueue_bulk(self, n: int, batch: int, progress: ProgressFn) -> Timed:
        """Enqueue ``n`` no-op runs in batches of ``batch``; time all but the first batch.

        The first batch opens connections and loads scripts and is not timed.
        Raises :class:`NotAvailable` when the system has no such path.
        """
        first = min(batch, n)
        self.enqueue_batch(first)
        done = first
        progress(done)
        start, cpu = time.perf_counter(), time.process_time()
        while done < n:
            count = min(batch, n - done)
            self.enqueue_batch(count)
            done += count
            progress(done)
        return Timed(time.perf_counter() - start, time.process_time() - cpu, n - first)

    @abstractmethod
    def round_trip(self, value: int) -> int:
        """Enqueue a run returning ``value`` and wait for its result."""

    def round_trips(self, n: int, warmup: int, progress: ProgressFn) -> list[float]:
        """``warmup`` untimed then ``n`` timed sequential round trips, in ms."""
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
