"""SPEC §1: the run-time dependencies are redis (with hiredis), croniter,
msgspec, psutil and setproctitle; "nothing else at run time without a reason
written in the README". Every other name in ``[project] dependencies`` must be
named (in backquotes) by README.md."""

from __future__ import annotations

import re
import tomllib

from tests.process.conftest import ROOT

SPEC_DEPENDENCIES = {"redis", "hiredis", "croniter", "msgspec", "psutil", "setproctitle"}


def test_every_runtime_dependency_beyond_spec_has_its_reason_in_the_readme() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
    readme = (ROOT / "README.md").read_text()
    unexplained = sorted(n for n in names - SPEC_DEPENDENCIES if f"`{n}`" not in readme)
    assert unexplained == []
