"""``RunHandle`` and ``AsyncRunHandle``: a reference to one run, typed by the
output of its workflow.

A handle holds a run id and the client that made it, and asks that client to
wait for the run, read it or cancel it. It is generic in the workflow's output
type ``O``, so ``Workflow[I, O].run(...)`` gives a ``RunHandle[O]`` whose
:meth:`RunHandle.result` is typed ``O`` for a type checker; ``await
Workflow[I, O].arun(...)`` gives an ``AsyncRunHandle[O]`` whose methods are
coroutines.

The owner is described by a protocol (what a handle needs of a client), so this
module sits below the client and the workflow definitions that both use it.
"""

from __future__ import annotations

import sys
from typing import Any, Generic, Protocol, cast

from .codec import RunState

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:
    from typing_extensions import TypeVar

__all__ = ["AsyncHandleOwner", "AsyncRunHandle", "HandleOwner", "RunHandle"]

# The output type; it defaults to Any, so a bare ``RunHandle`` annotation stays valid.
O = TypeVar("O", default=Any)  # noqa: E741


class HandleOwner(Protocol):
    """What a handle needs of its client (a :class:`~redflow_mp.client.Client` is one)."""

    def wait_result(self, run_id: str, timeout: float | None = None) -> Any: ...

    def get_run(self, run_id: str) -> RunState | None: ...

    def cancel_run(self, run_id: str, reason: str | None = None) -> bool: ...

    def send_event(
        self, run_id: str, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool: ...


class RunHandle(Generic[O]):
    """A reference to one run: wait for it, read it, cancel it."""

    __slots__ = ("_client", "id")

    def __init__(self, client: HandleOwner, run_id: str) -> None:
        self._client = client
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def result(self, timeout: float | None = None) -> O:
        """Wait for the run to end and return its output.

        The value is the output's JSON round trip (a Struct comes back as a dict);
        its static type is the handler's return type.

        Raises:
            RunFailedError: the run failed (``.error`` holds type, message, traceback).
            RunCanceledError: the run was canceled.
            ResultTimeoutError: ``timeout`` seconds passed first (the run goes on).
            RedflowError: the run does not exist, or its status is one this version
                does not know (``RunStatus.known``: a newer version's, a neighbour's
                write), whose end it cannot tell.

        Redis trouble that passes (a lost connection, a cluster failing over,
        ``BUSY`` while another program's script runs) is waited out until then.
        """
        return cast(O, self._client.wait_result(self.id, timeout))

    def state(self) -> RunState | None:
        """The run's current state, or None if it no longer exists."""
        return self._client.get_run(self.id)

    def cancel(self, reason: str | None = None) -> bool:
        """Request cancellation; see :meth:`Client.cancel_run`."""
        return self._client.cancel_run(self.id, reason)

    def send_event(
        self, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool:
        """Send ``event`` to this run (wakes it if it waits for it); see
        :meth:`Client.send_event`. False when the run is unknown or finished;
        with an ``idempotency_key``, at most one event per key is stored."""
        return self._client.send_event(self.id, event, payload, idempotency_key=idempotency_key)


class AsyncHandleOwner(Protocol):
    """What an async handle needs of its client (an ``AsyncClient`` is one)."""

    async def wait_result(self, run_id: str, timeout: float | None = None) -> Any: ...

    async def get_run(self, run_id: str) -> RunState | None: ...

    async def cancel_run(self, run_id: str, reason: str | None = None) -> bool: ...

    async def send_event(
        self, run_id: str, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool: ...


class AsyncRunHandle(Generic[O]):
    """A reference to one run, for asyncio code: ``await`` its methods."""

    __slots__ = ("_client", "id")

    def __init__(self, client: AsyncHandleOwner, run_id: str) -> None:
        self._client = client
        self.id = run_id

    def __repr__(self) -> str:
        return f"<AsyncRunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncRunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def result(self, timeout: float | None = None) -> O:
        """Wait for the run to end and return its output; see :meth:`RunHandle.result`.

        Raises:
            RunFailedError: the run failed (``.error`` holds type, message, traceback).
            RunCanceledError: the run was canceled.
            ResultTimeoutError: ``timeout`` seconds passed first (the run goes on).
            RedflowError: the run does not exist or has a status this version does
                not know.
        """
        return cast(O, await self._client.wait_result(self.id, timeout))

    async def state(self) -> RunState | None:
        """The run's current state, or None if it no longer exists."""
        return await self._client.get_run(self.id)

    async def cancel(self, reason: str | None = None) -> bool:
        """Request cancellation; see ``AsyncClient.cancel_run``."""
        return await self._client.cancel_run(self.id, reason)

    async def send_event(
        self, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool:
        """Send ``event`` to this run; see ``AsyncClient.send_event``."""
        return await self._client.send_event(
            self.id, event, payload, idempotency_key=idempotency_key
        )
