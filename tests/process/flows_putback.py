"""A workflow whose handler records its start (``<run id> <pid>`` appended to
``$HOLD_DIR/starts``) and then holds while ``$HOLD_DIR/gate-<input>`` exists, so
that a test knows which child holds which run and ends each run when it wants."""

from __future__ import annotations

import os
import time

from redflow_mp import Context, define_workflow


@define_workflow("held", queue="p", max_concurrency=10)
def held(ctx: Context[str]) -> str:
    hold = os.environ["HOLD_DIR"]
    with open(os.path.join(hold, "starts"), "a") as f:
        f.write(f"{ctx.run.id} {os.getpid()}\n")
    while os.path.exists(os.path.join(hold, f"gate-{ctx.input}")):
        time.sleep(0.02)
    return ctx.input
