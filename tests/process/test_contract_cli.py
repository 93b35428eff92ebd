"""Acceptance checks of SPEC §5 and issue 3's command line, driven as written there:
``redflow-supervisor --app etl --procs N --module jobs [--queues a,b] [--url ...]
[--prefix ...] [--config ...]`` through the console script, settings from defaults <
TOML (``REDFLOW_CONFIG``) < ``REDFLOW_*`` < flags, cron entries with a timezone and
a seconds field, ``cronId`` on the runs a tick creates, and TERM's exit status 0."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from redflow_mp import Client, RunState, RunStatus
from tests.process import flows
from tests.process.conftest import ROOT, Supervisor, clean_env, wait_until

pytestmark = pytest.mark.timeout(120)

SCRIPT = str(Path(sys.executable).with_name("redflow-supervisor"))


@pytest.fixture()
def launched() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        for child in psutil.Process().children(recursive=True):
            try:
                if "redflow-supervisor[etl]" in " ".join(child.cmdline()):
                    child.kill()
            except psutil.Error:
                continue


def _titles(pid: int) -> list[str]:
    out = []
    for p in [psutil.Process(pid), *psutil.Process(pid).children()]:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return out


def test_the_spec_command_line_with_config_env_and_flags(
    redis_url: str,
    prefix: str,
    client: Client,
    raw: redis.Redis,
    tmp_path: Path,
    launched: list[subprocess.Popen[bytes]],
) -> None:
    config = tmp_path / "redflow.toml"
    config.write_text('procs = 1\nqueues = ["ca", "cb"]\nprefix = "not-this-one"\n')
    env = clean_env({"REDFLOW_CONFIG": str(config), "REDFLOW_PROCS": "3", "REDFLOW_PREFIX": prefix})
    log = open(tmp_path / "sup.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            SCRIPT,
            "--app",
            "etl",
            "--procs",
            "2",
            "--module",
            "tests.process.flows_contract",
            "--module",
            "tests.process.flows_contract2",
            "--url",
            redis_url,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    launched.append(proc)

    def logged() -> str:
        return (tmp_path / "sup.log").read_text(errors="replace")

    def workers() -> list[str]:
        return [t for t in _titles(proc.pid) if " worker " in t]

    # flags beat the environment, which beats the TOML file: 2 children
    wait_until(lambda: len(workers()) == 2, timeout=30, message=f"2 workers\n{logged()}")
    titles = _titles(proc.pid)
    assert titles[0].startswith("redflow-supervisor[etl] master"), titles
    assert all(t.startswith("redflow-supervisor[etl] worker ") for t in workers()), titles

    # both modules were imported and synced before children ran, under app "etl"
    metas = {m.name: m for m in client.list_workflows()}
    assert {"c-ticker", "c-work", "c-unserved", "c-second"} <= set(metas), metas
    assert metas["c-work"].app == "etl"
    cron = metas["c-ticker"].cron
    assert [(c.expression, c.timezone) for c in cron] == [("* * * * * *", "Europe/Berlin")]

    work = client.run_by_name("c-work", 21)
    second = client.run_by_name("c-second", "x")
    unserved = client.run_by_name("c-unserved")
    assert work.result(timeout=60) == 42
    assert second.result(timeout=60) == "second:x"

    # a cron tick's run carries cronId (a 6-field expression fires every second)
    def ticked() -> list[RunState]:
        return [r for r in client.list_runs(workflow="c-ticker") if r.status is RunStatus.SUCCEEDED]

    runs = wait_until(ticked, timeout=60, message=f"a cron run\n{logged()}")
    run = runs[0]
    assert run.cron_id == metas["c-ticker"].cron_ids[0]
    assert run.output == {"tick": 1}

    # the TOML's queues apply: a run on another queue is never claimed
    state = unserved.state()
    assert state is not None and state.status is RunStatus.QUEUED

    # SPEC §3: the leader's lock:cron is a STR with a PX expiry within cron_lock_ttl_ms
    lock = "{" + prefix + "}:lock:cron"
    assert raw.type(lock) == b"string"
    assert 0 < raw.pttl(lock) <= 10_000

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, logged()
    log.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_int_or_quit_is_a_fast_stop_with_the_run_put_back(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, sig: int
) -> None:
    """SPEC §5: INT/QUIT = fast stop, runs put back (a handler that would run for an
    hour is not waited for; its run is queued again, not failed)."""
    sup = supervisor(procs=1)
    sup.wait_workers(1)
    handle = flows.sleepy.run(3600, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 30, message="run start")
    sup.send(sig)
    sup.wait(timeout=60)  # a hang guard: the handler alone would take an hour
    state = handle.state()
    assert state is not None and state.status is RunStatus.QUEUED, state
    assert state.finished_at is None and state.error is None
