"""A neighbour's huge value in our keys is named (cut), not printed or logged whole.

``meta`` records the shard count (``shards``), a migration under way
(``reshardTo``) and each shard's ``prefix`` and ``shard`` index. A value there
that is none of these (written by hand or by another program) is refused with a
``ShardsMismatchError`` that names the field; the message used to hold the
value whole, twice for ``reshardTo``: a 1 MB value made a 1-2 MB error, printed
by every ``redflow`` command, every ``create_client`` and every supervisor
start (and logged by whatever caught it)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from redflow_mp import Client, ShardsMismatchError, create_client
from redflow_mp.ids import new_token
from redflow_mp.maintenance import StallGuard, reap_expired
from redflow_mp.shardmeta import check_shards
from supervisor.ops.cli import main as redflow_main

pytestmark = pytest.mark.timeout(60)

JUNK = "x" * 1_000_000


@pytest.mark.parametrize("field", ["shards", "reshardTo", "prefix", "shard"])
def test_a_huge_value_in_meta_is_named_not_printed_whole(
    field: str,
    redis_url: str,
    prefix: str,
    client: Client,
    make_client: Callable[..., Client],
    capsys: pytest.CaptureFixture[str],
) -> None:
    check_shards(client)  # recorded: shards, prefix, shard
    client.redis.hset(client.keys.meta, field, JUNK)
    problems: list[str] = []
    with pytest.raises(ShardsMismatchError) as caught:
        check_shards(make_client(verify_shards=False))
    problems.append(str(caught.value))
    if field in ("shards", "reshardTo"):  # the check create_client makes reads these two
        with pytest.raises(ShardsMismatchError) as caught:
            create_client(redis_url, prefix=prefix, default=False)
        problems.append(str(caught.value))
    assert redflow_main(["--url", redis_url, "--prefix", prefix, "runs", "list"]) != 0
    problems.append(capsys.readouterr().err)
    for problem in problems:
        assert len(problem) < 2_000, problem[:300]
        assert "1,000,000 characters" in problem, problem[:300]


def test_a_huge_junk_member_of_a_ready_set_is_logged_cut(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A member of a queue's ready set with no run record is dropped by the claim
    that meets it, with a warning naming it: a neighbour's 3 MB member made a
    3 MB log line (one per such member, in the worker's log)."""
    junk = "x" * 3_000_000
    client.redis.zadd(client.keys.q_ready("q"), {junk: 0})
    with caplog.at_level(logging.WARNING, logger="redflow_mp.scripts"):
        _, claimed = client.scripts.claim(("q",), 5_000, new_token())
    assert claimed is None
    assert client.redis.zcard(client.keys.q_ready("q")) == 0  # dropped
    lines = [r.getMessage() for r in caplog.records if "in the ready list" in r.getMessage()]
    assert len(lines) == 1
    assert len(lines[0]) < 2_000, lines[0][:300]
    assert "3000000 characters" in lines[0], lines[0][:300]


def test_a_huge_junk_member_of_a_slot_set_is_logged_cut(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The reaper frees a ``wf-running`` slot whose run is gone, with a warning
    naming it: a neighbour's 3 MB member made a 3 MB line in the supervisor's log."""
    wf, junk = "send", "x" * 3_000_000
    client.redis.sadd(client.keys.wf_running(wf), junk)
    client.redis.zadd(client.keys.wf_waiting(wf), {"01M977JRVEBW27D7FAPQ2JGN0N": 1})
    client.redis.sadd(client.keys.parked, wf)
    with caplog.at_level(logging.WARNING, logger="redflow_mp.maintenance"):
        reap_expired(client, guard=StallGuard(5000, 500))
    assert not client.redis.sismember(client.keys.wf_running(wf), junk)
    lines = [r.getMessage() for r in caplog.records if "max_concurrency slot" in r.getMessage()]
    assert len(lines) == 1
    assert len(lines[0]) < 2_000, lines[0][:300]
    assert "3000000 characters" in lines[0], lines[0][:300]
