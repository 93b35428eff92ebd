"""``procid.pid``: this process's id without a system call, right in a child
forked from Python too (``os.register_at_fork``)."""

from __future__ import annotations

import os

from redflow_mp import procid


def test_the_id_is_this_processs_and_a_forked_childs_own() -> None:
    assert procid.pid == os.getpid()
    assert procid.refresh() == os.getpid() == procid.pid
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(w, f"{procid.pid} {os.getpid()}".encode())
        os._exit(0)
    os.close(w)
    try:
        seen, real = (int(x) for x in os.read(r, 64).split())
    finally:
        os.close(r)
        os.waitpid(child, 0)
    assert seen == real == child
    assert procid.pid == os.getpid()
