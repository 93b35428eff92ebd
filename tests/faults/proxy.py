"""A small TCP proxy for connection faults, run by asyncio in a background thread.

Processes under test connect to the proxy instead of Redis; the test thread
switches the proxy between:

    pass        bytes flow both ways (the default)
    cut         every open connection is reset (RST) and new ones are reset on accept
    blackhole   nothing flows: open connections stall with their bytes held, new
                connections are accepted and stall too
    restore     bytes flow again. ``heal=True``: held connections resume and their
                held bytes are delivered late (a partition that heals).
                ``heal=False``: connections held by the blackhole stay silent
                forever, neither delivering nor closing (a middlebox that lost
                their state); only new connections work.

Loopback only: it listens on 127.0.0.1 and forwards to the given local address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Proxy"]

_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Conn:
    def __init__(self, proxy: Proxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.doomed = False  # held by a blackhole that ended without healing

    async def gate(self) -> None:
        """Wait until bytes may flow for this connection."""
        while self.doomed or not self.proxy._flowing.is_set():
            if self.doomed:
                await asyncio.Event().wait()  # forever (until the task is cancelled)
            await self.proxy._flowing.wait()

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class Proxy:
    """``Proxy(port).start()``; then ``cut()``, ``blackhole()``, ``restore(heal=...)``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = "pass"
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="faults-proxy", daemon=True)
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event
        self._started = threading.Event()

    # ------------------------------------------------------------ thread side

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._started.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        if self._server is not None:
            self._loop.run_until_complete(self._server.wait_closed())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _serve(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "cut":
            _reset(writer)
            return
        conn = _Conn(self, writer)
        self._conns.add(conn)
        try:
            await conn.gate()
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            conn.upstream = up_writer
            self._spawn(self._pump(reader, up_writer, conn))
            await self._pump(up_reader, writer, conn)
        except (OSError, asyncio.IncompleteReadError):
            conn.reset()
        except asyncio.CancelledError:
            conn.reset()  # proxy stopping
        finally:
            self._conns.discard(conn)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        try:
            while True:
                await conn.gate()
                data = await src.read(_CHUNK)
                await conn.gate()  # bytes read before a blackhole are held, not sent
                if not data:
                    dst.close()
                    return
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            conn.reset()

    # ------------------------------------------------------------ test side

    def _call(self, fn: Any) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def start(self) -> Proxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def url(self, redis_url: str) -> str:
        """``redis_url`` rewritten to go through the proxy."""
        parts = urlsplit(redis_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        netloc[-1] = host
        return urlunsplit((parts.scheme, "@".join(netloc), parts.path, parts.query, ""))

    def cut(self) -> None:
        def do() -> None:
            self.mode = "cut"
            for conn in list(self._conns):
                conn.reset()

        self._call(do)

    def blackhole(self) -> None:
        def do() -> None:
            self.mode = "blackhole"
            self._flowing.clear()

        self._call(do)

    def restore(self, *, heal: bool = True) -> None:
        def do() -> None:
            if self.mode == "blackhole" and not heal:
                for conn in self._conns:
                    conn.doomed = True
            self.mode = "pass"
            self._flowing.set()

        self._call(do)

    def stop(self) -> None:
        def do() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.reset()
            self._loop.stop()

        if self._thread.is_alive():
            self._call(do)
            self._thread.join(10)
