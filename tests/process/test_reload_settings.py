"""SIGHUP re-reads the config file. Settings the parent uses from its start
(the Redis URL, the prefix, the shard count, the connection's options, procs,
the lease, the metrics port...) used to reach only the new children: a reload
after the config's ``prefix`` (or ``url``) was edited put the children on the
new keyspace while the parent's reaper, promoter, cron and lease backstop
stayed on the old one (nobody served the old prefix's runs, nobody promoted the
new one's). Such a change now waits for a restart: the reload keeps their
running values, and says so; the other settings apply."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from redflow_mp import Client, create_client
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def test_a_reload_keeps_the_running_prefix_and_says_a_restart_applies_it(
    supervisor: Callable[..., Supervisor],
    client: Client,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    conf = tmp_path / "redflow.toml"
    conf.write_text(f'prefix = "{prefix}"\ngraceful_timeout = 30\n')
    sup = supervisor(procs=2, args=["--config", str(conf)])
    at = sup.cmd.index("--prefix")
    del sup.cmd[at : at + 2]  # the prefix comes from the config file only
    sup.stop()
    sup.start()
    before = {p.pid for p in sup.wait_workers(2)}
    assert flows.pid.run(None, client=client).result(timeout=30)
    conf.write_text(f'prefix = "{prefix}-moved"\ngraceful_timeout = 20\n')
    sup.send(signal.SIGHUP)
    wait_until(
        lambda: len(sup.workers()) == 2 and not ({p.pid for p in sup.workers()} & before),
        30,
        message="the rolling restart",
    )
    log = sup.log()
    assert "prefix" in log and "restart" in log and "keeping" in log, log
    # The new children still serve the prefix the parent maintains: a delayed run
    # (the parent's promoter) and a plain one both finish there.
    delayed = flows.pid.run(None, client=client, run_at=client.server_time_ms() / 1000 + 1)
    assert flows.pid.run(None, client=client).result(timeout=30)
    assert delayed.result(timeout=30)
    moved = create_client(redis_url, prefix=f"{prefix}-moved", default=False)
    try:
        assert moved.list_workflows() == [], "the reload synced the registry to the new prefix"
    finally:
        moved.close()
