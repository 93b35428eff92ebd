"""Closing an async client from another thread's event loop.

A common pattern runs the client on a background loop (B, ``run_forever`` in
a thread of its own) and closes it from the caller's loop (A): ``await
client.aclose()`` in A. B's transports, futures and tasks may only be touched
from B's thread (asyncio is not thread-safe), so the closing is handed to B
(``run_coroutine_threadsafe``) and A waits for it: there the calls in flight
fail with the closed client's error, as for an ``aclose()`` on B itself. If B
stops meanwhile (or before it got to it), nothing runs there any more: the
sockets are closed directly from A (``AsyncTransport.release_now``), as when
B had ended before (a redis.asyncio connection whose closing B had begun
when it stopped is no longer in its pool: it finishes closing when B runs
again or is closed). B still running but not closing within
:data:`CLOSE_PATIENCE` (a thread blocked in sync code) raises
:class:`~redflow_mp.errors.RedflowError`; the closing stays handed to B and
happens when B gets to it. In a child forked while B was alive (not closed),
``aclose()`` raises at once and touches nothing (:func:`check_not_forked`):
B's copy there may be marked running with no thread to run it, and it shares
the parent's epoll instance, which a direct close would unregister the
parent's sockets from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .aio_resp import wait_for_future
from .errors import RedflowError

__all__ = ["CLOSE_PATIENCE", "check_not_forked", "close_on_owner", "owner_elsewhere"]

#: Seconds ``aclose()`` from another thread's event loop waits for the client's
#: own loop, running in its thread, to close the client there.
CLOSE_PATIENCE = 10.0
#: Seconds between two looks at whether that loop still runs.
_LOOK = 0.05


def owner_elsewhere(loops: Iterable[asyncio.AbstractEventLoop | None]) -> Any:
    """The loop among ``loops`` (a client's transports' own) that is not the running
    one and is running (in another thread), or None."""
    here = asyncio.get_running_loop()
    for loop in loops:
        if loop is not None and loop is not here and loop.is_running():
            return loop
    return None


def check_not_forked(owner: asyncio.AbstractEventLoop | None, owner_pid: int, where: str) -> None:
    """Raise when ``owner`` (a client's loop, not closed) belongs to the process this
    one was forked from: its copy here shares that process's epoll instance, so even
    closing the client directly (``transport.abort()`` unregisters the socket)
    would take the parent's connections out of the parent's loop."""
    if owner is not None and not owner.is_closed() and owner_pid != os.getpid():
        raise RedflowError(
            f"this AsyncClient ({where}) belongs to an event loop of the process this "
            f"one was forked from (pid {owner_pid}), which closes it; a forked process "
            "creates its own client"
        )


async def close_on_owner(
    owner: asyncio.AbstractEventLoop,
    close: Callable[[], Coroutine[Any, Any, None]],
    release: Callable[[], None],
    where: str,
    owner_pid: int,
) -> None:
    """Run ``close()`` in a task of ``owner`` (running in another thread) and wait
    for it; if ``owner`` stops first, or its shutdown cancels that task,
    ``release()`` (every socket closed without the loop) once it has stopped.

    The coroutine is made on ``owner`` itself (nothing is left unawaited when
    that loop ends before it got to it); the waiting here never touches
    ``owner``'s objects, only a thread-safe future its task's end resolves.
    ``owner_pid`` is the process ``owner`` runs in: in another (a forked child's
    copy of ``owner``, which no thread runs) this raises at once."""
    check_not_forked(owner, owner_pid, where)
    loop = asyncio.get_running_loop()
    ended: concurrent.futures.Future[asyncio.Task[None]] = concurrent.futures.Future()
    waiter = loop.create_future()

    def start() -> None:  # on owner, in its thread
        task = owner.create_task(close())
        task.add_done_callback(ended.set_result)

    def wake() -> None:  # on this loop
        if not waiter.done():
            waiter.set_result(None)

    def woken(_: object) -> None:  # in owner's thread
        with contextlib.suppress(RuntimeError):  # this loop closed meanwhile
            loop.call_soon_threadsafe(wake)

    ended.add_done_callback(woken)
    try:
        owner.call_soon_threadsafe(start)
    except RuntimeError:  # closed meanwhile: nothing runs there any more
        release()
        return
    give_up = loop.time() + CLOSE_PATIENCE
    # waiter is never awaited itself: a cancelled caller leaves the closing to go on
    while True:
        if ended.done():
            task = ended.result()
            if not task.cancelled():
                task.result()  # its error, if any
                return
            # cancelled there: the loop's shutdown (asyncio.run's end); once it
            # has stopped, whatever the cancelled closing left is closed here
        if not owner.is_running():  # stopped before or during the closing
            release()
            return
        if loop.time() >= give_up:
            raise RedflowError(
                f"this AsyncClient ({where}) belongs to an event loop running in another "
                f"thread, which did not close it within {CLOSE_PATIENCE:g} s (blocked?); "
                "it closes the client when it next runs"
            )
        if waiter.done():  # woken already (the cancelled task): look again later
            await asyncio.sleep(_LOOK)
        else:
            await wait_for_future(waiter, min(give_up, loop.time() + _LOOK))
