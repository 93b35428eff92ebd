"""The dashboard's ``/queues`` page and ``redflow queues`` at 200,000 running runs:
each read ``runs:status:running`` whole (one ``ZRANGE 0 -1``) and the queue of
every running run (one ``HGET`` each), about 220 ms of Redis CPU per view, at
every refresh of the page by anyone signed in. The page now reads a page of the
index per refresh (its pass goes on at the next one; the counts are those of the
last whole pass, and the page says so); the command reads it whole, a page a
round trip, exact."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

from redflow_mp import Client, admin
from redflow_mp.depths import RUNNING_PAGE
from redflow_supervisor.ops.commands import cmd_queues
from redflow_supervisor.ops.dashboard import make_app
from redflow_supervisor.ops.session import Session
from tests.helpers import command_counts

pytestmark = pytest.mark.timeout(300)

RUNNING = 200_000
QUEUES = 50
BATCH = 5_000  # (a call of 20,000 ran past a loaded machine's socket timeout)

# A batch of running runs in one call: their records (status, queue) and their
# entries in runs:status:running, as the claim leaves them.
_MAKE = """
local prefix, first, count, queues = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
for i = first, first + count - 1 do
  local id = string.format('run-%07d', i)
  redis.call('HSET', prefix .. 'run:' .. id, 'status', 'running',
    'queue', 'q' .. (i % queues))
  redis.call('ZADD', KEYS[1], 1000000 + i, id)
end
return count
"""


def _running(raw: Any, client: Client) -> dict[str, int]:
    """RUNNING running runs over QUEUES queues (all known); returns the runs per queue."""
    k = client.keys
    prefix = k.run("x")[: -len("run:x")]
    index = k.runs_status("running")
    for first in range(0, RUNNING, BATCH):
        raw.eval(_MAKE, 1, index, prefix, first, BATCH, QUEUES)
    raw.sadd(k.queues, *[f"q{i}" for i in range(QUEUES)])
    return {f"q{i}": RUNNING // QUEUES for i in range(QUEUES)}


def _get(app: Any, path: str) -> str:
    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        assert status.startswith("200"), status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1",
    }
    return b"".join(app(environ, start_response)).decode()


def test_a_refresh_of_the_queues_page_reads_a_page_of_the_running_runs(
    raw: Any, client: Client
) -> None:
    want = _running(raw, client)
    app = make_app(client, read_only=True)
    body: list[str] = []
    counts = command_counts(raw, lambda: body.append(_get(app, "/queues")))
    # Before: 200,000 HGETs (one per running run) and a ZRANGE of the whole index.
    assert counts.get("hget", 0) <= RUNNING_PAGE + QUEUES, counts
    assert counts.get("zrange", 0) <= QUEUES, counts  # the heads of the ready sets only
    assert "counted so far, a lower bound" in body[0]
    # Refreshes go on with the pass, each as bounded; once it is whole the page
    # shows its counts and says so.
    for _ in range(RUNNING // RUNNING_PAGE):
        counts = command_counts(raw, lambda: body.append(_get(app, "/queues")))
        assert counts.get("hget", 0) <= RUNNING_PAGE + QUEUES, counts
    memo = admin.remembered_queues(client)
    assert memo.showing() == admin.LAST_PASS
    assert "as of the last whole pass" in body[-1]
    got = {q.name: q.processing for q in admin.queue_stats(client)}
    assert got == want
    # Warm: the queues of runs seen running are not read again.
    counts = command_counts(raw, lambda: _get(app, "/queues"))
    assert counts.get("hget", 0) <= QUEUES, counts


def test_redflow_queues_reads_the_running_runs_a_page_a_call_and_counts_them_all(
    raw: Any, client: Client
) -> None:
    want = _running(raw, client)
    printed: list[str] = []
    session = Session(client=client, url="redis://x", prefix="x", json=False, out=printed.append)

    def command() -> None:
        assert cmd_queues(session, argparse.Namespace()) == 0

    counts = command_counts(raw, command)
    # Before: one ZRANGE of the whole index (200,000 ids in one reply).
    assert counts.get("zrange", 0) <= QUEUES, counts  # the heads of the ready sets only
    assert counts.get("zrangebyscore", 0) >= RUNNING // RUNNING_PAGE, counts
    shown = {line.split()[0]: int(line.split()[2]) for line in printed[1:]}
    assert shown == want
