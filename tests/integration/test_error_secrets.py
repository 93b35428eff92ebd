"""A Redis URL's password in a handler's error never reaches the run record.

The supervisor's logs masked it (``mask_secrets``), but the run's ``errorJson``
stored the exception's message and traceback verbatim: a handler that failed to
reach a Redis (or wrapped such an error) put the password in the record, which
``redflow runs show``, the dashboard and ``result()`` show to anyone who may read
runs (a read-only viewer included)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunFailedError, define_workflow
from redflow_mp.execution import error_info
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
