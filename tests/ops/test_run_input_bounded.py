"""``redflow run --input @FILE`` / ``--input -`` reads at most what a run's input
can be (four times ``max_payload_bytes`` of JSON text, 32 MiB by default), not
the whole file or stream: a runaway pipe, a log file named by mistake or
``@/dev/zero`` grew the command's memory without bound before any check (the
8 MiB limit applied only once it had all been read and decoded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.ops.conftest import CLI_TIMEOUT, ROOT, cli_env

#: The wrapper's only child is the command: its peak RSS, in KiB (Linux).
_MEASURE = (
    "import resource, subprocess, sys, json\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps([p.returncode, p.stderr, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
)


def test_a_huge_input_file_is_refused_without_reading_it_whole(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    big = tmp_path / "huge.json"
    with big.open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MiB of zeros, no disk used
    cmd = [sys.executable, "-m", "redflow_supervisor.ops", "run", "w", "--queue", "q"]
    cmd += ["--input", f"@{big}", "--url", redis_url, "--prefix", prefix]
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=True,
    )
    code, err, peak_kib = json.loads(out.stdout)
    assert code == 2, err
    assert "larger than" in err, err  # before: "--input file ... is not valid JSON"
    assert peak_kib < 150 * 1024, peak_kib  # before: over 200 MiB (the whole file read)
