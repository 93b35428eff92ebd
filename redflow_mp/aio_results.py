"""Waiting for a run's end from asyncio code: ``AsyncClient.wait_result``.

Owns :class:`AsyncResults`, the async twin of the sync waiter
(``results.py``, whose rules it uses: the fields read, what a terminal state
is, the outcome, the timeout error, which Redis trouble a waiter rides out).
It subscribes to the run's ``run-done`` channel on the shard's pub/sub
connection, then reads the run; without a message the run is read again every
``RESULT_RECHECK_S``. With ``durability`` "wait"/"waitaof" an outcome is
returned after a confirming write and its WAIT. Mixed into
:class:`~redflow_mp.aio.AsyncClient`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .aio_shards import AsyncShard, ShardAccess
from .aio_transport import wait_for_future
from .errors import RedflowError
from .options import cannot_be_run_id, check_run_id, check_timeout, shown_run_id
from .results import (
    RESULT_RECHECK_S,
    STATE_FIELDS,
    WAIT_TROUBLE,
    outcome,
    passes,
    result_timeout,
    terminal_state,
    wait_refusal,
)

__all__ = ["AsyncResults"]


class AsyncResults(ShardAccess):
    """``wait_result`` on an async client's pub/sub and command connections."""

    async def wait_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait until the run ends; return its output or raise its error (see
        ``RunHandle.result``). Subscribes to the run's channel, then reads the run:
        a finish before the subscription is seen by the read, a later one by the
        message; without a message the run is read again every RESULT_RECHECK_S.
        A ``timeout`` is kept even while Redis does not answer (the calls in flight
        are abandoned at the deadline, not after the reply watchdog's 5 s)."""
        check_run_id(run_id)
        timeout = check_timeout(timeout, "timeout") if timeout != 0 else 0.0
        if cannot_be_run_id(run_id):
            raise RedflowError(
                f"run {shown_run_id(run_id)} does not exist (unknown id, or removed by retention)"
            )
        shard = self.shard_of_run(run_id)  # its pub/sub on the shard's connections
        t = shard.transport
        t.enter()
        if not timeout:  # None: no deadline; 0: one look, however long it takes
            return await self._wait_result(shard, run_id, timeout, None)
        deadline = t.loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline) as scope:
                return await self._wait_result(shard, run_id, timeout, deadline)
        except TimeoutError:
            if scope.expired():
                raise result_timeout(run_id, timeout) from None
            raise

    async def _confirm_result(self, shard: AsyncShard) -> None:
        """durability "wait"/"waitaof": a write and its WAIT before an outcome is
        returned (a finish is published before its worker's WAIT confirmed it)."""
        if shard.transport.durability != "none":
            keys = shard.keys
            await shard.scripts.run(
                "confirm_result", (keys.result_confirm,), (keys.tag,), retry=True
            )

    async def _wait_result(
        self, shard: AsyncShard, run_id: str, timeout: float | None, deadline: float | None
    ) -> Any:
        t = shard.transport
        loop = t.loop
        if deadline is None and timeout is not None:
            deadline = loop.time() + timeout
        name = shard.keys.run_done(run_id).encode()
        read = ("HMGET", shard.keys.run(run_id), *STATE_FIELDS)
        while True:
            channel = None
            try:
                # at most RESULT_RECHECK_S, then the run is read again (a lost publish)
                recheck = loop.time() + RESULT_RECHECK_S
                until = recheck if deadline is None else min(deadline, recheck)
                channel = await t.subscribe(name)
                if await wait_for_future(channel.ready, until):
                    channel.ready.result()  # raises if the subscription failed
                state = terminal_state(run_id, await t.call(*read))
                if state is None and await wait_for_future(channel.message, until):
                    # a wake-up only: the outcome is the run's record (results.py)
                    state = terminal_state(run_id, await t.call(*read))
                if state is not None:
                    await self._confirm_result(shard)
                    return outcome(run_id, state)
                if deadline is not None and loop.time() >= deadline:
                    raise result_timeout(run_id, timeout)
            except WAIT_TROUBLE as exc:
                if not passes(exc):
                    raise wait_refusal(exc, shard.keys.run(run_id))  # noqa: B904 (its cause is set)
                if deadline is not None and loop.time() >= deadline:
                    raise result_timeout(run_id, timeout) from None
                await asyncio.sleep(0.05)
            finally:
                if channel is not None:
                    t.unsubscribe(channel)
