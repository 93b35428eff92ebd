"""Redis CPU of the largest single script call of each phase of a fan-out's
life, by script: ``python -m benchmarks.fanout_cpu [children]``. One Worker
thread (so every script call is serial) and the Redis CPU (INFO cpu) read
around each script call; retention then sweeps the finished family. Slow (two
INFO calls per script call): use 20,000 children or so; the per-child costs
(a finish, a page) do not depend on the fan-out's size, the parent's own calls
(its step record of every output) grow with it."""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from benchmarks.fanout_app import start_fanout, sweep_all
from redflow_mp.runs import Runs
from redflow_mp.scripts import Scripts
from tests.helpers import WorkerPool, server_cpu_ms


def main(n: int) -> None:
    app = start_fanout()
    server, raw, client, parent = app.server, app.raw, app.client, app.parent
    cpu: dict[str, list[float]] = defaultdict(list)
    real = Scripts.run

    def run(self: Any, name: str, keys: Any, args: Any, *, retry: bool) -> Any:
        before = server_cpu_ms(raw)
        try:
            return real(self, name, keys, args, retry=retry)
        finally:
            cpu[name].append(server_cpu_ms(raw) - before)

    real_drive = Scripts.drive

    def drive(self: Any, plan: Any, *, retry: bool, fresh: bool = True) -> Any:
        before = server_cpu_ms(raw)
        try:
            return real_drive(self, plan, retry=retry, fresh=fresh)
        finally:  # a claim (and the finish that rides on it), among others
            cpu[f"drive:{getattr(plan, '__name__', '?')}"].append(server_cpu_ms(raw) - before)

    real_each = Runs.enqueue_each

    def enqueue_each(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = server_cpu_ms(raw)
        try:
            return real_each(self, *args, **kwargs)
        finally:  # one pipeline of an enqueue_run per child: its cost per child
            spent = server_cpu_ms(raw) - before
            cpu["enqueue_each/child"].append(spent / max(1, len(args[1])))
            cpu["enqueue_each (pipeline)"].append(spent)

    Scripts.run = run  # type: ignore[method-assign]
    Scripts.drive = drive  # type: ignore[method-assign]
    Runs.enqueue_each = enqueue_each  # type: ignore[method-assign]
    pool = WorkerPool(client)
    pool.start(maintenance=False)
    handle = parent.run(n)
    print("result", handle.result(timeout=3600), flush=True)
    pool.stop_all(60)
    removed = sweep_all(client)
    Scripts.run = real  # type: ignore[method-assign]
    Scripts.drive = real_drive  # type: ignore[method-assign]
    Runs.enqueue_each = real_each  # type: ignore[method-assign]
    print(f"removed {removed}; Redis CPU per script call (ms): calls, largest, total")
    for name, spent in sorted(cpu.items(), key=lambda x: -max(x[1])):
        print(f"  {name:16s} {len(spent):7d} calls  max {max(spent):8.1f}  total {sum(spent):9.1f}")
    server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
