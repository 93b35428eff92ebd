"""The redflow-supervisor a drain benchmark runs its case under
(:mod:`benchmarks.child_cost`, :mod:`benchmarks.shards`): its output kept in a
temporary file and shown only when the case fails, and the process always
stopped (TERM, 30 s, then KILL), whatever ends the case.

Unlike :mod:`benchmarks.procs`, the process stays in the harness's session: a
Ctrl-C in the terminal reaches it as it reaches the harness.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def supervised(
    args: Sequence[str], *, cwd: str | os.PathLike[str], env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` started (stdout and stderr to a temporary file) for the body of the
    ``with``; a ``RuntimeError`` out of the body first writes the last 4,000
    characters of that output to stderr (why the drain stalled)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=log)
        try:
            yield proc
        except RuntimeError:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
