"""``batch.Progress``: the error of a batch that fails part-way names what it wrote."""

from __future__ import annotations

import redis

from redflow_mp import RedisOutOfMemoryError
from redflow_mp.batch import Progress


def test_nothing_written_keeps_the_error_as_it_was() -> None:
    progress = Progress(4)
    exc = RedisOutOfMemoryError("refused and nothing was changed")
    out = progress.failed(exc, 2, [(["c", "d"], RedisOutOfMemoryError("again"))])
    assert out is exc
    assert out.enqueued == [None] * 4  # type: ignore[attr-defined]


def test_a_chunk_sent_ahead_and_written_is_named_with_the_ones_before() -> None:
    progress = Progress(6)
    progress.answered(["a", "b"])
    out = progress.failed(RedisOutOfMemoryError("refused"), 2, [(["e", "f"], [1, b"old"])])
    assert type(out) is RedisOutOfMemoryError
    assert out.enqueued == ["a", "b", None, None, "e", "old"]  # type: ignore[attr-defined]
    assert "4 of the batch's 6 runs were enqueued" in str(out)
    assert "inputs[2:4]" in str(out) and "may have been" not in str(out)


def test_chunks_without_a_reply_are_named_as_maybe_written() -> None:
    progress = Progress(6)
    lost = redis.ConnectionError("connection reset")
    out = progress.failed(lost, 2, [(["e", "f"], lost)])
    assert type(out) is redis.ConnectionError
    assert out.enqueued == [None] * 6  # type: ignore[attr-defined]
    assert "inputs[0:2], inputs[2:4] may have been enqueued too" in str(out)
    assert out.__cause__ is lost
