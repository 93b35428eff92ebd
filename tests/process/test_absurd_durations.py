"""Durations nobody means (NaN, infinity, 1e308 s, a string of 400 nines, 1e20 ms): the
supervisor refuses them at start with exit status 2, naming the setting, like any
other bad value. Before, they were taken (NaN and infinity passed the ``at
least 0`` bound, and nothing bounded a duration above): a TERM then armed the
drain's timer with them (``setitimer``) and the parent died of the traceback
(``OverflowError: timestamp out of range for platform time_t``, ``ValueError:
Invalid value NaN``) with exit status 1 instead of draining.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

CASES = [
    ("toml", "graceful_timeout = nan", "graceful_timeout"),
    ("toml", "graceful_timeout = 1e308", "graceful_timeout"),
    ("toml", "kill_grace = inf", "kill_grace"),
    ("env", "REDFLOW_GRACEFUL_TIMEOUT=" + "9" * 400, "graceful_timeout"),
    ("flag", "--graceful-timeout=9999999999d", "graceful_timeout"),
    # taken, then: the lock's SET PX failed at every tick (no cron ever fired), the
    # reaper ticked once (the runs of dead workers were never put back)
    ("toml", "cron_lock_ttl_ms = 100000000000000000000", "cron_lock_ttl_ms"),
    ("env", "REDFLOW_REAPER_INTERVAL_MS=100000000000000000000", "reaper_interval_ms"),
]


@pytest.mark.parametrize(("where", "value", "name"), CASES, ids=[c[1][:30] for c in CASES])
def test_an_absurd_duration_is_refused_at_start_not_by_a_crash_at_term(
    supervisor: Callable[..., Supervisor], tmp_path: Path, where: str, value: str, name: str
) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if where == "toml":
        conf = tmp_path / "absurd.toml"
        conf.write_text(value + "\n")
        args = ["--config", str(conf)]
    elif where == "env":
        key, _, text = value.partition("=")
        env = {key: text}
    else:
        args = [value]
    sup = supervisor(procs=1, args=args, env=env)
    try:
        status = sup.wait(timeout=20)
    except subprocess.TimeoutExpired:  # it took the value: what a TERM then does
        sup.wait_workers(1)
        sup.send(signal.SIGTERM)
        status = sup.wait(timeout=30)
    log = sup.log()
    assert status == 2, log
    assert f"for setting {name}" in log and "at most" in log, log
    assert "Traceback" not in log, log
