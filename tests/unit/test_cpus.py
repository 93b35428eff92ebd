"""--procs 0: the CPUs this process may use (affinity, cgroup CPU quota)."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.cpus import cgroup_quota, usable_cpus


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_group_and_its_parents(tmp_path: Path) -> None:
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "max 100000\n")
    assert cgroup_quota(tmp_path, "0::/kubepods/pod1\n") is None
    # a limit on a parent group applies to the children's groups too
    _write(tmp_path / "kubepods" / "cpu.max", "250000 100000\n")
    assert cgroup_quota(tmp_path, "0::/kubepods/pod1\n") == 2.5
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    assert cgroup_quota(tmp_path, "0::/kubepods/pod1\n") == 1.5


def test_cgroup_v1_quota_and_unreadable_files(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    _write(cpu / "cpu.cfs_quota_us", "200000\n")
    _write(cpu / "cpu.cfs_period_us", "100000\n")
    line = "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n"
    assert cgroup_quota(tmp_path, line) == 2.0
    _write(cpu / "cpu.cfs_quota_us", "-1\n")  # no quota
    assert cgroup_quota(tmp_path, line) is None
    _write(cpu / "cpu.cfs_quota_us", "garbage\n")
    assert cgroup_quota(tmp_path, line) is None
    assert cgroup_quota(tmp_path / "missing", "") is None


def test_usable_cpus_never_exceeds_the_affinity_mask() -> None:
    n = usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
