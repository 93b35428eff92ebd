"""Acceptance checks written from issue 16's text: "``python -m redflow_mp.worker
--help`` prints a RuntimeWarning and exits 0 doing nothing" was a rough edge to
remove; no ``python -m`` entry point of the library may print a warning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.process.conftest import ROOT, clean_env

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("module", ["redflow_mp", "redflow_mp.worker"])
@pytest.mark.parametrize("args", [["--help"], []])
def test_python_dash_m_of_a_library_module_prints_no_warning(module: str, args: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=clean_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, res
    assert "not a command" in res.stderr, res.stderr
    assert "Warning" not in res.stderr, res.stderr


def test_import_of_the_package_leaves_worker_importable_by_name() -> None:
    """``from redflow_mp import Worker`` (SPEC's in-process worker) keeps working."""
    res = subprocess.run(
        [sys.executable, "-c", "from redflow_mp import Worker; print(Worker.__name__)"],
        cwd=ROOT,
        env=clean_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and res.stdout.strip() == "Worker", res
