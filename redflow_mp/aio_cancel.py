"""Canceling runs from asyncio code: ``AsyncClient.cancel_run`` and its cascade.

Owns :class:`AsyncCancels`, the async twin of the sync client's cancel
(``Client.cancel_run``, ``Runs.cancel_children`` / ``Runs._cancel_many``, the
walk itself in ``cascade.py``): the run's own ``cancel_run.lua`` call, then its
unfinished ``run_workflow`` children, a chunk of them per round trip a shard
(followed by the WAIT of ``durability``), only children with children scanned,
and the kick of a parent in another shard (``xshard.py``). Mixed into
:class:`~redflow_mp.aio.AsyncClient`; the shared rules (which statuses accept a
cancel, the cascade's reason, its record) are the sync client's functions.
"""

from __future__ import annotations

from typing import Any, overload

import redis.asyncio

from .aio_shards import ShardAccess
from .cascade import CHUNK as CASCADE_CHUNK
from .cascade import forget_args, gen_text, positions_by_shard
from .clientargs import cascade_refused
from .codec import text
from .connection import NotReplicatedError
from .errors import NETWORK_ERRORS
from .listing import read_error
from .options import cannot_be_run_id, check_reason, spec_run_id
from .runs import cancel_accepted
from .scripts import cancel_reply

__all__ = ["AsyncCancels"]


class AsyncCancels(ShardAccess):
    """``cancel_run`` and its cascade on an async client's connections."""

    @overload
    async def cancel_run(self, run_id: str, reason: str | None = None) -> bool: ...
    @overload
    async def cancel_run(self, *, id: str, reason: str | None = None) -> bool: ...
    async def cancel_run(
        self, run_id: str | None = None, reason: str | None = None, *, id: str | None = None
    ) -> bool:
        """Cancel a run; see ``Client.cancel_run``."""
        run_id = spec_run_id(run_id, id, "cancel_run")
        why = check_reason(reason)
        if cannot_be_run_id(run_id):
            return False
        status = await self._cancel_one(run_id, why)
        accepted = cancel_accepted(status)
        if accepted:
            try:
                await self._cancel_children(run_id, why or None)
            except redis.exceptions.ResponseError as exc:
                named = cascade_refused(exc, run_id)
                if named is None:
                    raise
                raise named from exc
            if status == "canceled" and self.shard_count > 1:
                await self._kick_parent(run_id, status)
        return accepted

    async def _cancel_one(self, run_id: str, reason: str, parent: str = "") -> str | None:
        """Cancel one run; ``parent``: the run whose cascade sends it (canceled only
        if it is that parent's child, see ``Scripts.cancel_call``)."""
        scripts = self.shard_of_run(run_id).scripts
        keys, args = scripts.cancel_call(run_id, reason, parent)
        return cancel_reply(await scripts.run("cancel_run", keys, args, retry=True))

    async def _kick_parent(self, run_id: str, status: str) -> None:
        """shards > 1: the canceled run wakes its parent in another shard (see
        ``xshard.py``)."""
        shard = self.shard_of_run(run_id)
        raw = await shard.redis.hget(shard.keys.run(run_id), "parentRunId")
        parent = text(raw) if raw else ""
        try:
            home = self.shard_of_run(parent) if parent else shard
        except ValueError:  # a parent id given by hand, naming no shard of ours
            return
        if home.index == shard.index:
            return
        await home.scripts.run(
            "kick_parent",
            (home.keys.run(parent),),
            (home.keys.tag, parent, run_id, status),
            retry=True,
        )

    async def _cancel_children(self, run_id: str, reason: str | None) -> None:
        """The cancel cascade (see ``cascade.py``) on this client's connections: a
        chunk of children per round trip, only children with children scanned."""
        why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
        stack, seen = [run_id], {run_id}
        while stack:
            parent = stack.pop()
            shard, fresh, listed = self.shard_of_run(parent), [], False
            # read before the children are listed: a cascade recorded after it
            # (resumed, canceled again) is not this walk's (forget_cascades.lua)
            gen = gen_text(await shard.redis.hget(shard.keys.run(parent), "cascadeGen"))
            children = shard.keys.run_children(parent)
            try:
                async for raw in shard.redis.sscan_iter(children, count=500):
                    listed = True
                    if (child := text(raw)) not in seen:
                        seen.add(child)
                        fresh.append(child)
            except redis.exceptions.ResponseError as exc:  # the bare reply names no key
                named = read_error(exc, [("sscan", (children,))])
                if named is None:
                    raise
                raise named from exc
            for at in range(0, len(fresh), CASCADE_CHUNK):
                chunk = fresh[at : at + CASCADE_CHUNK]
                done = await self._cancel_many(chunk, why, parent)
                stack += [c for c, (st, more) in zip(chunk, done, strict=True) if st and more]
            if listed:  # its cascade is no longer owed (``cascade.finish_pending``)
                keys = shard.keys
                args = forget_args(keys.tag, [(parent, gen)])
                await shard.scripts.run("forget_cascades", (keys.cascades,), args, retry=True)

    async def _cancel_many(
        self, ids: list[str], why: str, parent: str = ""
    ) -> list[tuple[str | None, bool]]:
        """``Runs._cancel_many`` on this client's connections: ``parent``'s children
        among ``ids`` are canceled, a run another parent (or a client) started and
        ``parent`` only awaits by key is left as it is."""
        out: list[tuple[str | None, bool]] = [(None, False)] * len(ids)
        for positions in positions_by_shard(ids, self.shard_of_run):
            shard = self.shard_of_run(ids[positions[0]])
            await shard.scripts._load()
            commands: list[tuple[Any, ...]] = []
            for i in positions:
                keys, args = shard.scripts.cancel_call(ids[i], why, parent)
                commands.append(shard.scripts.command("cancel_run", keys, args))
                commands.append(("SCARD", shard.keys.run_children(ids[i])))
            try:  # durability: cascade.send_cancels (NotReplicatedError ends the walk)
                if shard.transport.wait_args is not None:
                    replies = await shard.transport.call_waited(commands)
                else:
                    async with shard.redis.pipeline(transaction=False) as pipe:
                        for command in commands:
                            pipe.execute_command(*command)
                        replies = await pipe.execute(raise_on_error=False)
            except NotReplicatedError:
                raise  # every reply read: one by one would wait again, each
            except NETWORK_ERRORS:  # one by one (a cancel sent twice is harmless)
                replies = [RuntimeError("resend")] * (2 * len(positions))
            for j, i in enumerate(positions):
                reply, n = replies[2 * j], replies[2 * j + 1]
                bad = isinstance(reply, Exception)
                status = await self._cancel_one(ids[i], why, parent) if bad else cancel_reply(reply)
                out[i] = (status, isinstance(n, Exception) or int(n) > 0)
        return out
