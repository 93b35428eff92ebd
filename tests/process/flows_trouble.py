"""A workflow whose handler ends while Redis refuses writes (``maxmemory`` 1, set
by the handler itself on its first execution): its finish has to ride the
trouble out. ``ctx.input`` is a directory: each execution appends a line to
``bodies``, the ``on_failure`` hook one to ``hooks``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redflow_mp import Context, FailureContext, define_workflow, get_default_client


def _hook(fctx: FailureContext[Any]) -> None:
    with (Path(fctx.input) / "hooks").open("a") as f:
        f.write(f"{fctx.error.type}\n")


@define_workflow("ends-under-oom", queue="trouble", timeout=2.0, on_failure=_hook)
def ends_under_oom(ctx: Context[str]) -> None:
    bodies = Path(ctx.input) / "bodies"
    first = not bodies.exists()
    with bodies.open("a") as f:
        f.write("ran\n")
    client = get_default_client()
    if first and client is not None:
        client.redis.config_set("maxmemory", "1")
    raise ValueError("the handler's own failure")
