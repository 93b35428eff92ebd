"""Fixtures of the fault suite: one harness per test (its own redis-server(s),
supervisors, ledger directory) and the rows of the closing table handed over by
an xdist worker (``tests/conftest.py`` prints the table at the end of the
session, and deselects the opt-in ``soak`` cases)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.faults.harness import RESULTS, Faults, faults_harness


@pytest.fixture()
def fx(tmp_path: Path, prefix: str) -> Iterator[Faults]:
    with faults_harness(tmp_path, prefix) as harness:
        yield harness


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under xdist (the plain ``pytest`` runs ``-n 2``) this is a worker: hand its rows of
    the closing table to the controller, which prints the table (``tests/conftest.py``)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["faults_results"] = [asdict(row) for row in RESULTS]
