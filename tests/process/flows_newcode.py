"""A workflow the next deploy adds on a queue the current code already serves
(``p``, beside ``tests.process.flows``): a host on the new code loads both modules."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("added-later", queue="p", max_concurrency=100)
def added_later(ctx: Context[Any]) -> int:
    return os.getpid()
