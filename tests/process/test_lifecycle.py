"""Supervisor lifecycle with real signals: drain, rolling restart, scaling,
recycling, boot failures, FATAL, and process titles."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from redflow_supervisor.status import list_supervisors
from tests.process import flows
from tests.process.conftest import Supervisor, run_supervisor_once, wait_until

pytestmark = pytest.mark.process


def test_term_drains_a_running_run_to_success_and_exits_zero(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    handle = flows.sleepy.run(1.0, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert handle.result(timeout=5)["slept"] == 1.0
    assert "draining" in sup.log()


def test_graceful_timeout_puts_the_run_back_and_exits_zero(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, args=["--graceful-timeout", "0.5"])
    sup.wait_workers(1)
    handle = flows.sleepy.run(30, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    state = client.get_run(handle.id)
    assert state is not None and state.status == "queued"
    assert raw.zrange(client.keys.q_ready("p"), 0, -1) == [handle.id.encode()]
    assert not raw.exists(client.keys.leases)
    assert state.crash_count == 0


def test_second_term_is_a_fast_stop_with_runs_put_back(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1)
    sup.wait_workers(1)
    handle = flows.sleepy.run(30, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    sup.send(signal.SIGTERM)
    time.sleep(0.2)  # let the first TERM start the drain before the second arrives
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    state = client.get_run(handle.id)
    assert state is not None and state.status == "queued" and state.crash_count == 0


def test_hup_replaces_every_child_and_picks_up_new_code(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    module = tmp_path / "hupflows.py"
    template = (
        "from redflow_mp import define_workflow\n"
        "@define_workflow('version', queue='hup', max_concurrency=10)\n"
        "def version(ctx):\n    return {v}\n"
    )
    module.write_text(template.format(v=1))
    sup = supervisor(procs=2, modules=[str(module)])
    before = {p.pid for p in sup.wait_workers(2)}
    wait_until(lambda: client.get_workflow_meta("version"), 10, message="registry sync")
    assert client.run_by_name("version").result(timeout=20) == 1
    module.write_text(template.format(v=2))
    sup.send(signal.SIGHUP)
    wait_until(
        lambda: len(sup.workers()) == 2 and not ({p.pid for p in sup.workers()} & before),
        30,
        message="every child replaced",
    )
    assert client.run_by_name("version").result(timeout=20) == 2


def test_hup_is_not_a_restart_but_a_dead_child_is(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """Issue 16 #2: the RESTARTS of `redflow supervisors` counts children that died,
    not the ones a HUP replaced; and the log counts "1 child", not "1 children"."""
    sup = supervisor(procs=1)
    (first,) = sup.wait_workers(1)

    def restarts(pid: int | None = None) -> int | None:
        records = list_supervisors(client)
        if len(records) != 1 or len(records[0].children) != 1:
            return None
        child = records[0].children[0]
        return child.restarts if pid is None or child.pid == pid else None

    wait_until(lambda: restarts(first.pid) is not None, 20, message="the status record")
    sup.send(signal.SIGHUP)
    (second,) = wait_until(
        lambda: [p for p in sup.workers() if p.pid != first.pid] if len(sup.workers()) == 1 else [],
        30,
        message="the child replaced",
    )
    wait_until(lambda: restarts(second.pid) is not None, 20, message="the new child's status")
    assert restarts(second.pid) == 0
    assert "rolling restart: generation 1 replaces 1 child" in sup.log()
    second.send_signal(signal.SIGKILL)
    (third,) = wait_until(
        lambda: [p for p in sup.workers() if p.pid not in (first.pid, second.pid)],
        30,
        message="the killed child restarted",
    )
    assert wait_until(lambda: restarts(third.pid), 20, message="the restart counted") == 1
    assert "1 children" not in sup.log()


def test_ttin_and_ttou_change_the_number_of_children(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    sup.send(signal.SIGTTIN)
    sup.wait_workers(3)
    sup.send(signal.SIGTTOU)
    sup.wait_workers(2)
    sup.send(signal.SIGTTOU)
    sup.wait_workers(1)
    assert isinstance(flows.pid.run(None, client=client).result(timeout=20), int)


def test_children_are_recycled_after_max_runs(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=1, args=["--max-runs-per-child", "2"])
    sup.wait_workers(1)
    pids = [flows.pid.run(None, client=client).result(timeout=20) for _ in range(6)]
    counts = {p: pids.count(p) for p in pids}
    assert max(counts.values()) <= 2
    assert len(counts) >= 3
    assert "recycled" in sup.log()


def test_children_are_recycled_above_max_memory(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    sup = supervisor(procs=1, args=["--max-memory-per-child", "120"])
    sup.wait_workers(1)
    fat = flows.hog.run(200, client=client).result(timeout=20)
    wait_until(
        lambda: [p.pid for p in sup.workers()] not in ([], [fat]),
        20,
        message="the fat child to be replaced",
    )
    assert flows.pid.run(None, client=client).result(timeout=20) != fat
    assert "max_memory_per_child" in sup.log()


def test_bad_module_is_a_boot_failure_with_the_error_on_stderr(redis_url: str) -> None:
    proc = run_supervisor_once(
        "--app", "x", "--module", "tests.process.no_such_module", "--url", redis_url
    )
    assert proc.returncode != 0
    assert "No module named 'tests.process.no_such_module'" in proc.stderr
    # at once, in the parent: not after its children failed to start with backoffs
    # (an event, where "under 10 s" was a bound a loaded machine could miss)
    assert "failed to start" not in proc.stderr, proc.stderr
    assert "supervisor starting" not in proc.stderr, proc.stderr


def test_missing_app_is_refused(redis_url: str) -> None:
    proc = run_supervisor_once("--app", " ", "--module", "tests.process.flows", "--url", redis_url)
    assert proc.returncode == 2
    assert "--app is required" in proc.stderr


def test_crash_looping_children_go_fatal_and_the_supervisor_exits_non_zero(
    supervisor: Callable[..., Supervisor],
) -> None:
    sup = supervisor(
        procs=1,
        modules=["tests.process.flows_bootfail"],
        args=["--restart-backoff", "0.05", "--max-start-failures", "3"],
    )
    assert sup.wait(timeout=30) == 1
    assert "FATAL" in sup.log()


def test_processes_are_labelled(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, app="labels")
    workers = sup.wait_workers(2)
    titles = sorted(" ".join(p.cmdline()).strip() for p in workers)
    assert titles == ["redflow-supervisor[labels] worker 1", "redflow-supervisor[labels] worker 2"]
    import psutil

    assert (
        " ".join(psutil.Process(sup.pid).cmdline()).strip() == "redflow-supervisor[labels] master"
    )
    handle = flows.sleepy.run(1.0, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:sleepy-started"), 20, message="run start")
    busy = [" ".join(p.cmdline()).strip() for p in sup.workers()]
    assert any(t.endswith(f"running sleepy {handle.id}") for t in busy), busy
    handle.result(timeout=20)
    # idle again (the claim after the run found nothing): the title says so
    wait_until(
        lambda: sorted(" ".join(p.cmdline()).strip() for p in sup.workers()) == titles,
        10,
        message="titles back to idle",
    )


def test_a_short_run_retention_removes_finished_runs_soon_after(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, args=["--run-retention", "1"])
    sup.wait_workers(1)
    handle = flows.pid.run(None, client=client)
    assert isinstance(handle.result(timeout=20), int)
    assert raw.exists(client.keys.run(handle.id))
    # The sweep follows the retention (a tenth of it, at least every 0.2 s),
    # so a 1 s retention does not wait for a 30 s sweep period (the deadline; about
    # 1.2 s on an idle machine, not bounded tighter: a loaded one stretches it).
    wait_until(lambda: not raw.exists(client.keys.run(handle.id)), 20, message="retention")
    assert client.get_run(handle.id) is None
    assert raw.zscore(client.keys.runs_status("succeeded"), handle.id) is None
    assert raw.zscore(client.keys.runs_created, handle.id) is None


def test_a_v1_keyspace_is_refused_until_migrated(redis_url: str, prefix: str) -> None:
    """A served queue whose ready key is a v1 LIST: the supervisor names the fix."""
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.lpush("{" + prefix + "}:q:p:ready", "SOME-RUN")
        proc = run_supervisor_once(
            "--app", "x", "--module", "tests.process.flows", "--url", redis_url,
            "--prefix", prefix,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "redflow migrate" in proc.stderr
        assert raw.type("{" + prefix + "}:q:p:ready") == b"list"  # untouched
    finally:
        raw.close()


def test_an_evicting_redis_is_warned_about_at_start(
    supervisor: Callable[..., Supervisor], raw: redis.Redis
) -> None:
    """With a maxmemory-policy other than noeviction (allkeys-lru, or the
    volatile-lru that managed services default to), Redis at its memory limit
    deletes run hashes, idempotency keys and the cron lock: runs are lost or
    run twice. The supervisor said nothing about it."""
    before = str(raw.config_get("maxmemory-policy")["maxmemory-policy"])
    raw.config_set("maxmemory-policy", "volatile-lru")
    try:
        sup = supervisor(procs=1)
        sup.wait_workers(1)
        wait_until(lambda: "maxmemory-policy" in sup.log(), 10, message="the warning")
        assert "volatile-lru" in sup.log() and "noeviction" in sup.log()
    finally:
        raw.config_set("maxmemory-policy", before)


def test_a_noeviction_redis_gets_no_eviction_warning(
    supervisor: Callable[..., Supervisor], raw: redis.Redis
) -> None:
    assert raw.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    sup = supervisor(procs=1)
    sup.wait_workers(1)
    assert "maxmemory-policy" not in sup.log()
