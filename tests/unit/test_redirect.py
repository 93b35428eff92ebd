"""connection.redirect: what a cluster's error reply asks for, whatever redis-py
release raised it (5.0 leaves the code in a plain ResponseError's text, and a
pipeline's error names its command first)."""

from __future__ import annotations

import pytest
from redis import exceptions as rexc

from redflow_mp.connection import redirect


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ASK 7726 127.0.0.1:23108", "retry"),
        ("MOVED 7726 127.0.0.1:23108", ("127.0.0.1", 23108)),
        ("TRYAGAIN Multiple keys request during rehashing of slot", "retry"),
        ("CLUSTERDOWN The cluster is down", "retry"),
        # redis-py 5.0's pipelines (sync)
        (
            "Command # 1 (HGETALL {p}:run:01M9) of pipeline caused error: ASK 7726 127.0.0.1:23108",
            "retry",
        ),
        (
            "Command # 2 (HGETALL {p}:run:01M9) of pipeline caused error: MOVED 7726 10.0.0.2:7000",
            ("10.0.0.2", 7000),
        ),
        # redis.asyncio 5.0's pipelines quote the error's args tuple
        (
            "Command # 1 (HGETALL {p}:run:01M9) of pipeline caused error: "
            "('ASK 7726 127.0.0.1:23108',)",
            "retry",
        ),
        # a script stopped at a key of a slot being moved: Redis 7, Redis 6.2 ...
        (
            "Error running script (call to f_0a1b): @user_script:5: Script attempted to "
            "access a non local key in a cluster node",
            "retry",
        ),
        (
            "Error running script (call to f_0a1b): @user_script:565: @user_script: 565: "
            "Lua script attempted to access a non local key in a cluster node",
            "retry",
        ),
        # ... and Valkey 9
        (
            "Attempted to access a non local key in a cluster node script: on @user_script:566.",
            "retry",
        ),
        # Redis 7 as sent (redis-py drops the "ERR "), through EVALSHA and FCALL
        (
            "Script attempted to access a non local key in a cluster node script: "
            "b2c3d4e5f6, on @user_script:1.",
            "retry",
        ),
        # the words inside a script's own error (a user's text, a name) are not
        # Redis refusing the key: not retried (for 10 s)
        (
            "Error running script (call to f_0a1b): @user_script:5: bad queue "
            "'Script attempted to access a non local key in a cluster node'",
            None,
        ),
        ("step failed: attempted to access a non local key in a cluster node", None),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
        ("Command # 1 (GET k) of pipeline caused error: ERR unknown command", None),
    ],
)
def test_redirect_reads_plain_and_pipeline_errors(
    text: str, expected: tuple[str, int] | str | None
) -> None:
    assert redirect(rexc.ResponseError(text)) == expected, text
