"""A FastAPI application that enqueues redflow runs and awaits their results.

Install the ``web`` extra (``pip install -e '.[web]'``), then run the workflows
under a supervisor and the application under uvicorn, on the same Redis and
prefix (``REDFLOW_URL``, ``REDFLOW_PREFIX``)::

    redflow-supervisor --app web --procs 2 --module examples.web_flows
    uvicorn examples.fastapi_app:app --port 8000

    curl -X POST localhost:8000/reports -d '{"name": "march", "rows": 5000}'
    {"id": "01M9...", "status": "queued"}                        # 202: enqueued
    curl localhost:8000/runs/01M9...                             # its state
    curl -X POST 'localhost:8000/reports/wait?timeout=30' -d '{"name": "april"}'
    {"name": "april", "rows": 1000, "checksum": "..."}         # 200: awaited

One :class:`~redflow_mp.aio.AsyncClient` per process, created when the
application starts and closed when it stops, serves every request
concurrently: ``await report.arun(...)`` is one Redis round trip, and ``await
handle.result()`` waits on the run's completion channel without polling and
without holding a thread. Input that does not match the workflow's schema is
refused at enqueue (422); a run that fails or is canceled answers 409 with its
error, one that does not finish in time 504 (it goes on).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from examples import web_flows
from redflow_mp import (
    InputValidationError,
    ResultTimeoutError,
    RunCanceledError,
    RunFailedError,
)
from redflow_mp.aio import AsyncClient, create_async_client


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = create_async_client(
        os.environ.get("REDFLOW_URL", "redis://localhost:6379/0"),
        prefix=os.environ.get("REDFLOW_PREFIX", "redflow"),
    )
    app.state.redflow = client
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(title="redflow-mp web example", lifespan=lifespan)

# Checked before anything is enqueued: ``handle.result()`` refuses a negative or
# non-finite timeout, and a run enqueued first would be left with nobody to answer
# (and a 500). The cap bounds how long a request may hold its connection.
Timeout = Annotated[float, Query(gt=0, le=3600, description="seconds to await the run")]


def _client(request: Request) -> AsyncClient:
    client: AsyncClient = request.app.state.redflow
    return client


async def _input(request: Request) -> Any:
    try:
        return msgspec.json.decode(await request.body() or b"null")
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None


@app.post("/reports", status_code=202)
async def start_report(request: Request, priority: int | None = None) -> dict[str, Any]:
    """Enqueue a report and answer at once with its run id."""
    try:
        handle = await web_flows.report.arun(await _input(request), priority=priority)
    except (InputValidationError, ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from None
    return {"id": handle.id, "status": "queued"}


@app.post("/reports/wait")
async def run_report(request: Request, timeout: Timeout = 30.0) -> Any:
    """Enqueue a report and await its output (the request waits, not a thread)."""
    try:
        handle = await web_flows.report.arun(await _input(request))
    except InputValidationError as exc:
        raise HTTPException(422, str(exc)) from None
    return await _outcome(handle.id, handle.result(timeout=timeout))


@app.post("/urgent/wait")
async def run_urgent(request: Request, timeout: Timeout = 30.0) -> Any:
    """By name, as code without the Workflow object would start it; the client's
    registry (the default one, which ``web_flows`` filled) gives its priority."""
    handle = await _client(request).run_by_name("web-urgent-report", await _input(request))
    return await _outcome(handle.id, handle.result(timeout=timeout))


async def _outcome(run_id: str, result: Any) -> Any:
    try:
        return await result
    except (RunFailedError, RunCanceledError) as exc:
        error = msgspec.to_builtins(exc.error) if exc.error else None
        return JSONResponse({"id": run_id, "error": error}, status_code=409)
    except ResultTimeoutError:
        return JSONResponse({"id": run_id, "status": "still running"}, status_code=504)


# These two routes answer for any run id: an application with users checks on its
# own records that the caller may see or cancel ``run_id``. Run ids are not secrets
# (time-ordered; consecutive within one process and millisecond).
@app.get("/runs/{run_id}")
async def get_run(run_id: str, request: Request) -> Any:
    state = await _client(request).get_run(run_id)
    if state is None:
        raise HTTPException(404, f"no run {run_id}")
    return msgspec.to_builtins(state)


@app.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request) -> dict[str, Any]:
    return {"id": run_id, "canceled": await _client(request).cancel_run(run_id, "from the web")}


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Ready when Redis answers (the workflows synced by a supervisor are listed)."""
    workflows = await _client(request).list_workflows()
    return {"ok": True, "workflows": [w.name for w in workflows]}
