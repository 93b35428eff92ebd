"""The supervisor's duties keep running while signals arrive faster than its loop
turns (a steady stream of child exits, a tool signalling it in a loop): a loop
pass that read signals skipped every duty, and a duty pass stopped before its
first duty when a signal waited, so under such a stream no duty ran at all (the
lease backstop, the cron leader's lock, the status record, the reaper...).
Here SIGCHLD (a no-op for the parent, as a child's exit) is sent about 5,000
times a second for 8 s: the status record (written every 2 s) must still be renewed. Default
settings."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from redflow_mp.keys import Keys
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

FLOOD_S = 8.0
#: About 5,000 signals a second (a tool signalling in a loop; far more than child
#: exits ever come): each one a turn of the loop. Unpaced, the sender took a whole
#: core of the two, and the parent's own CPU went to the signals' delivery: the
#: status write then lagged by the machine's load, not by the schedule.
PACE_S = 0.0002


def _written_at(r: redis.Redis, key: str) -> float:
    top = r.zrange(key, -1, -1, withscores=True)
    return float(top[0][1]) if top else 0.0


def test_duties_run_while_signals_arrive_faster_than_the_loop(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "sigflood"
    sup = Supervisor(server.url, prefix, tmp_path / "sup.log", procs=1).start()
    r = redis.Redis.from_url(server.url)
    key = Keys(prefix).supervisors
    try:
        sup.wait_workers(1)
        wait_until(lambda: _written_at(r, key) > 0, 20, message="the first status record")
        began = time.monotonic()
        began_ms = time.time() * 1000
        sent = 0
        while time.monotonic() - began < FLOOD_S:
            os.kill(sup.pid, signal.SIGCHLD)
            sent += 1
            time.sleep(PACE_S)
        last = _written_at(r, key)
        # written every 2 s: one in the flood's last 4 s at least
        assert last > began_ms + (FLOOD_S - 4.0) * 1000, (
            f"status record last written {(last - began_ms) / 1000:.1f} s into an "
            f"{FLOOD_S:.0f} s flood of {sent} signals\n{sup.log()[-2000:]}"
        )
    finally:
        r.close()
        sup.stop()
