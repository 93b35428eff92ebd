"""A duty's pass over the shards blocks at most once per stalled server
(``supervisor/duties/shards.py``): after a shard's call timed out, the other
shards on that server are skipped for the rest of the tick (their error kept)
and the schedule arms its probe gate, so an outage's first duty blocks one
call's socket timeouts, not one per shard.

Before, with ``redis-server`` stopped (SIGSTOP) and ``--shards 8`` on it, the
first duty to run caught each shard's timeout and went on to the next: the
"Redis not answering" line came after 8 x 10 s (80.2 s measured; nothing within
120 s at 16), signals (TERM) waiting the whole time. Default settings; the
bound is the contract (one call's socket timeouts, against one call per shard)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from redflow_mp import create_client
from redflow_mp.transport import SOCKET_TIMEOUT
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.process.test_putback_stall import _stopped
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(400)]

#: What the parent logs once a duty found Redis out of reach.
DOWN = "Redis not answering while running duty"


@pytest.mark.parametrize("shards", [8, 16])
def test_an_outage_with_many_shards_blocks_the_duties_one_call_not_one_per_shard(
    server: RedisServer, tmp_path: Path, shards: int
) -> None:
    prefix = f"dshard{shards}"
    # One call on a stalled server: two socket timeouts for a command (its retry),
    # four for a pipeline (20.7 s measured: the key check's TYPE pipeline); and
    # a little for the loaded machine. Before: one such call per shard.
    bound = 6 * SOCKET_TIMEOUT
    client = create_client(server.url, prefix=prefix, default=False, shards=shards)
    sup = Supervisor(
        server.url, prefix, tmp_path / "sup.log", procs=1, args=["--shards", str(shards)]
    ).start()
    try:
        sup.wait_workers(1)
        try:
            flows.pid.run(None, client=client).result(timeout=60)  # ready, duties running
        finally:
            client.close()
        with _stopped(server) as resume:
            stopped = time.monotonic()
            while DOWN not in sup.log() and time.monotonic() - stopped < 3 * bound:
                time.sleep(0.05)
            late = time.monotonic() - stopped
            assert DOWN in sup.log() and late < bound, (
                f"the duties' down line came {late:.1f} s after Redis stopped "
                f"({shards} shards; logged: {DOWN in sup.log()}): a duty blocked on "
                f"each shard in turn\n{sup.log()[-3000:]}"
            )
            sent = time.monotonic()
            sup.send(signal.SIGTERM)
            wait_until(
                lambda: "received SIGTERM" in sup.log(),
                300,
                interval=0.05,
                message=f"term\n{sup.log()}",
            )
            took = time.monotonic() - sent
            assert took < bound, (
                f"the TERM was handled {took:.1f} s after it was sent during the outage "
                f"({shards} shards)\n{sup.log()[-3000:]}"
            )
            resume()
        assert sup.wait(120) == 0, sup.log()[-3000:]
    finally:
        sup.stop()
