"""Readers for the deployment files: the Dockerfile and its ``.dockerignore``, the
Compose file's variable interpolation, the systemd unit and environment files, and
the two duration syntaxes (systemd time spans, Compose/Go durations).

Each is as small as the files it reads need (the Dockerfile's instructions, line
continuations, exec-form JSON; a unit's sections and repeated keys) and raises
``ValueError`` naming what it could not read, so a test fails on a file it does not
understand instead of passing over it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROOT",
    "Instruction",
    "dockerfile",
    "dockerignored",
    "env_file",
    "exec_form",
    "instruction_env",
    "interpolate",
    "seconds",
    "unit_file",
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction; ``stage`` counts FROM lines from 0."""

    keyword: str
    args: str
    stage: int


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with backslash continuations joined; comment lines dropped
    (also inside a continued instruction, as Docker does)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        if not stripped:
            if pending:
                out.append(pending)
                pending = ""
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        out.append(pending + stripped)
        pending = ""
    if pending:
        raise ValueError(f"the last line continues into nothing: {pending!r}")
    return out


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, in order."""
    out: list[Instruction] = []
    stage = -1
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if not re.fullmatch(r"[A-Z]+", keyword):
            raise ValueError(f"{path}: not an instruction: {line!r}")
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def exec_form(args: str) -> list[str] | None:
    """The argv of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD, None for shell form."""
    if not args.startswith("["):
        return None
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"exec form must be a JSON list of strings: {args!r}")
    return value


def instruction_env(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """The ENV of one stage (``ENV K=V K2=V2``; ``$PATH``-style references left as is)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV" or ins.stage != stage:
            continue
        for word in shlex.split(ins.args):
            name, eq, value = word.partition("=")
            if not eq:
                raise ValueError(f"ENV without '=' (legacy form) is not supported: {ins.args!r}")
            env[name] = value
    return env


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether ``.dockerignore`` ``patterns`` leave ``path`` (or a folder above it) out
    of the build context: the last matching pattern wins, ``!`` re-includes."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.rsplit("/", 1)[-1], pattern[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pattern) for c in candidates)
        if hit:
            excluded = not negate
    return excluded


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: ``${X}``, ``${X:-default}``, ``${X-default}``,
    ``${X:?error}``, ``${X?error}`` and ``$$``. A required variable that is missing
    raises ``KeyError`` with its error text, as ``docker compose config`` refuses."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-"):
            return arg
        return ""

    return _VAR.sub(one, value)


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit: section -> its (key, value) assignments, in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, eq, value = line.partition("=")
        if not eq or current is None:
            raise ValueError(f"{path}: not an assignment inside a section: {raw!r}")
        if value.rstrip().endswith("\\"):
            raise ValueError(f"{path}: continued lines are not used in this unit: {raw!r}")
        current.append((key.strip(), value.strip()))
    return sections


def env_file(path: Path) -> dict[str, str]:
    """A systemd ``EnvironmentFile=`` (also Docker's ``--env-file``): ``KEY=VALUE``
    lines, ``#`` comments, values optionally in quotes."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}: not a KEY=VALUE line: {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


_SPAN_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")


def seconds(span: str) -> float:
    """Seconds in a systemd time span (``45s``, ``1min 30s``, a bare ``45``) or a
    Compose duration (``1m30s``, ``500ms``)."""
    text = span.strip().lower()
    if not text:
        raise ValueError("an empty duration")
    total, pos = 0.0, 0
    while pos < len(text):
        m = _SPAN_PART.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the duration {span!r}")
        unit = m.group(2) or "s"
        if unit not in _SPAN_UNITS:
            raise ValueError(f"unknown unit {unit!r} in the duration {span!r}")
        total += float(m.group(1)) * _SPAN_UNITS[unit]
        pos = m.end()
    return total
