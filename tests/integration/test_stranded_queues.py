"""A queue that holds runs no live supervisor serves (a deploy moved a workflow
to another queue, a ``--queues`` list that misses one, ``--queue`` misspelt):
its runs waited forever and nothing said so. The leader's retention duty, which
already pages through the ``queues`` set, names such a queue in a WARNING (at
most every 10 minutes per queue)."""

from __future__ import annotations

import logging

import pytest

from redflow_mp import Client
from supervisor.duties.retention import RetentionDuty


def test_a_queue_with_runs_nobody_serves_is_named(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client.run_by_name("moved", None, queue_override="old-queue")
    client.run_by_name("moved", None, queue_override="old-queue")
    client.run_by_name("served", None, queue_override="new-queue")
    caplog.clear()  # (run_by_name warns about names it does not know)
    duty = RetentionDuty(client, 0, queues=lambda: ("new-queue",))
    duty.tick(0.0)
    assert "queue 'old-queue' holds 2 runs (ready or scheduled) that no live supervisor" in (
        caplog.text
    )
    assert "new-queue" not in caplog.text
    caplog.clear()
    duty.tick(31.0)  # the next pass, within 10 minutes: not again
    assert "old-queue" not in caplog.text
    duty.tick(700.0)
    assert "queue 'old-queue' holds 2 runs" in caplog.text
