"""Health, readiness and Prometheus metrics (no authentication: probes and scrapers), and whoami."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ..auth import Principal
from ..bodies import SafeRoute
from ..deps import State, require
from ..live import LiveUnavailable
from ..models import Health, WhoAmI

router = APIRouter(tags=["health"], route_class=SafeRoute)
api = APIRouter(tags=["health"], route_class=SafeRoute)


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="Readiness: the store, the live state (Redis) and the backend can be reached")
async def readyz(state: State, response: Response) -> Health:
    checks: dict[str, str] = {}

    async def check(name: str, coro: object) -> None:
        try:
            await asyncio.wait_for(coro, timeout=3.0)  # type: ignore[arg-type]
            checks[name] = "ok"
        except (LiveUnavailable, asyncio.TimeoutError, Exception) as error:  # noqa: BLE001 - reported, not raised
            checks[name] = f"{type(error).__name__}: {error}"[:300]

    await check("store", state.io(state.store.exists, "local/.readyz"))
    await check(f"live ({state.live.kind})", state.live.ping())
    await check(f"backend ({state.backend.name})", state.backend.ping())
    ok = all(value == "ok" for value in checks.values())
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "unavailable", checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@api.get("/whoami", response_model=WhoAmI, summary="The caller's name and role")
async def whoami(principal: Annotated[Principal, Depends(require("any"))]) -> WhoAmI:
    return WhoAmI(name=principal.name, role=principal.role)
