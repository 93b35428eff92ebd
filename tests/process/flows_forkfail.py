"""Imported by a test's supervisor (``--module``): once the file named by
``TEST_NO_FORK_FLAG`` exists, ``os.fork`` fails in the supervisor's parent
(EAGAIN, as at a process limit or ENOMEM); its children fork as before."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from redflow_mp import Context, define_workflow

_real_fork = os.fork
_parent = os.getpid()
_flag = os.environ.get("TEST_NO_FORK_FLAG", "")


def _fork() -> int:
    if os.getpid() == _parent and _flag and os.path.exists(_flag):
        raise OSError(errno.EAGAIN, "fork refused by tests.process.flows_forkfail")
    return _real_fork()


if _flag:  # only in a supervisor started with it (never in the test process)
    os.fork = _fork


@define_workflow("marked-nap", queue="p", max_concurrency=10)
def marked_nap(ctx: Context[str]) -> None:
    """Creates the file ``input`` (its worker holds it on the board by then), then
    sleeps ten minutes."""
    Path(ctx.input).touch()
    time.sleep(600.0)
