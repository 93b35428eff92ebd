"""Run the demo: start ``redflow-supervisor`` on the demo workflows, enqueue a few
runs, print their results and the supervisor's processes, then drain it with TERM.

    python examples/demo.py [--url redis://localhost:6379/0 | --embedded] [--procs 2] [--keep]

Uses the Redis at ``--url``; by default the local one on :6379, or, where none
answers (or with ``--embedded``), a private password-protected server of the
``embedded`` extra (started in a temporary directory and stopped at the end).
The URL reaches the supervisor through ``REDFLOW_URL``, not its command line,
so a password never shows in ``ps``. The supervisor runs as ``--app demo`` and
every key lives under the prefix ``redflow-demo`` (the ``redflow`` session of
docs/operations.md uses the same app, URL and prefix). At the end the demo removes the
keys of that prefix, and nothing else, unless ``--keep`` is given; then it
says how to look at them with ``redflow`` (and leaves an embedded server
running).

Besides its keys, the demo leaves only the Lua scripts in the server's script
cache (content-addressed, no keys; ``SCRIPT FLUSH`` clears them): redflow-mp
loads no function library unless told to (``redis_functions``).
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

import redis  # noqa: E402

from redflow_mp import create_client  # noqa: E402
from redflow_mp.transport import mask_url  # noqa: E402

APP = "demo"
PREFIX = "redflow-demo"


def _cleanup(url: str) -> int:
    """Remove every key of the demo's prefix (SCAN + UNLINK); returns how many."""
    r = redis.Redis.from_url(url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in r.scan_iter(match="{" + PREFIX + "}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(r.unlink(*batch))
                batch = []
        if batch:
            removed += int(r.unlink(*batch))
    finally:
        r.close()
    return removed


def _count_keys(url: str) -> int:
    r = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in r.scan_iter(match="{" + PREFIX + "}:*", count=1000))
    finally:
        r.close()


def _finish(url: str, keep: bool, embedded: bool) -> None:
    shown = mask_url(url)
    if keep:
        print(f"kept {_count_keys(url)} keys under the prefix {PREFIX}; look at them with:")
        if embedded:
            print(f"  redflow --embedded-redis --prefix {PREFIX} runs list")
        else:
            print(f"  REDFLOW_URL={shown} REDFLOW_PREFIX={PREFIX} redflow runs list")
        print("  (python examples/demo.py without --keep removes them)")
    else:
        print(f"removed {_cleanup(url)} keys under the prefix {PREFIX} (nothing else)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument(
        "--embedded", action="store_true", help="use a private server even if :6379 answers"
    )
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument(
        "--keep", action="store_true", help=f"keep the keys under {PREFIX} (and an embedded server)"
    )
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
            APP,
            "--procs",
            str(args.procs),
            "--module",
            "examples.demo_flows",
            "--prefix",
            PREFIX,
        ],
        cwd=ROOT,
        env={**os.environ, "REDFLOW_URL": args.url},
        start_new_session=True,
    )
    try:
        client = create_client(args.url, prefix=PREFIX)
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
        try:
            _finish(args.url, args.keep, embedded is not None)
        finally:
            if embedded is not None and not args.keep:
                embedded.stop()
            elif embedded is not None:
                print(
                    f"the embedded server at {mask_url(args.url)} keeps running (data in "
                    f"{embedded.state_dir}; URL with password in {embedded.url_file})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
