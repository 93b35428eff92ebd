"""``redflow`` over Redis trouble met by a read: a neighbour's key of another
type (``WrongTypeError``) and ``BUSY`` while a neighbour's long script runs
(``RedisBusyError``) are one clear line on stderr and exit status 1, never a
traceback. The CLI runs in-process (``main``), so the BUSY window of the
neighbour's 2 s script is not spent starting an interpreter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redflow_mp import Client, create_client
from redflow_supervisor.ops.cli import main
from tests.integration.test_results_busy import _spin_in_background
from tests.ops.conftest import Runs
from tests.redis_server import RedisServer, busy_threshold_server

pytestmark = pytest.mark.timeout(90)


def test_reads_over_a_key_of_another_type_exit_1_naming_the_key(
    runs: Runs,
    raw: redis.Redis,
    client: Client,
    redis_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    k = client.keys
    for key in (k.runs_created, k.workflows, k.run(runs.queued)):
        raw.delete(key)
        raw.set(key, "a neighbour's value")
    target = ["--url", redis_url, "--prefix", prefix]
    for argv, key in (
        (["runs", "list"], k.runs_created),
        (["runs", "show", runs.queued], k.run(runs.queued)),
    ):
        capsys.readouterr()
        code = main([*argv, *target])
        err = capsys.readouterr().err
        assert code == 1, (argv, err)
        assert "WRONGTYPE" in err and key in err, (argv, err)
        assert "Traceback" not in err, (argv, err)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def test_a_read_during_a_neighbours_long_script_exits_1_saying_busy(
    server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    own = create_client(server.url, prefix="cli-busy", default=False)
    own.close()  # the keyspace exists (its shard count recorded)
    spinner = _spin_in_background(server)
    code = main(["runs", "list", "--url", server.url, "--prefix", "cli-busy"])
    spinner.join(30)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "busy" in err.lower() and "nothing was changed" in err, err
    assert "Traceback" not in err, err
