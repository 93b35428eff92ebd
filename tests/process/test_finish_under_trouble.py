"""A run whose handler has ended (failed, here, with an ``on_failure`` hook) is
written by the worker while Redis refuses writes (out of memory): the write rides
the trouble out, and the supervisor must not take the run for one whose handler
overran its ``timeout``. It did: the finish of a failed run with a hook (as of a
canceled or put-back one) is written before the run is marked as finishing on
the board, so past the run's timeout the supervisor stopped the child
("timeout reached"), wrote a ``RunTimeoutError`` in the run's name (or, Redis
still refusing, left it to the reaper, which put it back: its handler ran
again). Default settings; the workflow's timeout is 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from redflow_mp import RunFailedError
from tests.process.conftest import under_trouble, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

#: Past the workflow's timeout (2 s) and the supervisor's kill_grace (5 s): when
#: the supervisor would have stopped the child, it has by then.
TROUBLE_S = 10.0


def test_a_run_whose_handler_ended_is_not_timed_out_while_its_finish_rides_out_trouble(
    server: RedisServer, tmp_path: Path
) -> None:
    with under_trouble(server, tmp_path, "finish-trouble", procs=1) as t:
        sup, raw, client = t.sup, t.raw, t.client
        handle = client.run_by_name("ends-under-oom", str(tmp_path))
        bodies = tmp_path / "bodies"
        wait_until(bodies.exists, 30, message="the handler ran")
        began = time.monotonic()
        wait_until(
            lambda: "timeout reached" in sup.log() or time.monotonic() - began > TROUBLE_S,
            TROUBLE_S + 5,
            interval=0.2,
            message="the trouble to last",
        )
        raw.config_set("maxmemory", 0)
        with pytest.raises(RunFailedError) as failed:
            handle.result(timeout=60)
        # before: "timeout reached" (the child stopped for a handler that had ended)
        assert "timeout reached" not in sup.log(), sup.log()
        assert failed.value.error is not None
        assert failed.value.error.type == "ValueError"
        hooks = tmp_path / "hooks"
        # The hook creates the file, then writes its line: read the line, not the
        # file's first moment (it was read empty once, under load).
        wait_until(
            lambda: hooks.exists() and hooks.read_text().endswith("\n"),
            30,
            message="on_failure",
        )
        # before: 2 (put back by the reaper, executed again)
        assert bodies.read_text().count("ran") == 1, sup.log()
        assert hooks.read_text() == "ValueError\n", sup.log()
