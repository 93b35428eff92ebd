"""A worker riding out Redis trouble logs it once, then at most one line every
10 s with the count and duration so far, and once when Redis answers again; each
line says what happened. It logged ``Redis unreachable while finishing run <id>
(...); retrying`` every 200 ms (300 lines a minute per child) for as long as
Redis refused writes, and "unreachable" although Redis answered "out of memory".
Default settings; Redis refuses writes (``maxmemory`` 1, set by the handler) for
:data:`TROUBLE_S` while one child finishes a run and the other idles."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from redflow_mp import RunFailedError
from tests.process.conftest import under_trouble, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

#: Past one repeat of the trouble lines (10 s).
TROUBLE_S = 12.0


def test_a_worker_riding_out_redis_trouble_logs_it_a_few_times_saying_what_it_is(
    server: RedisServer, tmp_path: Path
) -> None:
    with under_trouble(server, tmp_path, "trouble-log", procs=2) as t:
        sup, raw, client = t.sup, t.raw, t.client
        handle = client.run_by_name("ends-under-oom", str(tmp_path))
        wait_until((tmp_path / "bodies").exists, 30, message="the handler ran")
        time.sleep(TROUBLE_S)  # the trouble lasts: what the log says is the test
        raw.config_set("maxmemory", 0)
        with pytest.raises(RunFailedError):
            handle.result(timeout=60)
        finishing = [ln for ln in sup.log().splitlines() if f"finishing run {handle.id}" in ln]
        # before: 60 lines ("Redis unreachable while finishing run ...; retrying", 5 a second)
        assert 2 <= len(finishing) <= 4, "\n".join(finishing)
        wait_until(
            lambda: f"answers again while finishing run {handle.id}" in sup.log(),
            30,
            message="the line saying Redis answers again",
        )
        lines = sup.log().splitlines()
        assert "Redis out of memory while finishing run" in finishing[0], finishing[0]
        assert "Redis still out of memory while finishing run" in finishing[1], finishing[1]
        assert "unreachable" not in sup.log(), sup.log()
        # the idle child's claims, the lease keeper: a few lines each, saying what
        riding = [ln for ln in lines if "Redis " in ln and "retrying" in ln]
        assert len(riding) <= 12, "\n".join(riding)
