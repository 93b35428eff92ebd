"""The fault suite's ledger: an append-only record of what really executed, kept
outside Redis so that a re-execution is detectable even if Redis lies.

Every process (supervisor parents and children, the test process) appends JSON
lines to its own file ``ledger-<pid>.jsonl`` in the directory named by the
environment variable ``FAULTS_LEDGER_DIR`` (deliberately not ``REDFLOW_*``: the
supervisor parses those as settings). Each line is written with one ``write``
on an ``O_APPEND`` descriptor and made durable with ``fsync`` before the caller
goes on, so a line exists before the side effect it announces happens and
survives a SIGKILL right after.

Times: ``mono`` is ``CLOCK_MONOTONIC`` in nanoseconds, which is one clock for
every process of this host (comparable across processes) and immune to the
clock-skew helper of ``workload.py``, which shifts only ``time.time``.

Events (``ev``):
    enqueued        the test's producer got a run id back (acknowledged enqueue)
    handler-start   a handler began an execution of a run (attempt, token, ppid)
    handler-end     it ended (``outcome``: ok | error | lost | canceled)
    step-start      a step function began (``exec`` = unique execution id)
    step-end        a step function returned (before its result is written)
    step-recorded   ``ctx.step.run`` returned a fresh result: Redis accepted it
    fault           the test injected a fault (``kind``, ``pids``; ``seconds`` when
                    its length is known, else a ``<kind>-end`` fault closes it)
    exit            the harness saw a supervisor's child gone (``pids``)
    event-sent      the test's sender got send_event's answer (``run``, ``event``,
                    the payload's ``eid``, ``acked``: True = stored)
    wait-done       a wait step returned or raised its recorded failure
                    (``workload_waits.py``: ``step``, ``kind``, ``ok``, ``fp`` =
                    the record's status:seq:finishedAt, ``eid`` for an event)
    wait-early      a sleep returned before its wake-up time (wall clock)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ENV", "Ledger", "append", "mono_ns", "read_all"]

ENV = "FAULTS_LEDGER_DIR"


def mono_ns() -> int:
    """Host-wide monotonic time in ns (the ledger's clock)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Ledger:
    """Appends fsynced JSON lines to one file per process in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._pid = -1

    def _file(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            # After fork the inherited descriptor belongs to the parent's file.
            path = self.directory / f"ledger-{pid}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self._pid = pid
        return self._fd

    def append(self, ev: str, **fields: Any) -> None:
        record = {"ev": ev, "pid": os.getpid(), "mono": mono_ns(), **fields}
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = self._file()
        os.write(fd, data)
        os.fsync(fd)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


_default: Ledger | None = None


def append(ev: str, **fields: Any) -> None:
    """Append to the ledger named by ``FAULTS_LEDGER_DIR`` (no-op when unset)."""
    global _default
    directory = os.environ.get(ENV)
    if not directory:
        return
    if _default is None or str(_default.directory) != directory:
        _default = Ledger(directory)
    _default.append(ev, **fields)


def read_all(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record of every ledger file (a torn last line is skipped)."""
    for path in sorted(Path(directory).glob("ledger-*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    continue  # the process died inside write(): never acknowledged
                yield json.loads(line)
