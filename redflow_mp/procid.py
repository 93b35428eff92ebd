"""This process's id without a system call.

``os.getpid()`` is a system call each time (glibc no longer caches it), and a
worker's hot path asked for it in every call to Redis (``Transport._wire``: a
forked child must not share its parent's connection) and at every execution.
:data:`pid` is read once here and again in every child forked from Python
(``os.register_at_fork``: ``os.fork``, ``multiprocessing``, ``pty.fork``). A
fork from C code that bypasses the hooks leaves it stale, which is why the
guard against a handler's own fork returning into the worker
(``executor.Executor._handler``) still asks ``os.getpid()`` itself, and an
executor reads the id anew when it is made (:func:`refresh`): a worker's own
process is never one with a stale id, where that guard would take every run
for a fork's.
"""

from __future__ import annotations

import os

__all__ = ["pid", "refresh"]

#: The id of this process (read as ``procid.pid``, never imported by value).
pid = os.getpid()


def refresh() -> int:
    """Read this process's id from the OS again; returns it."""
    global pid
    pid = os.getpid()
    return pid


def _after_fork_in_child() -> None:
    refresh()


os.register_at_fork(after_in_child=_after_fork_in_child)
