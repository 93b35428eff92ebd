"""Number fields of our hashes overwritten with text that ``str.isdigit()`` takes
and ``int()`` refuses ("²", "①": a neighbour's write, a hand edit). The readers
that checked ``isdigit()`` before ``int()`` ended in a ``ValueError`` traceback:
``redflow runs show`` / ``runs watch`` (a run's ``stepBytes``), ``redflow
queues`` and the dashboard's Queues page (a ready head's ``availableAt``, a
500). Garbage there is now what other garbage is: no figure, nothing else lost."""

from __future__ import annotations

import contextlib
import io

import pytest
import redis

from redflow_mp import Client, admin, previews
from redflow_mp.codec import whole_number
from redflow_supervisor.ops.cli import main

GARBAGE = ["\u00b2", "\u2460", "abc", "-1", "1" * 40]


@pytest.mark.parametrize("value", GARBAGE)
def test_garbage_step_bytes_and_available_at_are_no_figure(
    client: Client, raw: redis.Redis, redis_url: str, prefix: str, value: str
) -> None:
    """Before: ``ValueError: invalid literal for int() with base 10: b'\\xc2\\xb2'``
    from ``get_run_steps_ends`` and from ``queue_stats``."""
    handle = client.run_by_name("w", {"x": 1}, queue_override="qd")
    raw.hset(client.keys.run(handle.id), mapping={"stepBytes": value, "availableAt": value})
    ends = previews.get_run_steps_ends_any(client, handle.id, 5, 5)
    assert ends is not None and ends.by_status == {}
    [stats] = admin.queue_stats(client, ["qd"])
    assert stats.ready == 1 and stats.oldest_ready_age_ms is None
    for args in (["runs", "show", handle.id], ["queues"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--url", redis_url, "--prefix", prefix, *args])
        assert code == 0, (args, err.getvalue())
        assert handle.id in out.getvalue() or "qd" in out.getvalue()


def test_whole_number_takes_ascii_digits_only() -> None:
    assert whole_number(b"1700000000000") == 1700000000000
    assert whole_number("42") == 42
    for bad in (b"\xc2\xb2", "\u00b2", "\u2460", "", b"", None, b"-1", b"1.5", b" 1", "1" * 20, 7):
        assert whole_number(bad) is None, bad
    assert whole_number("1" * 20, 20) == int("1" * 20)


@pytest.mark.parametrize("value", ["abc", "\u00b2", "0", "2000"])
def test_a_garbage_reshard_target_is_named_by_migrate(
    client: Client, raw: redis.Redis, redis_url: str, prefix: str, value: str
) -> None:
    """``meta``'s ``reshardTo`` (the target of an interrupted ``redflow migrate
    --shards``) overwritten with garbage. Before: ``ValueError: invalid literal for
    int() with base 10: 'abc'``, a traceback out of ``redflow migrate --shards 2``;
    the other commands advised ``redflow migrate ... --shards abc``."""
    client.run_by_name("w", None, queue_override="qd")
    raw.hset(client.keys.meta, "reshardTo", value)
    for args in (["migrate", "--shards", "2"], ["runs", "list"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--url", redis_url, "--prefix", prefix, *args])
        assert code == 1, (args, out.getvalue(), err.getvalue())
        assert "'reshardTo'" in err.getvalue() and repr(value) in err.getvalue(), err.getvalue()
        assert f"--shards {value}" not in err.getvalue()
    assert raw.hget(client.keys.meta, "reshardTo") == value.encode()  # nothing moved
