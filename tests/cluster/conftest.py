"""Fixtures of the cluster / replication tests: real servers started here."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.faults.harness import wait_for
from tests.redis_server import RedisServer


@pytest.fixture()
def stalled_replica() -> Iterator[RedisServer]:
    """A master whose one replica is stopped (SIGSTOP) once its link is up: a
    durable write's ``WAIT`` answers 0 after ``durability_wait_ms``."""
    master = RedisServer().start()
    replica = RedisServer(["--replicaof", "127.0.0.1", str(master.port)]).start()
    assert replica.proc is not None
    r = replica.client()
    try:
        wait_for(lambda: r.info("replication")["master_link_status"] == "up", 20, "the link")
        r.close()
        os.kill(replica.proc.pid, signal.SIGSTOP)
        yield master
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
        replica.cleanup()
        master.cleanup()
