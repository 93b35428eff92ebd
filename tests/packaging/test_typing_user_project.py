"""Types reach a user's project: ``mypy --strict`` on a small project that uses
redflow-mp, installed (a) editable in compat mode (the README's typed set-up) and
(b) from a built wheel, each in a fresh venv.

The project's correct file must type-check cleanly (its handlers are typed, not
``Any``), and its wrong file must fail exactly where marked ``# E: <code>``: a
wrong input type given to ``Workflow.run``, a result used as the wrong type,
``ctx.input`` and ``ctx.step.run`` used as the wrong type, and the same for
``Workflow.arun`` and its ``AsyncRunHandle``. Without types flowing
from ``define_workflow`` to ``run()``/``result()``, those lines pass silently.

The venvs are made without pip; a ``.pth`` file lends them this interpreter's
site-packages (pip, setuptools, msgspec, redis, ...) but not its own install of
redflow-mp, so the package mypy sees is the one installed in the venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)

GOOD = """
import msgspec

from redflow_mp import AsyncContext, Client, Context, RunHandle, define_workflow
from redflow_mp.aio import AsyncClient, AsyncRunHandle


class Order(msgspec.Struct):
    id: str
    qty: int


def price(qty: int, unit: float = 2.5) -> float:
    return qty * unit


@define_workflow("quote", schema=Order)
def quote(ctx: Context[Order]) -> dict[str, float]:
    total: float = ctx.step.run("price", price, ctx.input.qty, timeout=5)
    return {"total": total}


@define_workflow("shout")
async def shout(ctx: AsyncContext[str]) -> str:
    async def upper(s: str) -> str:
        return s.upper()

    loud: str = await ctx.step.run("upper", upper, ctx.input)
    return loud


def use(client: Client) -> float:
    handle: RunHandle[dict[str, float]] = quote.run(Order(id="a", qty=2), client=client)
    out = handle.result(timeout=10)
    word: str = shout.run("hi", client=client).result()
    return out["total"] + len(word)


async def use_async(client: AsyncClient) -> float:
    handle: AsyncRunHandle[dict[str, float]] = await quote.arun(Order(id="a", qty=2), client=client)
    out = await handle.result(timeout=10)
    word: str = await (await shout.arun("hi", priority=3)).result()
    return out["total"] + len(word)
"""

BAD = """
from good import shout

from redflow_mp import Context, define_workflow

shout.run(42)  # E: arg-type
n: int = shout.run("x").result()  # E: assignment


@define_workflow("count")
def count(ctx: Context[int]) -> int:
    s: str = ctx.input  # E: assignment
    t: str = ctx.step.run("x", lambda: 3)  # E: assignment
    return len(s + t)


async def later() -> None:
    await shout.arun(42)  # E: arg-type
    m: int = await (await shout.arun("x")).result()  # E: assignment
"""


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def _venv(path: Path) -> Path:
    """A fresh venv whose packages are only what gets installed into it, plus a
    path entry to this interpreter's site-packages for the dependencies and pip."""
    done = _run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent)
    assert done.returncode == 0, done.stderr
    python = path / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=path)
    Path(site.stdout.strip(), "_borrowed_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return python


def _pip(python: Path, *args: str | Path, cwd: Path) -> None:
    done = _run(
        python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", *args, cwd=cwd
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _mypy(python: Path, project: Path, name: str) -> subprocess.CompletedProcess[str]:
    return _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--python-executable",
        python,
        "--cache-dir",
        project / ".mypy_cache",
        name,
        cwd=project,
    )


def _sources(tmp: Path) -> Path:
    """What a wheel is built from: pyproject, README, LICENSE (its license-files),
    the two packages (the ``redflow_supervisor`` symlink kept as a symlink)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("redflow_mp", "supervisor"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    (src / "redflow_supervisor").symlink_to("supervisor")
    return src


def _check(python: Path, tmp: Path, label: str) -> None:
    project = tmp / f"project-{label}"
    project.mkdir()
    (project / "good.py").write_text(textwrap.dedent(GOOD).lstrip())
    (project / "bad.py").write_text(textwrap.dedent(BAD).lstrip())
    where = _run(python, "-c", "import redflow_mp; print(redflow_mp.__file__)", cwd=project)
    assert where.returncode == 0, where.stderr
    good = _mypy(python, project, "good.py")
    assert good.returncode == 0, f"{label}: {good.stdout}{good.stderr}"
    bad = _mypy(python, project, "bad.py")
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^bad\.py:(\d+): error: .*\[([a-z-]+)\]$", bad.stdout, re.M)
    }
    expected = {
        (i, m.group(1))
        for i, line in enumerate((project / "bad.py").read_text().splitlines(), 1)
        if (m := re.search(r"# E: ([a-z-]+)", line))
    }
    assert len(expected) == 6
    assert found == expected, f"{label}: {bad.stdout}{bad.stderr}"


def test_types_reach_a_user_project_installed_editable_and_from_a_wheel(tmp_path: Path) -> None:
    # (a) editable, compat mode: a plain path entry (.pth) to the source tree.
    editable = _venv(tmp_path / "venv-editable")
    _pip(editable, "-e", ROOT, "--config-settings", "editable_mode=compat", cwd=tmp_path)
    _check(editable, tmp_path, "editable")
    # (b) a wheel built from a copy of the sources (an in-tree build would leave a
    # build/ directory whose stale files a later wheel could pick up), installed
    # like any package.
    dist = tmp_path / "dist"
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        dist,
        _sources(tmp_path),
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("redflow_mp-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        tops = {name.split("/", 1)[0] for name in whl.namelist()}
        assert "redflow_supervisor/py.typed" in whl.namelist()
    # SPEC §1: never a top-level `supervisor` package (supervisord's name).
    assert tops == {"redflow_mp", "redflow_supervisor", wheel.name.split("-py3")[0] + ".dist-info"}
    installed = _venv(tmp_path / "venv-wheel")
    _pip(installed, wheel, cwd=tmp_path)
    where = _run(installed, "-c", "import redflow_mp; print(redflow_mp.__file__)", cwd=tmp_path)
    assert str(tmp_path / "venv-wheel") in where.stdout, where.stdout + where.stderr
    _check(installed, tmp_path, "wheel")
