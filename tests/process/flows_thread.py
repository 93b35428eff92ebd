"""A workflow module that starts a thread at import (a metrics exporter, a
config poller, an SDK's batch processor): the supervisor's parent imports it
before it forks."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from redflow_mp import Context, define_workflow


def _poll() -> None:
    while True:
        time.sleep(60)


threading.Thread(target=_poll, name="config-poller", daemon=True).start()


@define_workflow("threaded-pid", queue="p", max_concurrency=10)
def threaded_pid(ctx: Context[Any]) -> int:
    return os.getpid()
