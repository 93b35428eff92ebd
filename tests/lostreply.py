"""A TCP proxy (loopback, threads) that loses one reply after the server ran its
command: a real network fault at the point where a client cannot tell whether
its call was applied.

``ReplyDropper(port).start()`` forwards both ways; ``drop_reply(request=b"x")``
arms it: the first request (client to server bytes) containing ``x`` is
forwarded, and the server's reply to it, once it arrives (the command ran), is
not relayed: that connection is reset instead. ``drop_reply(reply=b"y")`` drops
the first reply containing ``y`` the same way. ``dropped`` is set once it has
happened. Other connections and later ones flow normally.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["ReplyDropper"]

_CHUNK = 65536


def _rst(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0); the shutdown wakes this socket's other pump,
    blocked in recv (a close alone waits for it to return before anything is sent)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    def __init__(self, proxy: ReplyDropper, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection(proxy.target)
        self.doom_next_reply = False  # the next server bytes are the reply to drop

    def start(self) -> None:
        for target in (self._up, self._down):
            threading.Thread(target=target, daemon=True, name="lostreply-pump").start()

    def close(self) -> None:
        _rst(self.client)
        _rst(self.upstream)

    def _up(self) -> None:  # client -> server
        try:
            while True:
                data = self.client.recv(_CHUNK)
                if not data:
                    break
                if self.proxy._take(request=data):
                    self.doom_next_reply = True
                self.upstream.sendall(data)
        except OSError:
            pass
        self.close()

    def _down(self) -> None:  # server -> client
        try:
            while True:
                data = self.upstream.recv(_CHUNK)
                if not data:
                    break
                if self.doom_next_reply or self.proxy._take(reply=data):
                    self.proxy.dropped.set()
                    break  # the server ran it; its reply is lost with the connection
                self.client.sendall(data)
        except OSError:
            pass
        self.close()


class ReplyDropper:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._request: bytes | None = None
        self._reply: bytes | None = None
        self._pairs: list[_Pair] = []
        self.dropped = threading.Event()

    def start(self) -> ReplyDropper:
        threading.Thread(target=self._accept, daemon=True, name="lostreply-accept").start()
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def drop_reply(self, *, request: bytes | None = None, reply: bytes | None = None) -> None:
        with self._lock:
            self._request, self._reply = request, reply
            self.dropped.clear()

    def _take(self, *, request: bytes | None = None, reply: bytes | None = None) -> bool:
        """Whether these bytes match the armed marker (disarmed by a match)."""
        with self._lock:
            if request is not None and self._request is not None and self._request in request:
                self._request = None
                return True
            if reply is not None and self._reply is not None and self._reply in reply:
                self._reply = None
                return True
            return False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                pair = _Pair(self, client)
            except OSError:
                _rst(client)
                continue
            self._pairs.append(pair)
            pair.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        for pair in self._pairs:
            pair.close()
