"""How many CPUs this process may use: the default of ``--procs 0``.

``os.cpu_count()`` counts the host's CPUs. A supervisor pinned to fewer
(``taskset``, ``cpuset``, a Kubernetes static CPU policy) or given a CPU quota
(a container's ``--cpus 2``, a pod's CPU limit: cgroup ``cpu.max`` or
``cpu.cfs_quota_us``) would otherwise fork a child per host CPU: 64 CPU-bound
children time-sliced on 2 CPUs of quota, each with its own memory. The answer is
the smallest of the CPUs in the affinity mask and the quota rounded up, at
least 1. Pure reads of ``/proc`` and ``/sys``; anything unreadable counts as
"no limit".
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cgroup_quota", "usable_cpus"]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_dirs(root: Path, proc_cgroup: str | None) -> list[Path]:
    """The cgroup directories of this process and of its ancestors, innermost
    first (a limit set on a parent group applies too), from /proc/self/cgroup."""
    dirs: list[Path] = []
    for line in (proc_cgroup or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        # v2: "0::/path"; v1: "N:cpu,cpuacct:/path" (mounted at cpu or cpu,cpuacct)
        if controllers == "":
            base = [root]
        elif "cpu" in controllers.split(","):
            base = [root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
        else:
            continue
        for b in base:
            if not b.is_dir():
                continue
            path = b / rel if rel else b
            while True:
                dirs.append(path)
                if path == b:
                    break
                path = path.parent
    if not dirs:
        dirs = [root, root / "cpu", root / "cpu,cpuacct"]
    return dirs


def cgroup_quota(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None
) -> float | None:
    """The CPU quota of this process's cgroup (and its ancestors) in CPUs, the
    smallest one set, or None when none is set or none could be read."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    best: float | None = None
    for d in _cgroup_dirs(root, proc_cgroup):
        quota: float | None = None
        v2 = _read(d / "cpu.max")  # "max 100000" | "200000 100000"
        if v2 is not None:
            fields = v2.split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    quota = int(fields[0]) / int(fields[1])
                except (ValueError, ZeroDivisionError):
                    quota = None
        else:
            q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            try:
                if q is not None and p is not None and int(q) > 0 and int(p) > 0:
                    quota = int(q) / int(p)
            except ValueError:
                quota = None
        if quota is not None and quota > 0 and (best is None or quota < best):
            best = quota
    return best


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU
    quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, math.ceil(quota - 1e-9))
    return max(1, n)
