"""The workflow of ``flows_putback`` under several names (``held0`` ...
``held11``), so that a test with ``shards > 1`` finds one whose runs live in
the shard it wants (a workflow's shard follows its name): each handler records
its start (``<run id> <pid>`` appended to ``$HOLD_DIR/starts``), then holds
while ``$HOLD_DIR/gate-<input>`` exists."""

from __future__ import annotations

import os
import time

from redflow_mp import Context, Workflow, define_workflow

NAMES = tuple(f"held{i}" for i in range(12))


def _held(ctx: Context[str]) -> str:
    hold = os.environ["HOLD_DIR"]
    with open(os.path.join(hold, "starts"), "a") as f:
        f.write(f"{ctx.run.id} {os.getpid()}\n")
    while os.path.exists(os.path.join(hold, f"gate-{ctx.input}")):
        time.sleep(0.02)
    return ctx.input


FLOWS: dict[str, Workflow[str, str]] = {
    name: define_workflow(name, queue="p", max_concurrency=10)(_held) for name in NAMES
}
