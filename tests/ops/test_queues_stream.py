"""``redflow queues`` with many known queues (one ``queue_override`` per
customer): printed as it is read, holding one chunk of queues' depths at a time.
It read every queue's depths (three commands each, one pipeline) and built the
whole table before its first line: 100,000 known queues took 230 MB and 11 s
before anything was printed. Measured by commands: at each printed line, how many
queues were read (``ZCARD`` of their ready sets) and not printed yet."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, admin, define_workflow
from redflow_supervisor.ops.commands import cmd_queues
from redflow_supervisor.ops.session import Session

pytestmark = pytest.mark.timeout(120)

QUEUES = 5000


def _noop(ctx: Context[Any]) -> None:
    return None


def _zcards(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_zcard", {}).get("calls", 0))


@pytest.mark.parametrize("as_json", [True, False])
def test_many_queues_are_printed_a_chunk_at_a_time(
    raw: redis.Redis, client: Client, registry: Registry, as_json: bool
) -> None:
    wf = define_workflow("per-tenant", registry=registry)(_noop)
    names = [f"tenant-{i:05d}" for i in range(QUEUES)]
    for name in names[:3]:  # a few queues hold runs; the rest are only known
        wf.run({"t": name}, queue_override=name, client=client)
    raw.sadd(client.keys.queues, *names)
    printed: list[str] = []
    unprinted: list[int] = []
    raw.config_resetstat()

    def out(line: str) -> None:
        if len(printed) % 100 == 0:
            shown = max(0, len(printed) - 1)  # the first line: "[" or the header
            unprinted.append(_zcards(raw) // 2 - shown)  # two ZCARDs a queue
        printed.append(line)

    session = Session(client=client, url="redis://x", prefix="x", json=as_json, out=out)
    assert cmd_queues(session, argparse.Namespace()) == 0
    assert max(unprinted) <= 2000, unprinted[:5]  # a chunk (1,000) and the next
    want = admin.queue_stats(client)
    if as_json:
        listed: list[dict[str, Any]] = json.loads("\n".join(printed))
        assert [q["name"] for q in listed] == names
        assert listed[0] == {
            "name": "tenant-00000",
            "ready": 1,
            "processing": 0,
            "scheduled": 0,
            "oldest_ready_age_ms": listed[0]["oldest_ready_age_ms"],
        }
        assert [q["ready"] for q in listed] == [q.ready for q in want]
    else:
        assert len(printed) == QUEUES + 1
        assert printed[0].split() == [
            "QUEUE",
            "READY",
            "PROCESSING",
            "SCHEDULED",
            "OLDEST",
            "WAITING",
        ]
        assert printed[1].split()[:4] == ["tenant-00000", "1", "0", "0"]
        assert printed[-1].split() == ["tenant-04999", "0", "0", "0", "-"]


def test_no_queues_says_so(client: Client) -> None:
    printed: list[str] = []
    session = Session(client=client, url="redis://x", prefix="x", json=False, out=printed.append)
    assert cmd_queues(session, argparse.Namespace()) == 0
    assert printed == ["no queues"]
    printed.clear()
    session = Session(client=client, url="redis://x", prefix="x", json=True, out=printed.append)
    assert cmd_queues(session, argparse.Namespace()) == 0
    assert json.loads("\n".join(printed)) == []
