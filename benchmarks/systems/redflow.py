"""redflow-mp: ``redflow-supervisor --procs N``, written against the public API (SPEC §2).

``redflow_mp`` is imported only inside the client subprocess (and by the
supervisor's children through ``--module``), never by the harness itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from benchmarks.systems.base import Client, NotAvailable, System
from benchmarks.tasks import common

TASKS = "benchmarks.tasks.redflow_tasks"


class RedflowSystem(System):
    name = "redflow"
    modules = ("redflow_mp", "redflow_supervisor")
    distributions = ("redflow-mp",)
    tasks_module = TASKS
    config = (
        "redflow-supervisor --app bench --procs N --queues bench --log-level warning, "
        "workflows with "
        "max_concurrency=1000; every run stores its state and output"
    )
    fanout_idiom = "parent workflow: ctx.step.emit_workflow n times / ctx.step.run_workflow n times"
    steps_idiom = "20 ctx.step.run calls (durable steps)"
    bulk_idiom = "Workflow.run_many([{}] x batch) (one round trip per chunk)"

    def available(self) -> str | None:
        # Checked in a subprocess: the library is imported lazily, never by the
        # harness, and a half-written package must not break the harness.
        probe = (
            "import redflow_mp, redflow_supervisor\n"
            "for name in ('define_workflow', 'create_client', 'Context'):\n"
            "    getattr(redflow_mp, name)\n"
        )
        try:
            done = subprocess.run(
                [self.python(), "-c", probe],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot probe redflow_mp: {exc}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            return f"redflow_mp / redflow_supervisor not importable ({last}); pip install -e ."
        return None

    def script_names(self, server_version: str) -> dict[str, str]:
        # In a subprocess, like every import of redflow_mp by the harness.
        version = tuple(int(p) for p in server_version.split(".")[:3] if p.isdigit())
        code = (
            "import json, sys\n"
            "from redflow_mp.scripts import script_names\n"
            f"json.dump(script_names({version!r}), sys.stdout)\n"
        )
        try:
            done = subprocess.run(
                [self.python(), "-c", code], capture_output=True, text=True, timeout=60
            )
            names = json.loads(done.stdout) if done.returncode == 0 else {}
        except (OSError, subprocess.SubprocessError, ValueError):
            return {}
        return {str(k): str(v) for k, v in names.items()}

    def _supervisor(self) -> list[str]:
        script = os.path.join(os.path.dirname(self.python()), "redflow-supervisor")
        if os.path.exists(script):
            return [script]
        found = shutil.which("redflow-supervisor")
        if found:
            return [found]
        return [self.python(), "-m", "redflow_supervisor"]

    def worker_commands(self, procs: int) -> list[list[str]]:
        return [
            [
                *self._supervisor(),
                "--app",
                "bench",
                "--procs",
                str(procs),
                "--module",
                TASKS,
                "--url",
                "{url}",
                "--prefix",
                "{prefix}",
                "--queues",
                common.QUEUE,
                "--log-level",
                "warning",
            ]
        ]

    def expected_processes(self, procs: int) -> int:
        return procs + 1

    def client_class(self) -> type[Client]:
        return RedflowClient


class RedflowClient(Client):
    def connect(self) -> None:
        from benchmarks.tasks import redflow_tasks
        from redflow_mp import create_client

        self.tasks: Any = redflow_tasks
        self.client: Any = create_client(url=self.url, prefix=common.prefix())

    def enqueue(self, kind: str, arg: int) -> None:
        t = self.tasks
        if kind == "noop":
            t.noop.run({})
        elif kind == "cpu":
            t.cpu.run({"iterations": arg})
        elif kind == "steps":
            t.steps.run({"steps": arg})
        else:
            raise ValueError(kind)

    def enqueue_batch(self, count: int) -> None:
        # Workflow.run_many(inputs, *, run_at=None, queue_override=None,
        # idempotency_keys=None, client=None) -> list[RunHandle]; a redflow_mp
        # without it is reported as not available.
        run_many = getattr(self.tasks.noop, "run_many", None)
        if run_many is None:
            raise NotAvailable("Workflow.run_many is not in this redflow_mp")
        handles = run_many([{}] * count)
        if len(handles) != count:
            raise RuntimeError(f"run_many returned {len(handles)} handles for {count} inputs")

    def round_trip(self, value: int) -> int:
        handle = self.tasks.rt.run({"v": value})
        got: int = handle.result(timeout=30)
        return got

    def fanout(self, mode: str, n: int) -> None:
        self.tasks.fanout.run({"mode": mode, "n": n})

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()
