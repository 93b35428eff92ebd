"""Fixtures of the fault suite: one harness per test (its own redis-server(s),
supervisors, ledger directory), the closing table printed at the end of the
session, and the opt-in ``soak`` selection."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import RESULTS, Faults, faults_harness


@pytest.fixture()
def fx(tmp_path: Path, prefix: str) -> Iterator[Faults]:
    with faults_harness(tmp_path, prefix) as harness:
        yield harness


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak cases run only when selected with ``-m soak``."""
    if "soak" in (config.option.markexpr or ""):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("soak") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault injection results")
    tr.write_line(f"{'fault':<44} {'runs':>6} {'lost':>5} {'re-exec':>8} {'recovery':>9}  note")
    for row in RESULTS:
        rec = "-" if row.recovery_s is None else f"{row.recovery_s:.2f} s"
        tr.write_line(
            f"{row.case:<44} {row.runs:>6} {row.lost:>5} {row.reexecuted:>8} {rec:>9}  {row.note}"
        )
    out = os.environ.get("FAULTS_RESULTS_JSON")
    if out:
        Path(out).write_text(json.dumps([row.__dict__ for row in RESULTS], indent=2))
