"""Instructions per unit of work, counted by callgrind: the runner shared by
``benchmarks.child_instr`` and ``benchmarks.enqueue_instr``.

A loop (Python source, run with ``python -c``) does N units of work against a
private redis-server (not under valgrind); it is counted for two sizes N1 < N2
and the difference of the two totals over N2 - N1 is the user-space
instructions per unit in the steady state (start-up and imports cancel out).
System calls count as one instruction each. The process runs with
``PYTHONHASHSEED=0`` so that every count sees the same dict layouts, and with
``PYTHONPATH`` set to the tree measured (this one, or a git ref's export).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.child_cost import export_ref  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def run_callgrind(code_root: Path, loop: str, args: Sequence[str], out: Path) -> int:
    """Total instructions (callgrind's Ir) of ``python -c loop *args`` on ``code_root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONPATH"] = str(code_root)
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts in every count
    proc = subprocess.run(
        [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, "-c", loop, *args),
        ],
        cwd=code_root,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"the measured process failed ({proc.returncode})")
    m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if m is None:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError("no instruction count in callgrind's output")
    return int(m.group(1))


def compare(
    loop: str,
    *,
    sizes: tuple[int, int],
    refs: Sequence[str],
    extra_args: Sequence[str] = (),
    unit: str,
) -> int:
    """Print the instructions per ``unit`` of this tree and of each git ref.

    The loop gets ``url N *extra_args`` as its arguments. Returns the exit code.
    """
    n1, n2 = sizes
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="redflow-callgrind-"))
    roots = {"this tree": ROOT}
    for ref in refs:
        roots[ref] = export_ref(ref, tmp / re.sub(r"[^A-Za-z0-9]", "_", ref))
    server = RedisServer(["--save", "", "--appendonly", "no"]).start()
    try:
        for label, root in roots.items():
            a = run_callgrind(root, loop, (server.url, str(n1), *extra_args), tmp / f"cg.{n1}")
            b = run_callgrind(root, loop, (server.url, str(n2), *extra_args), tmp / f"cg.{n2}")
            print(f"{label:20s} {(b - a) / (n2 - n1):10,.0f} instructions per {unit}", flush=True)
        return 0
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
