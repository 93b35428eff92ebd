"""The scripts of an asyncio client (:class:`AsyncScripts`): the sync
:class:`~redflow_mp.scripts.ScriptSet`'s call builders and reply readers, driven
on an :class:`~redflow_mp.aio_transport.AsyncTransport`'s command connection.

Loading (the server's version, ``SCRIPT LOAD`` or ``FUNCTION LOAD``) happens once,
at the first call, in a task of its own that concurrent first calls wait for.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast

from redis.exceptions import ResponseError

from .aio_transport import AsyncTransport, wait_for_future
from .aio_transport import consume_exception as _consume
from .connection import NotReplicatedError
from .errors import NETWORK_ERRORS
from .keys import Keys
from .scripts import Plan, ScriptSet, enqueue_reply

__all__ = ["AsyncScripts"]

T = TypeVar("T")


class AsyncScripts(ScriptSet):
    """The scripts on an :class:`AsyncTransport` (loaded and called like the sync ones)."""

    def __init__(self, transport: AsyncTransport, keys: Keys, *, functions: bool = False) -> None:
        super().__init__(keys, transport.describe(), functions=functions)
        self._t = transport
        self._loading: asyncio.Task[None] | None = None

    async def _load(self) -> None:
        """Configure once: concurrent first calls wait for the one loading, which
        runs in a task of its own (a caller cancelled meanwhile only stops
        waiting; it does not fail the others with its ``CancelledError``)."""
        loading = self._loading
        if loading is None:
            if self._sources is not None:
                return
            # the transport's loop: a shard's transport may be first used right here
            # (the cancel cascade's first call on a child's shard)
            self._t.enter()
            loading = self._loading = self._t.loop.create_task(self._configure())
            loading.add_done_callback(_consume)
        await wait_for_future(loading, None)
        loading.result()

    async def _configure(self) -> None:
        try:
            version = await self._t.server_version()  # connects: a cluster is detected
            await self.drive(self.configure(version, cluster=self._t.clustered), retry=True)
        finally:
            self._loading = None  # loaded, or the next call tries again

    async def drive(self, plan: Plan[T], *, retry: bool) -> T:
        """Run ``plan`` on the command connection (see ``Scripts.drive``)."""
        try:
            cmd = next(plan)
            while True:
                try:
                    reply = await self._t.call(*cmd, retry=retry)
                except Exception as exc:
                    error = exc
                else:
                    cmd = plan.send(reply)
                    continue
                cmd = plan.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)

    async def run(
        self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], *, retry: bool
    ) -> Any:
        """Call script ``name``; see ``Scripts.run``."""
        if self._sources is None or self._loading is not None:  # not loaded, or loading
            self._t.enter()  # closed, or another loop: a clear error before loading
            await self._load()
        try:
            return await self._t.call(*self.command(name, keys, args), retry=retry)
        except ResponseError as exc:
            return await self.drive(self.recover(name, keys, args, exc), retry=retry)

    async def send_enqueue(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> tuple[str, bool]:
        """``Scripts.send_enqueue``: once, and once more after a network error."""
        try:
            reply = await self.run("enqueue_run", keys, args, retry=False)
        except NotReplicatedError:
            raise  # answered: a resend would only wait for the same replica again
        except NETWORK_ERRORS:
            reply = await self.run("enqueue_run", keys, args, retry=True)
        return enqueue_reply(reply)
