"""Fixtures of the cluster / replication tests: real servers started here."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer
from tests.servers import master_and_replica


@pytest.fixture()
def stalled_replica() -> Iterator[RedisServer]:
    """A master whose one replica is stopped (SIGSTOP) once its link is up: a
    durable write's ``WAIT`` answers 0 after ``durability_wait_ms``."""
    with master_and_replica() as (master, replica):
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        yield master
