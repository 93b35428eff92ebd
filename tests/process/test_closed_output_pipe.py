"""A supervisor whose stdout (or stdout and stderr) is a pipe whose reader is
gone: ``redflow-supervisor ... | head -1`` once ``head`` has its line, a log
shipper that exited. SIGPIPE is ignored (Python's own disposition, inherited
by the children), so each write fails with ``EPIPE`` instead. Before, a
handler's ``print`` raised ``BrokenPipeError`` once its stream's buffer
reached the pipe, and its run failed; now the bytes are dropped and counted,
as for a reader that stopped reading (``supervisor/output.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import ROOT, Supervisor, wait_until

pytestmark = pytest.mark.process

FLOWS = ("tests.process.flows_signals",)


def _tallies(raw: redis.Redis, client: Client, run_ids: list[str]) -> dict[str, int]:
    tag = client.keys.tag
    return {rid: int(raw.get(f"{tag}:tally:{rid}") or 0) for rid in run_ids}


class _PipedSupervisor(Supervisor):
    """A supervisor whose stdout (and stderr, with ``both``) is a pipe whose reader
    is gone, as ``redflow-supervisor ... | head -1`` once ``head`` has its line."""

    def __init__(self, *args: Any, both: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.both = both

    def start(self) -> Supervisor:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        read_end, write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdout=write_end,
                stderr=write_end if self.both else self._log,
                start_new_session=True,
            )
        finally:
            os.close(write_end)
            os.close(read_end)  # the reader left
        return self


@pytest.mark.parametrize("both", [False, True], ids=["stdout", "stdout-and-stderr"])
def test_a_closed_output_pipe_fails_no_printing_run_and_stops_nothing(
    redis_url: str, prefix: str, tmp_path: Path, client: Client, raw: redis.Redis, both: bool
) -> None:
    sup = _PipedSupervisor(
        redis_url, prefix, tmp_path / "supervisor.log", procs=2, modules=FLOWS, both=both
    )
    try:
        sup.start()
        before = {p.pid for p in sup.wait_workers(2)}
        handles = [client.run_by_name("printer", 0) for _ in range(6)]
        for handle in handles:
            assert handle.result(timeout=30) in before, sup.log()
        ids = [h.id for h in handles]
        assert _tallies(raw, client, ids) == dict.fromkeys(ids, 1)
        assert sup.proc is not None and sup.proc.poll() is None, sup.log()
        assert {p.pid for p in sup.workers()} == before, sup.log()
        if not both:  # its stderr is the log: the drop is reported there
            said = "bytes of this worker's output dropped"
            wait_until(lambda: said in sup.log(), 20, message="the drop reported")
        sup.send(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0, sup.log()
    finally:
        sup.stop()


def test_a_stop_during_start_up_with_a_closed_output_pipe_exits_zero(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """``redflow-supervisor ... 2>&1 | head -1`` and a Ctrl-C while the modules
    import: ``head`` is gone, and the one line saying so has no reader."""
    marker = tmp_path / "importing"
    sup = _PipedSupervisor(
        redis_url,
        prefix,
        tmp_path / "supervisor.log",
        modules=["tests.process.flows_slowstart"],
        env={"SLOWSTART_MARKER": str(marker)},
        both=True,
    )
    try:
        sup.start()
        wait_until(marker.exists, 20, message="the workflow module's import to begin")
        sup.send(signal.SIGINT)
        assert sup.wait(timeout=20) == 0
    finally:
        sup.stop()
