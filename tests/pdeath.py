"""``python -I -S tests/pdeath.py PARENT_PID COMMAND...``: execute COMMAND with the
kernel asked to SIGKILL it when the test process that started it dies.

A supervisor of a test runs in a session of its own (``start_new_session``: the
test signals its whole group) and is stopped by the fixture's teardown. An xdist
worker that dies mid-test (SIGKILLed, OOM, pytest-timeout's ``os._exit``) runs
no teardown: its supervisors went on for good, their children claiming the runs
of a server nobody watched, and loaded the machine for every later test. With
``PR_SET_PDEATHSIG`` (kept across ``execve``) the supervisor gets SIGKILL when
the test process goes; its children, orphans then, finish their run and leave
(``supervisor/childlife.py``, ``orphan_watch``).

The signal comes when the *thread* that forked dies: :func:`orphan_proof` guards
commands started from the test's main thread only. A test process already gone
before the ``prctl`` (its pid no longer our parent) means exit at once. The
redis-servers of the fixtures (``tests/redis_server.py``) are started the same way.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def orphan_proof(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run through this launcher: SIGKILLed when this test process (an xdist
    worker SIGKILLed or ended by pytest-timeout, no teardown run) dies. The pid
    and command line after the launcher's ``execve`` are ``cmd``'s own. The
    kernel sends the signal when the *thread* that forked ends: from another
    thread than the main one (a restart in ``asyncio.to_thread``), and outside
    a test (benchmarks), ``cmd`` as it is."""
    if threading.current_thread() is not threading.main_thread():
        return list(cmd)
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return list(cmd)
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), *cmd]


def main(argv: list[str]) -> None:
    parent = int(argv[1])
    command = argv[2:]
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        if os.getppid() != parent:
            os._exit(1)  # the test process died before the prctl
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
