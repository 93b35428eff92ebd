"""Run the demo: start ``redflow-supervisor`` on the demo workflows, enqueue a few
runs, print their results and the supervisor's processes, then drain it with TERM.

    python examples/demo.py [--url redis://localhost:6379/0 | --embedded] [--procs 2]

Uses the Redis at ``--url``; by default the local one on :6379, or, where none
answers (or with ``--embedded``), a private password-protected server of the
``embedded`` extra (started in a temporary directory and stopped at the end).
Keys live under the prefix ``redflow-demo``; nothing else in that Redis is
touched. The URL reaches the supervisor through ``REDFLOW_URL``, not its
command line, so a password never shows in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redflow_mp import create_client  # noqa: E402
from redflow_mp.transport import mask_url  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument(
        "--embedded", action="store_true", help="use a private server even if :6379 answers"
    )
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()

    import examples.demo_flows as flows
    from redflow_supervisor.embedded import EmbeddedRedis, alive

    embedded: EmbeddedRedis | None = None
    if args.url is None:
        args.url = "redis://localhost:6379/0"
        if args.embedded or not alive(args.url):
            embedded = EmbeddedRedis()
            args.url = embedded.ensure()
            why = "as asked" if args.embedded else "no Redis on localhost:6379"
            print(f"{why}; using the {embedded.describe()}")

    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redflow_supervisor",
            "--app",
            "demo",
            "--procs",
            str(args.procs),
            "--module",
            "examples.demo_flows",
            "--prefix",
            "redflow-demo",
        ],
        cwd=ROOT,
        env={**os.environ, "REDFLOW_URL": args.url},
        start_new_session=True,
    )
    try:
        client = create_client(args.url, prefix="redflow-demo")
        print(f"redflow-supervisor started (pid {supervisor.pid}) on {mask_url(args.url)}")
        handles = [
            flows.etl.run({"name": f"batch-{i}", "rows": 2000 + i}) for i in range(args.runs)
        ]
        started = time.monotonic()
        for handle in handles:
            out = handle.result(timeout=60)
            steps = [s.name for s in client.get_run_steps(handle.id) or []]
            print(f"run {handle.id}: {out['loaded']} steps={steps} worker={out['worker_pid']}")
        print(f"{len(handles)} runs done in {time.monotonic() - started:.2f} s")
        ps = subprocess.run(
            ["ps", "-o", "pid,args", "--ppid", str(supervisor.pid), "-p", str(supervisor.pid)],
            capture_output=True,
            text=True,
        )
        print(ps.stdout.rstrip())
    finally:
        os.killpg(supervisor.pid, signal.SIGTERM)
        code = supervisor.wait(timeout=60)
        print(f"supervisor drained and exited with status {code}")
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
