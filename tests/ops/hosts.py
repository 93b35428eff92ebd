"""Host applications that mount the dashboard as their users would, and servers for them.

Each host has a page of its own at ``/`` and puts its own authentication (HTTP
Basic, as a stand-in for whatever the host uses) in front of the dashboard, which
it mounts at ``/admin/redflow``: a Flask app through werkzeug's
``DispatcherMiddleware`` (WSGI), a FastAPI app through ``a2wsgi.WSGIMiddleware``
(ASGI). The servers run in threads of the test process: werkzeug's threaded
development server and uvicorn.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tests.helpers import wait_until

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

MOUNT = "/admin/redflow"
USER, PASSWORD = "ops", "host-password-1"
HOST_HOME = "host application home"


def _basic_ok(header: str) -> bool:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return header == expected


class BasicAuth:
    """The host's auth in front of a WSGI app: HTTP Basic, 401 with a challenge."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not _basic_ok(environ.get("HTTP_AUTHORIZATION", "")):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="host"'), ("Content-Type", "text/plain")],
            )
            return [b"host login required\n"]
        return self.app(environ, start_response)


def flask_host(dashboard: WSGIApplication) -> WSGIApplication:
    """A Flask app with the dashboard at ``/admin/redflow`` behind Basic auth."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    host = Flask("redflow-test-host")

    @host.get("/")
    def home() -> str:
        return HOST_HOME

    host.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        host.wsgi_app, {MOUNT: BasicAuth(dashboard)}
    )
    return host


def fastapi_host(dashboard: WSGIApplication) -> Any:
    """A FastAPI app with the dashboard mounted at ``/admin/redflow`` behind Basic auth."""
    from a2wsgi import WSGIMiddleware
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import PlainTextResponse

    host = FastAPI()

    @host.get("/", response_class=PlainTextResponse)
    def home() -> str:
        return HOST_HOME

    @host.middleware("http")
    async def auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith(MOUNT) and not _basic_ok(
            request.headers.get("authorization", "")
        ):
            return PlainTextResponse(
                "host login required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="host"'},
            )
        return await call_next(request)

    host.mount(MOUNT, WSGIMiddleware(dashboard))  # type: ignore[arg-type]
    return host


@contextmanager
def serve_wsgi(app: WSGIApplication) -> Iterator[str]:
    """Serve a WSGI app on werkzeug's threaded server; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve an ASGI app on uvicorn in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # loop="asyncio": uvicorn 0.29-0.35's "auto" sets uvloop's policy for the whole
    # process once uvloop is installed (the dev extra has it), which would leak into
    # the later tests of this xdist worker
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 20, 0.02, "uvicorn to start")
        assert thread.is_alive(), "uvicorn stopped at start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
