"""The commands as a new user meets them (issue 16 #1): --help generated from the
settings' own documentation, --version everywhere, errors that name the value and
what is accepted, short import errors, and no ``python -m`` entry point that does
nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from redflow_mp import __version__
from redflow_supervisor.settings import specs
from tests.process.conftest import ROOT, clean_env

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
SUPERVISOR = [sys.executable, "-m", "redflow_supervisor"]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=clean_env(env), capture_output=True, text=True, timeout=60, check=False
    )


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_supervisor_help_documents_every_setting_with_units_and_choices() -> None:
    res = _run([*SUPERVISOR, "--help"])
    assert res.returncode == 0, res.stderr
    text = _flat(res.stdout)
    for spec in specs():
        assert spec.option in text, spec.name
        assert _flat(spec.description) in text, spec.name
    assert "(setting " not in text  # the old placeholder help
    assert "--lease-ms MS" in text and "(milliseconds; default 5000)" in text
    assert "(seconds, or 500ms/30s/5m/2h/7d; default 7d)" in text  # run_retention
    assert "--log-level {debug,info,warning,error}" in text
    assert "--max-memory-per-child MIB" in text and "(MiB; default 0)" in text
    for needle in ("examples:", "redflow-supervisor --app etl --procs 8 --module jobs"):
        assert needle in res.stdout
    for signal_name in ("TERM", "second TERM, INT, QUIT", "HUP", "TTIN / TTOU"):
        assert signal_name in res.stdout
    assert "REDFLOW_<NAME>" in text and "Exit status" in text


@pytest.mark.parametrize(
    "cmd",
    [
        [str(BIN / "redflow-supervisor"), "--version"],
        [*SUPERVISOR, "--version"],
        [str(BIN / "redflow"), "--version"],
        [sys.executable, "-m", "redflow_supervisor.ops", "--version"],
    ],
)
def test_version(cmd: list[str]) -> None:
    res = _run(cmd)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(
        rf"redflow(-supervisor)? {re.escape(__version__)} \(redflow-mp\)\n", res.stdout
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--lease-ms", "abc"],
            {},
            "redflow-supervisor: bad value 'abc' for setting lease_ms (from the command line, "
            "--lease-ms): expected a whole number of milliseconds, at least 300 "
            "and at most 86400000",
        ),
        (
            ["--log-level", "verbose"],
            {},
            "redflow-supervisor: bad value 'verbose' for setting log_level (from the command "
            "line, --log-level): expected one of debug, info, warning, error",
        ),
        (
            [],
            {"REDFLOW_LEASE_MS": "abc"},
            "redflow-supervisor: bad value 'abc' for setting lease_ms (from environment "
            "variable REDFLOW_LEASE_MS): expected a whole number of milliseconds, at least 300 "
            "and at most 86400000",
        ),
        (
            [],
            {"REDFLOW_LEASE": "5"},
            "redflow-supervisor: unknown setting REDFLOW_LEASE in the environment; did you mean "
            "REDFLOW_LEASE_MS?",
        ),
        (
            ["--no-such-flag"],
            {},
            "redflow-supervisor: unrecognized arguments: --no-such-flag "
            "(see redflow-supervisor --help)",
        ),
    ],
)
def test_supervisor_bad_values_are_one_clear_line(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    res = _run([*SUPERVISOR, "--app", "x", "--module", "json", *args], env=env)
    assert res.returncode == 2
    assert res.stderr == expected + "\n"


def test_module_that_does_not_exist_is_one_or_two_lines() -> None:
    res = _run([*SUPERVISOR, "--app", "x", "--module", "nosuchmod"])
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert lines == [
        "redflow-supervisor: cannot import workflow module 'nosuchmod': ModuleNotFoundError: "
        "No module named 'nosuchmod'",
        "  (--log-level debug shows the traceback)",
    ]
    debug = _run([*SUPERVISOR, "--app", "x", "--module", "nosuchmod", "--log-level", "debug"])
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "No module named 'nosuchmod'" in debug.stderr


def test_module_that_raises_names_its_exception_and_line(tmp_path: Path) -> None:
    mod = tmp_path / "jobs_broken.py"
    mod.write_text('import os\n\nraise ValueError("no DATABASE_URL")\n')
    res = _run([*SUPERVISOR, "--app", "x", "--module", str(mod)])
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0] == (
        f"redflow-supervisor: cannot import workflow module {str(mod)!r}: "
        "ValueError: no DATABASE_URL"
    )
    assert re.fullmatch(
        r"  \(raised at \S*jobs_broken\.py, line 3; --log-level debug .*\)", lines[1]
    )
    syntax = tmp_path / "jobs_syntax.py"
    syntax.write_text("def broken(:\n")
    res = _run([*SUPERVISOR, "--app", "x", "--module", str(syntax)])
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 2, res.stderr
    assert "SyntaxError" in res.stderr and "line 1" in res.stderr


def test_module_failing_inside_a_library_call_names_its_own_line(tmp_path: Path) -> None:
    """A module whose ``json.loads`` of a bad config raises: the location is the
    module's line, not the line of json's decoder (in the Python installation)
    where the exception was made."""
    mod = tmp_path / "jobs_config.py"
    mod.write_text('import json\n\nCONFIG = json.loads("{not json")\n')
    res = _run([*SUPERVISOR, "--app", "x", "--module", str(mod)])
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].endswith(
        "JSONDecodeError: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)"
    ), lines[0]
    assert re.fullmatch(
        r"  \(raised at \S*jobs_config\.py, line 3; --log-level debug .*\)", lines[1]
    ), lines[1]


def test_module_defining_a_workflow_twice_names_the_line_of_the_second(tmp_path: Path) -> None:
    """The error is raised inside redflow_mp's registry: the location is the
    module's ``define_workflow`` line, not the registry's (from a clone, where
    redflow_mp is not under site-packages, it named ``redflow_mp/registry.py``)."""
    mod = tmp_path / "jobs_twice.py"
    mod.write_text(
        "from redflow_mp import define_workflow\n\n"
        "@define_workflow('twice')\ndef one(ctx): ...\n\n"
        "@define_workflow('twice')\ndef two(ctx): ...\n"
    )
    res = _run([*SUPERVISOR, "--app", "x", "--module", str(mod)])
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and "DuplicateWorkflowError" in lines[0], res.stderr
    assert re.fullmatch(
        r"  \(raised at \S*jobs_twice\.py, line 6; --log-level debug .*\)", lines[1]
    ), lines[1]


@pytest.mark.parametrize("module", ["redflow_mp", "redflow_mp.worker"])
def test_library_modules_are_not_commands_and_say_which_ones_are(module: str) -> None:
    for args in (["--help"], []):
        res = _run([sys.executable, "-m", module, *args])
        assert res.returncode == 2, res
        assert f"{module} is part of the redflow-mp library, not a command" in res.stderr
        assert "redflow-supervisor --app APP --module MODULE" in res.stderr
        assert "redflow --help" in res.stderr
        assert "usage:" not in res.stdout + res.stderr
