"""A capped workflow that counts its own concurrency in Redis
(``--module tests.faults.workload_counted``, same queue as ``workload.py``).

``fx-counted`` (``max_concurrency`` = :data:`COUNTED_MAX`): each execution adds
``<pid>:<run id>:<attempt>`` to the set ``fxcount:<tag>`` when its handler
starts, counts the members whose process is alive (a SIGKILLed worker leaves its
member behind, and runs nothing), logs ``counted`` with that number, does two
steps, and removes its member when the handler ends. The count is what the
handlers themselves saw running at once, next to I4's lease holders.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client
from tests.faults import ledger
from tests.faults.workload import QUEUE, RUN_TIMEOUT_S, instrumented, step

COUNTED_MAX = 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@define_workflow("fx-counted", queue=QUEUE, max_concurrency=COUNTED_MAX, timeout=RUN_TIMEOUT_S)
@instrumented
def counted(ctx: Context[Any]) -> str:
    client = get_default_client()
    assert client is not None
    key = f"fxcount:{client.keys.tag}"
    member = f"{os.getpid()}:{ctx.run.id}:{ctx.run.attempt}"
    client.redis.sadd(key, member)
    try:
        holders = [
            m.decode() if isinstance(m, bytes) else str(m) for m in client.redis.smembers(key)
        ]
        live = [m for m in holders if _alive(int(m.split(":", 1)[0]))]
        ledger.append("counted", run=ctx.run.id, n=len(live), holders=live)
        step(ctx, "s1", work_ms=20)
        step(ctx, "s2", work_ms=20)
    finally:
        with contextlib.suppress(Exception):
            client.redis.srem(key, member)
    return "counted"


COUNTED_WORKFLOWS = {counted.name: counted}
