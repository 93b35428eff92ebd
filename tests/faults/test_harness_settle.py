"""The fault harness's settle (``Faults.unfinished``) against a run created while
it reads: the runs it lists (``runs:created``) and their statuses are two reads,
and a parent can start a child (``step.emit_workflow``) and end in between. The
child must count as unfinished, else the case stops its supervisors with the
child still queued and the checker reports it stuck (I1), as if no worker would
claim it. Plain test run: one real redis-server, no supervisor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.faults.harness import Faults
from tests.lua.conftest import Enq

pytestmark = pytest.mark.timeout(30)


class _Between:
    """``raw``, with ``between()`` run once right after the first read of
    ``runs:created`` (what another client does while the harness reads)."""

    def __init__(self, raw: redis.Redis, between: Callable[[], None]) -> None:
        self._raw = raw
        self._between: Callable[[], None] | None = between

    def zrange(self, *args: Any, **kwargs: Any) -> Any:
        out = self._raw.zrange(*args, **kwargs)
        if self._between is not None and str(args[0]).endswith(":runs:created"):
            between, self._between = self._between, None
            between()
        return out

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return self._raw.pipeline(*args, **kwargs)


def test_a_child_started_by_a_parent_ending_mid_read_is_unfinished(
    raw: redis.Redis, client: Client, fx: Faults
) -> None:
    enq = Enq(client)
    parent = enq(workflow="fx-parent")
    token = new_token()
    _, got = client.scripts.claim(("q",), 30_000, token)
    assert got is not None and got.id == parent
    assert fx.unfinished(raw) == 1  # the parent, running
    children: list[str] = []

    def emit_then_end() -> None:
        children.append(enq(workflow="fx-child", parent=parent))
        assert client.scripts.finalize(parent, token, "succeeded", b"1") == "succeeded"

    seen = fx.unfinished(cast(redis.Redis, _Between(raw, emit_then_end)))
    assert raw.hget(client.keys.run(children[0]), "status") == b"queued"
    assert seen == 1, "the child queued mid-read was not counted: settle would stop here"
    assert fx.unfinished(raw) == 1
