"""The distributions: the wheel that pip and the image install, and the sdist.

Everything is built offline with ``python -m build --no-isolation`` (the dev extra
brings setuptools and build; nothing is downloaded), from copies of the sources:
the sdist, and a wheel built from that sdist, from the repository's files (tracked
plus new, as git lists them); a second wheel from exactly the files the Dockerfile's
build stage copies, so the image's ``pip install`` is known to work with them.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import trove_classifiers

import redflow_mp
from tests.packaging.deployfiles import ROOT, dockerfile

PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    image_wheel: Path  # built from the Dockerfile's COPY set alone
    files: tuple[str, ...]  # the repository's files the sdist was built from


def _build(source: Path, outdir: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), *args, "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"python -m build failed in {source}:\n{proc.stdout}\n{proc.stderr}"
    )


_NOT_SOURCES = {".git", ".venv", "__pycache__", "build", "dist", "artifacts", ".state"}


def _repo_files() -> tuple[str, ...]:
    """The repository's files: as git lists them (tracked and new), or in a tree
    without git (an unpacked sdist) every file outside caches and build output."""
    if not (ROOT / ".git").exists():
        found = []
        for path in ROOT.rglob("*"):
            rel = path.relative_to(ROOT)
            if (path.is_file() or path.is_symlink()) and not any(
                p in _NOT_SOURCES or p.endswith((".egg-info", "_cache")) for p in rel.parts
            ):
                found.append(rel.as_posix())
        return tuple(sorted(found))
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    # The `redflow_supervisor` symlink (to supervisor/) is one of them, kept as a link.
    return tuple(
        sorted(
            f for f in listed.split("\0") if f and ((ROOT / f).is_file() or (ROOT / f).is_symlink())
        )
    )


def _image_sources() -> list[tuple[str, str]]:
    """(source, destination) of every COPY in the Dockerfile's build stage."""
    out: list[tuple[str, str]] = []
    for ins in dockerfile(ROOT / "Dockerfile"):
        if ins.keyword != "COPY" or ins.stage != 0:
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        *sources, dest = words
        for src in sources:
            target = dest + src if dest.endswith("/") else dest
            out.append((src, target))
    return out


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    tmp = tmp_path_factory.mktemp("dists")
    files = _repo_files()
    repo = tmp / "repo"
    for name in files:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            (repo / name).symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, repo / name)
    _build(repo, tmp / "dist")  # the sdist, then a wheel built from it

    image = tmp / "image"
    for src, dest in _image_sources():
        assert dest.startswith("/src/"), f"the build stage copies {src} outside /src: {dest}"
        target = image / dest.removeprefix("/")
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, target)
    _build(image / "src", tmp / "image-dist", "--wheel")

    version = redflow_mp.__version__
    return Dists(
        sdist=tmp / "dist" / f"redflow_mp-{version}.tar.gz",
        wheel=tmp / "dist" / f"redflow_mp-{version}-py3-none-any.whl",
        image_wheel=tmp / "image-dist" / f"redflow_mp-{version}-py3-none-any.whl",
        files=files,
    )


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        raw = zf.read(name)
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


def _package_files(files: tuple[str, ...]) -> set[str]:
    """Where each of the repository's package files lands in an installation."""
    out: set[str] = set()
    for name in files:
        path = PurePosixPath(name)
        if path.suffix == ".lua" or path.name == "py.typed" or path.suffix == ".py":
            if path.parts[0] == "redflow_mp":
                out.add(name)
            elif path.parts[0] == "supervisor":
                out.add(str(PurePosixPath("redflow_supervisor", *path.parts[1:])))
    return out


def test_wheel_holds_both_packages_lua_types_and_license(dists: Dists) -> None:
    names = _wheel_names(dists.wheel)
    info = f"redflow_mp-{redflow_mp.__version__}.dist-info"
    expected = _package_files(dists.files)
    lua = {n for n in expected if n.endswith(".lua")}
    assert len(lua) >= 10
    lib = ("_lib", "_lib_retry", "_lib_rate", "_lib_runs")
    assert {f"redflow_mp/lua/{n}.lua" for n in lib} <= lua
    assert {"redflow_mp/py.typed", "redflow_supervisor/py.typed"} <= expected
    assert "redflow_supervisor/ops/dashboard.py" in expected
    missing = expected - names
    assert not missing, f"package files missing from the wheel: {sorted(missing)}"
    assert f"{info}/licenses/LICENSE" in names
    assert f"{info}/entry_points.txt" in names
    extra = {n for n in names - expected if not n.startswith(f"{info}/")}
    assert not extra, f"files in the wheel that are not package files: {sorted(extra)}"
    # SPEC §1: the two packages only, never a top-level `supervisor` (supervisord's name).
    assert {n.split("/", 1)[0] for n in names} == {"redflow_mp", "redflow_supervisor", info}
    with zipfile.ZipFile(dists.wheel) as zf:
        license_text = zf.read(f"{info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in license_text and "redflow-mp contributors" in license_text


def test_image_build_stage_copies_enough_to_build_the_same_wheel(dists: Dists) -> None:
    assert _wheel_names(dists.image_wheel) == _wheel_names(dists.wheel)
    assert _metadata(dists.image_wheel).as_string() == _metadata(dists.wheel).as_string()


def test_wheel_metadata(dists: Dists) -> None:
    meta = _metadata(dists.wheel)
    project = PYPROJECT["project"]
    assert meta["Name"] == "redflow-mp"
    assert meta["Version"] == redflow_mp.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    assert classifiers == project["classifiers"]
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, f"not trove classifiers (PyPI refuses the upload): {unknown}"
    assert "Typing :: Typed" in classifiers
    pythons = sorted(
        int(c.rsplit(".", 1)[1])
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    )
    assert pythons and pythons[0] == 11, "the oldest Python classifier must match requires-python"
    assert not any(c.startswith("License ::") for c in classifiers), (
        "PEP 639: the license is the License-Expression, not a classifier"
    )
    assert "redis" in (meta["Keywords"] or "").split(",")
    urls: dict[str, str] = {}
    for value in meta.get_all("Project-URL") or []:
        label, _, url = value.partition(",")
        urls[label.strip()] = url.strip()
    assert set(urls) >= {"Homepage", "Documentation", "Issues", "Changelog"}
    for label, url in urls.items():
        if "://" in url:
            assert url.startswith("https://"), f"{label}: {url}"
        else:  # no public address yet: a file of the repository (see pyproject.toml)
            target = url.split("#", 1)[0]
            assert target in dists.files, f"{label} names {url}, which is not in the repository"
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    for dep in ("redis", "croniter", "msgspec", "psutil", "setproctitle"):
        assert dep in requires


def test_wheel_entry_points_run_from_the_installed_files(dists: Dists, tmp_path: Path) -> None:
    """Unpacked alone (no editable install in the way), the wheel's console scripts
    answer --help and --version and the Lua scripts load as package data."""
    site = tmp_path / "site"
    with zipfile.ZipFile(dists.wheel) as zf:
        zf.extractall(site)
        entry_points = zf.read(
            f"redflow_mp-{redflow_mp.__version__}.dist-info/entry_points.txt"
        ).decode()
    scripts: dict[str, str] = {}
    section = ""
    for line in entry_points.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif "=" in line and section == "[console_scripts]":
            name, _, target = line.partition("=")
            scripts[name.strip()] = target.strip()
    assert scripts == PYPROJECT["project"]["scripts"]
    probe = f"""
import contextlib, importlib, io, json, sys
out = {{}}
for name, target in {scripts!r}.items():
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    for flag in ("--help", "--version"):
        # As the console script calls it: no arguments, the command line in sys.argv.
        sys.argv = [name, flag]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                code = fn()
        except SystemExit as exc:
            code = exc.code
        out[name + " " + flag] = [code, buf.getvalue().splitlines()[0]]
import redflow_mp, redflow_supervisor
from redflow_mp import scripts
out["files"] = [redflow_mp.__file__, redflow_supervisor.__file__]
out["lua"] = sorted(scripts.load_sources((7, 2)))
print(json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for name in scripts:
        code, usage = out[f"{name} --help"]
        assert code in (0, None), f"{name} --help exited {code}"
        assert usage.startswith(f"usage: {name}"), usage
        code, version = out[f"{name} --version"]
        assert code in (0, None), f"{name} --version exited {code}"
        assert version == f"{name} {redflow_mp.__version__} (redflow-mp)", version
    for path in out["files"]:
        assert path.startswith(str(site)), f"imported {path}, not the unpacked wheel"
    lua_names = {PurePosixPath(n).stem for n in dists.files if n.startswith("redflow_mp/lua/")}
    assert set(out["lua"]) == lua_names - {"_lib", "_lib_retry", "_lib_rate", "_lib_runs"}


def test_sdist_carries_tests_config_examples_and_deployment_files(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tf:
        root = f"redflow_mp-{redflow_mp.__version__}/"
        names = {m.name.removeprefix(root) for m in tf.getmembers() if m.isfile()}
    wanted = {
        f
        for f in dists.files
        if f.split("/", 1)[0]
        in {"redflow_mp", "supervisor", "tests", "conf", "examples", "deploy", "benchmarks", "docs"}
    }
    wanted |= {
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "Dockerfile",
        ".dockerignore",
    }
    missing = wanted - names
    assert not missing, f"missing from the sdist: {sorted(missing)}"
    assert "tests/conftest.py" in names and "conf/redflow.toml" in names
    assert "deploy/redflow-supervisor.service" in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "/__pycache__/" in n]
    assert not [n for n in names if n.split("/", 1)[0] in {".git", ".venv", ".ci"}]
