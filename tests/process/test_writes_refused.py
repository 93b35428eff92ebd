"""A Redis that refuses writes for a while, under a supervisor with default
settings: a master demoted to a read-only replica (``READONLY``: a failover
without Sentinel, a URL that names a replica) or a server that cannot persist
(``MISCONF``: a failed RDB save, a full disk, with the default
``stop-writes-on-bgsave-error yes``). Nothing is applied while it refuses, so it
is transient like ``OOM``: no child crashes, no run is lost or executed twice,
and the runs finish once writes are accepted again."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import redis

from redflow_mp import Client, create_client
from tests.process import flows
from tests.process.conftest import Supervisor, run_supervisor_once, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process


def _status(client: Client, run_id: str) -> str | None:
    state = client.get_run(run_id)
    return None if state is None else str(state.status)


def _refuse_writes(admin: redis.Redis, server: RedisServer, how: str) -> None:
    if how == "readonly":
        # A replica of a master that does not exist: it keeps its data and
        # answers every write READONLY.
        admin.replicaof("127.0.0.1", 1)
    else:
        # A save that fails (its directory is gone, as on a full disk) with save
        # points configured: every write is answered MISCONF.
        shutil.rmtree(server.data_dir)
        admin.config_set("save", "3600 1")
        admin.bgsave()
        wait_until(
            lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err",
            10,
            message="the failed save",
        )
    with pytest.raises(redis.ResponseError):
        admin.set("probe", "1")


def _accept_writes(admin: redis.Redis, how: str) -> None:
    if how == "readonly":
        admin.replicaof("NO", "ONE")
    else:
        admin.config_set("save", "")
    admin.set("probe", "1")


@pytest.mark.parametrize("how", ["readonly", "misconf"])
def test_a_redis_refusing_writes_for_longer_than_a_lease_crashes_no_child_and_runs_each_once(
    server: RedisServer, tmp_path: Path, how: str
) -> None:
    prefix = f"refused-{how}"
    client = create_client(server.url, prefix=prefix, default=False)
    admin = server.client()
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=2).start()
    try:
        sup.wait_workers(2)
        handles = [flows.nap.run(0.3, client=client) for _ in range(20)]
        wait_until(
            lambda: _status(client, handles[0].id) in ("running", "succeeded"),
            10,
            message="the first run to start",
        )
        _refuse_writes(admin, server, how)
        time.sleep(6.5)  # longer than the default lease (5 s)
        _accept_writes(admin, how)
        for h in handles:
            h.result(timeout=60)
        log = sup.log()
        crashed = [line for line in log.splitlines() if " crashed" in line or "Traceback" in line]
        assert not crashed, f"children crashed while Redis refused writes: {crashed[:3]}\n{log}"
        requeued = {
            h.id: [(a.outcome, a.cause) for a in state.attempts]
            for h in handles
            if (state := client.get_run(h.id)) is not None
            and any(a.outcome != "succeeded" for a in state.attempts)
        }
        assert not requeued, f"runs executed more than once: {requeued}"
        assert sup.proc is not None and sup.proc.poll() is None, log[-3000:]
    finally:
        sup.stop()
        client.close()
        admin.close()


def _fill_to_maxmemory(admin: redis.Redis) -> None:
    """``maxmemory`` just above what the server holds, then filler keys until a
    write is refused (``OOM``, the default ``noeviction`` policy)."""
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + 200_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(100_000):
            admin.set(f"filler:{i}", "x" * 1000)


@pytest.mark.parametrize("keyspace", ["new", "existing"])
def test_a_supervisor_started_while_redis_is_out_of_memory_waits_for_memory(
    server: RedisServer, tmp_path: Path, keyspace: str
) -> None:
    """A supervisor started (or restarted by systemd) while Redis is at
    ``maxmemory`` ended in a Python traceback of redis-py's ``OutOfMemoryError``
    (the keyspace's shard count, or the registry sync), exit status 1: restarted
    in a loop of tracebacks. It now rides it out as a Redis still starting
    (saying so) and starts once memory is freed; past its patience it exits
    with one line that says Redis is out of memory."""
    prefix = f"oom-{keyspace}"
    admin = server.client()
    if keyspace == "existing":
        first = Supervisor(server.url, prefix, tmp_path / "first.log", procs=1).start()
        try:
            first.wait_workers(1)
        finally:
            first.stop()
    _fill_to_maxmemory(admin)
    gave_up = run_supervisor_once(
        "--app", "test", "--procs", "1", "--prefix", prefix, "--url", server.url,
        "--module", "tests.process.flows",
    )  # fmt: skip
    out = gave_up.stdout + gave_up.stderr
    assert gave_up.returncode == 1, out
    assert "Traceback" not in out, out
    assert "is out of memory (maxmemory reached)" in out.splitlines()[-1], out
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=2).start()
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        wait_until(lambda: "out of memory" in sup.log(), 30, message="the wait said")
        admin.config_set("maxmemory", 0)
        sup.wait_workers(2)
        assert flows.pid.run(None, client=client).result(timeout=30) > 0
        assert "Traceback" not in sup.log(), sup.log()
    finally:
        sup.stop()
        client.close()


def test_hup_and_term_while_redis_is_out_of_memory_keep_the_supervisor_in_charge(
    server: RedisServer, tmp_path: Path
) -> None:
    """A rolling restart (HUP) or a drain (TERM) while Redis is at ``maxmemory``:
    the parent wakes its idle children by ringing their queues' bells, an
    ``LPUSH`` Redis refuses (``OOM``), and that raw redis-py error ended the
    parent in a traceback (exit status 1, its children left to notice it gone)."""
    prefix = "oom-signals"
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=2).start()
    try:
        old = {w.pid for w in sup.wait_workers(2)}
        _fill_to_maxmemory(server.client())
        assert sup.proc is not None
        proc = sup.proc
        sup.send(signal.SIGHUP)
        wait_until(
            lambda: (
                proc.poll() is not None
                or (not old & {w.pid for w in sup.workers()} and len(sup.workers()) == 2)
            ),
            60,
            message="the rolling restart to replace both children",
        )
        assert proc.poll() is None, sup.log()[-3000:]
        sup.send(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0, sup.log()
        assert "Traceback" not in sup.log(), sup.log()
    finally:
        sup.stop()
