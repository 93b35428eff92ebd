"""A supervisor child's check of its working directory before each claim
(``_Hooks.restore_cwd``, from ``should_stop``): it compares ``os.getcwdb()`` with
the supervisor's directory as bytes. A home whose name is not ASCII, or not even
UTF-8 (bytes the file system encoding decodes with surrogate escapes), is still
seen as home (no chdir, no warning), and a handler's ``os.chdir`` into another
directory, of any name, is undone, every time.

Runs in a fresh interpreter: the working directory is the process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.conftest import ROOT

SCRIPT = """
import json
import os
import sys
from redflow_supervisor import child as ch
from redflow_supervisor.board import Board

home, other = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
os.chdir(home)
hooks = ch._Hooks(Board(1), ch.ChildSpec(
    index=0, slot=0, app="t", url="redis://127.0.0.1:1", prefix="t", queues=("q",), lease_ms=5000,
))
hooks._next_flush = float("inf")
out = []

def check(what):
    assert hooks.should_stop() is False
    out.append((what, os.getcwdb() == home))

check("first")
check("nothing changed")
for i in range(3):  # the same change again and again: each one undone
    os.chdir(other)
    check(f"chdir {i}")
os.chdir(b"/")
check("chdir /")
print(json.dumps(out))
"""

NAMES = {
    "ascii": b"home",
    "utf8": "h\u00f4me \u00e9t\u00e9".encode(),
    "not-utf8": b"h\xe9me\xff",
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_handlers_chdir_is_undone_whatever_the_homes_name(tmp_path: Path, name: str) -> None:
    home = os.path.join(os.fsencode(tmp_path), NAMES[name])
    other = os.path.join(os.fsencode(tmp_path), b"other-" + NAMES[name])
    os.mkdir(home)
    os.mkdir(other)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, os.fsdecode(home), os.fsdecode(other)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r for r in rows if not r[1]] == []
    assert len(rows) == 6
    # each undo said so in the log, and only those
    assert proc.stderr.count("this worker's directory changed") == 4, proc.stderr


GONE = """
import json
import os
import sys
from redflow_supervisor import child as ch
from redflow_supervisor.board import Board

home, how = os.fsencode(sys.argv[1]), sys.argv[2]
os.chdir(home)
hooks = ch._Hooks(Board(1), ch.ChildSpec(
    index=0, slot=0, app="t", url="redis://127.0.0.1:1", prefix="t", queues=("q",), lease_ms=5000,
))
hooks._next_flush = float("inf")
if how == "removed":
    os.rmdir(home)  # the process's directory with it: getcwd fails (ENOENT)
else:
    os.rename(home, home + b"-renamed")  # getcwd names the new path
out = []
for _ in range(3):
    assert hooks.should_stop() is False
    out.append(hooks.home is None)
print(json.dumps(out))
"""


@pytest.mark.parametrize("how", ["removed", "renamed"])
@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_home_removed_or_renamed_is_given_up_once(tmp_path: Path, name: str, how: str) -> None:
    """The supervisor's directory removed or renamed under a running child (a
    deploy): the check neither raises nor loops; it warns once, stops trying,
    and the claims go on."""
    home = os.path.join(os.fsencode(tmp_path), NAMES[name])
    os.mkdir(home)
    proc = subprocess.run(
        [sys.executable, "-c", GONE, os.fsdecode(home), how],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True, True]
    assert proc.stderr.count("cannot go back to") == 1, proc.stderr
    assert "directory changed" not in proc.stderr, proc.stderr
