"""Harness side of the client process (see :mod:`benchmarks.client`)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.procs import ManagedProcess


class ClientError(RuntimeError):
    pass


class ClientProc:
    def __init__(self, system: str, *, env: dict[str, str], cwd: str, log_path: Path) -> None:
        self.proc = ManagedProcess(
            [sys.executable, "-m", "benchmarks.client", system],
            env=env,
            cwd=cwd,
            log_path=log_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.popen.stdin is not None and self.proc.popen.stdout is not None
        self._stdin = self.proc.popen.stdin
        self._fd = self.proc.popen.stdout.fileno()
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)

    def _readline(self, deadline: float) -> str:
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientError("client process did not answer in time")
            if not self._sel.select(timeout=min(remaining, 1.0)):
                if not self.proc.alive():
                    raise ClientError(f"client process exited:\n{self.proc.log_tail()}")
                continue
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise ClientError(f"client process closed its output:\n{self.proc.log_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def request(
        self,
        payload: dict[str, Any],
        *,
        timeout: float = 600.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        try:
            self._stdin.write((json.dumps(payload) + "\n").encode())
            self._stdin.flush()
        except OSError as exc:
            raise ClientError(f"client process gone: {exc}\n{self.proc.log_tail()}") from exc
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            kind, _, rest = line.partition(" ")
            if kind == "P":
                if on_progress is not None:
                    on_progress(int(rest))
            elif kind == "R":
                result: dict[str, Any] = json.loads(rest)
                return result
            elif kind == "E":
                raise ClientError(f"{payload.get('op')}: {rest}\n{self.proc.log_tail()}")
            else:
                raise ClientError(f"unexpected client output: {line!r}")

    def close(self) -> None:
        try:
            if self.proc.alive():
                self._stdin.write(b'{"op": "quit"}\n')
                self._stdin.flush()
                self._stdin.close()
                self.proc.popen.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self._sel.close()
            self.proc.stop(grace=2.0)
