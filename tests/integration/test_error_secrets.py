"""A Redis URL's password in a handler's error never reaches the run record.

The supervisor's logs masked it (``mask_secrets``), but the run's ``errorJson``
stored the exception's message and traceback verbatim: a handler that failed to
reach a Redis (or wrapped such an error) put the password in the record, which
``redflow runs show``, the dashboard and ``result()`` show to anyone who may read
runs (a read-only viewer included)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunFailedError, define_workflow
from redflow_mp.execution import error_info
from redflow_mp.urls import mask_secrets
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _fail() -> None:
    raise RuntimeError("cannot reach redis://admin:hunter2@db.internal:6379/0?ssl_password=s3cret")


def test_error_info_masks_url_passwords_in_message_and_traceback() -> None:
    try:
        _fail()
    except RuntimeError as exc:
        info = error_info(exc)
    assert "hunter2" not in info.message and "s3cret" not in info.message
    assert "redis://admin:***@db.internal:6379/0?ssl_password=***" in info.message
    assert info.traceback is not None
    assert "hunter2" not in info.traceback and "s3cret" not in info.traceback


def test_the_run_record_holds_no_password(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("leaky", registry=registry)
    def leaky(ctx: Context[Any]) -> None:
        _fail()

    handle = leaky.run(None, client=client)
    workers.start()
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=20)
    assert "hunter2" not in str(failed.value)
    stored = raw.hget(client.keys.run(handle.id), "errorJson")
    assert stored is not None and b"hunter2" not in stored and b"s3cret" not in stored


def test_a_password_at_the_cut_of_a_long_message_or_traceback_is_masked() -> None:
    """The message is cut to 4,000 characters and the traceback to its last 16,000:
    masked after the cut, a URL cut inside its password (no ``@`` left after it,
    or no scheme before it) was not recognised, and the password's part on the
    kept side of the cut was stored."""
    url = "redis://admin:hunter2secret@db.internal:6379/0"
    at_message_cut = "x" * (4000 - len("redis://admin:hunter2")) + url
    try:
        raise RuntimeError(at_message_cut)
    except RuntimeError as exc:
        info = error_info(exc)
    assert "hunter2" not in info.message
    # the traceback keeps its end: a password just before its last 16,000 characters
    at_traceback_cut = url + "y" * 15_973  # cut after "redis://admin:hunter"
    try:
        raise RuntimeError(at_traceback_cut)
    except RuntimeError as exc:
        info = error_info(exc)
    assert info.traceback is not None
    assert "2secret" not in info.traceback


def test_masking_text_of_many_url_heads_without_at_is_fast() -> None:
    """``redis://x:`` repeated with no ``@`` after it: the password pattern's
    ``\\S+@`` scanned to the end of the text from each head and backtracked, so the
    time grew with the square of the length (16,000 characters, a stored
    traceback's limit: 0.9 s of a worker per failure; 50,000: about 9 s). A
    handler's error message is the handler's (or its input's) to choose."""
    text = "redis://x:" * 5_000
    started = time.process_time()  # CPU time: a loaded machine does not stretch it
    assert mask_secrets(text) == text
    assert time.process_time() - started < 1.0
    # the same masks as before, where there is an "@"
    assert mask_secrets("a redis://u:p@ss@h:1/0 b redis://:q@h2 c") == (
        "a redis://u:***@h:1/0 b redis://:***@h2 c"
    )
    assert mask_secrets("redis://x:" * 3 + "@h") == "redis://x:***@h"
