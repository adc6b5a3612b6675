"""Server-sent events of an experiment, for live dashboards.

The stream starts with ``ready`` (subscribed: nothing published afterwards is missed) and a
``status`` event, then carries what happens: ``label``, ``labels-submitted``, ``lock``/``unlock``,
``progress`` (from Jobs), ``suspended``/``resumed``/``deleted``, and ``status`` again whenever the
experiment's phase, iteration or batch progress changes (looked at every few seconds). Events come
through Redis pub/sub when Redis is configured, so every replica's events reach every dashboard;
in-process otherwise. ``max_events`` and ``timeout`` end the stream (for scripts and tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from ..bodies import SafeRoute
from ..deps import ExperimentName, State, Viewer
from ..live import LiveUnavailable
from ..state import EXPERIMENT, AppState

router = APIRouter(prefix="/experiments/{name}", tags=["events"], route_class=SafeRoute)

KEEPALIVE_SECONDS = 15.0
STATUS_POLL_SECONDS = 3.0


def _frame(kind: str, data: dict[str, Any], number: int) -> str:
    return f"id: {number}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _status(state: AppState, name: str) -> dict[str, Any] | None:
    # one backend read per second for all the streams of an experiment, not one per stream and poll
    resource = await state.find(EXPERIMENT, name, ttl=1.0)
    if resource is None:
        return None
    status = resource.status or {}
    return {"phase": status.get("phase") or "Pending", "iteration": status.get("iteration") or 0,
            "message": status.get("message") or "", "batch": status.get("batch"),
            "suspended": bool((resource.spec or {}).get("suspend"))}


async def stream(state: AppState, request: Request, name: str, max_events: int | None,
                 timeout: float | None) -> AsyncIterator[str]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        try:
            async for event in _subscription(state, name):
                if queue.full():
                    continue
                queue.put_nowait(event)
        except LiveUnavailable as error:
            queue.put_nowait({"type": "error", "message": f"live events unavailable: {error}"})

    task = asyncio.create_task(pump())
    state.metrics.event_streams.inc()
    sent = 0
    deadline = time.monotonic() + timeout if timeout else None
    try:
        first = await asyncio.wait_for(queue.get(), timeout=10.0)
        if first.get("type") != "_subscribed":
            yield _frame("error", first, 0)
            return
        sent += 1  # max_events counts every event, ready and the first status included
        yield _frame("ready", {"experiment": name}, sent)
        last_status = await _status(state, name)
        sent += 1
        yield _frame("status", last_status or {}, sent)
        last_poll = time.monotonic()
        last_write = time.monotonic()
        while max_events is None or sent < max_events:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = min(KEEPALIVE_SECONDS - (now - last_write), STATUS_POLL_SECONDS - (now - last_poll), 1.0)
            if deadline is not None:
                wait = min(wait, deadline - now)
            try:
                event = await asyncio.wait_for(queue.get(), timeout=max(wait, 0.01))
            except asyncio.TimeoutError:
                event = None
            if await request.is_disconnected():
                break
            if event is not None:
                sent += 1
                last_write = time.monotonic()
                yield _frame(str(event.get("type", "message")), event, sent)
                if event.get("type") == "deleted":
                    break
                continue
            if time.monotonic() - last_poll >= STATUS_POLL_SECONDS:
                last_poll = time.monotonic()
                status = await _status(state, name)
                if status != last_status:
                    last_status = status
                    sent += 1
                    last_write = time.monotonic()
                    yield _frame("status", status or {"deleted": True}, sent)
            if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                last_write = time.monotonic()
                yield ": keepalive\n\n"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        state.metrics.event_streams.dec()


async def _subscription(state: AppState, name: str) -> AsyncIterator[dict[str, Any]]:
    async for event in state.live.subscribe(name):
        yield state.finish_event(name, event)


@router.get("/events", summary="Server-sent events of the experiment (labels, progress, status changes)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def events(state: State, _: Viewer, request: Request, name: ExperimentName,
                 max_events: Annotated[int | None, Query(ge=1, le=100_000, description="Stop after this many events.")] = None,
                 timeout: Annotated[float | None, Query(gt=0, le=86_400, description="Stop after this many seconds.")] = None,
                 ) -> StreamingResponse:
    await state.resource(EXPERIMENT, name)  # 404 before the stream starts
    return StreamingResponse(stream(state, request, name, max_events, timeout), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
