"""A Redis URL with its password given where another setting belongs (a shifted
environment variable, a flag's value, a list in the config file) is refused
with the setting named, and the password never printed: the refusal goes to
stderr, which a service manager keeps in its journal for every user of the logs
to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.conftest import ROOT, clean_env

pytestmark = pytest.mark.process

PASSWORD = "pw-Never-Printed-77"
URL = f"redis://app:{PASSWORD}@127.0.0.1:1/0"
SUPERVISOR = [sys.executable, "-m", "redflow_supervisor", "--app", "x", "--procs", "1"]
OPS = [sys.executable, "-m", "redflow_supervisor.ops", "--url", "redis://127.0.0.1:1/0"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, env=clean_env(env), capture_output=True, text=True, timeout=60, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # a usage error: nothing was tried
    assert "Traceback" not in out, out
    return out


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (SUPERVISOR, {"REDFLOW_PROCS": URL}, "procs"),
        (SUPERVISOR, {"REDFLOW_LEASE_MS": URL}, "lease_ms"),
        ([*SUPERVISOR, "--durability", URL], None, "durability"),
        ([*SUPERVISOR, "--log-level", URL], None, "log_level"),
        ([*OPS, "--shards", URL, "queues"], None, "shards"),
        ([*OPS, "queues"], {"REDFLOW_SHARDS": URL}, "shards"),
        ([*OPS, "runs", "list", "--limit", URL], None, "limit"),
    ],
    ids=["env", "env-ms", "flag", "flag-choice", "ops-flag", "ops-env", "ops-subcommand"],
)
def test_a_url_given_for_another_setting_is_refused_without_its_password(
    argv: list[str], env: dict[str, str] | None, named: str
) -> None:
    out = _run(argv, env)
    assert named in out, out
    assert PASSWORD not in out, out
    assert "app:***@127.0.0.1:1/0" in out, out  # the rest shown: the slip is findable


def test_a_url_of_the_wrong_type_in_the_config_file_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    config = tmp_path / "redflow.toml"
    config.write_text(f'url = ["{URL}"]\n', encoding="utf-8")
    out = _run([*SUPERVISOR, "--config", str(config)])
    assert "setting url" in out, out
    assert PASSWORD not in out, out
