"""Per-token rate limits of the expensive endpoints: 429 with Retry-After beyond them.

Each kind of expensive work has a token bucket per API token (per principal name): ``burst``
requests at once, refilled at ``per_second``. ``ORACULUM_API_RATE_LIMITS`` sets them
(``kind=per_second/burst,...``; empty: none):

========= ============================================================== =========
kind      endpoints                                                      default
========= ============================================================== =========
logs      ``GET .../labels/events`` (lists and reads every stored event)  2/s, 20
maps      ``GET .../iterations/{k}/map``                                  5/s, 30
exports   ``GET .../candidates.csv``, ``.../candidates.vot``               2/s, 20
raw       ``GET /datasets/{d}/spectra/{i}/raw`` (reads the archive file) 10/s, 60
uploads   every ``/uploads`` route                                       50/s, 500
========= ============================================================== =========

The buckets live in the live state: in Redis (one Lua script, :data:`redis_scripts.TAKE`, by
Redis's clock) they are shared by every replica; in-process otherwise. When Redis cannot be
reached the request goes through (a limit is not worth an outage; it is logged).

Why not a library: ``limits``/``slowapi`` would bring a second Redis client and connection pool
with failure handling of their own, for what is one short script beside the gateway's existing
ones (:mod:`oraculum.api.redis_scripts`) plus a few lines in-process.
"""

import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from .auth import Principal
from .deps import ROLE_DEPENDENCIES, get_state
from .live import LiveUnavailable

log = logging.getLogger("oraculum.api")

KINDS = ("logs", "maps", "exports", "raw", "uploads")
_RATE = re.compile(r"^\s*([a-z]+)\s*=\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]+)\s*$")


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


def parse_rates(text: str) -> dict[str, Rate]:
    """``kind=per_second/burst,...`` (``ORACULUM_API_RATE_LIMITS``); ValueError naming the part."""
    rates: dict[str, Rate] = {}
    for part in filter(str.strip, text.split(",")):
        match = _RATE.match(part)
        if match is None:
            raise ValueError(f"ORACULUM_API_RATE_LIMITS: {part.strip()!r} is not kind=per_second/burst, e.g. logs=2/20")
        kind, per_second, burst = match.group(1), float(match.group(2)), int(match.group(3))
        if kind not in KINDS:
            raise ValueError(f"ORACULUM_API_RATE_LIMITS: unknown kind {kind!r}: use {', '.join(KINDS)}")
        if per_second <= 0 or burst < 1:
            raise ValueError(f"ORACULUM_API_RATE_LIMITS: {part.strip()!r}: the rate must be above 0 and the burst at least 1")
        rates[kind] = Rate(per_second, burst)
    return rates


#: What the limited routes add to their documented answers.
LIMITED = {429: {"description": "too many requests of this kind from this token: wait `Retry-After` seconds"}}


def limited(kind: str, role: str = "viewer") -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates (as ``role``, the same dependency the route uses, so it
    runs once) and takes one request from the caller's bucket of ``kind``: 429 when it is empty.
    (This module has no ``from __future__ import annotations``: FastAPI reads the annotation of
    the inner function, which names a local.)"""
    assert kind in KINDS, kind

    caller = Annotated[Principal, Depends(ROLE_DEPENDENCIES[role])]

    async def dependency(request: Request, principal: caller) -> Principal:  # type: ignore[valid-type]
        rate = request.app.state.rates.get(kind)
        if rate is None:
            return principal
        state = get_state(request)
        try:
            wait = await state.live.take(f"{kind}:{principal.name}", rate.per_second, rate.burst)
        except LiveUnavailable as error:
            log.warning("rate limit of %s not checked (live state unavailable): %s", kind, error)
            return principal
        if wait > 0:
            state.metrics.rate_limited.labels(kind=kind).inc()
            seconds = max(1, math.ceil(wait))
            raise HTTPException(429, f"{principal.name}: more than {rate.burst} requests of this kind ({kind}) at once, or "
                                     f"{rate.per_second:g} a second: try again in {seconds} s",
                                headers={"Retry-After": str(seconds)})
        return principal

    dependency.__name__ = f"rate_limit_{kind}"
    return dependency


def limit(kind: str, role: str = "viewer") -> Any:
    """``Depends(limited(kind, role))``, for a route's or a router's ``dependencies``."""
    return Depends(limited(kind, role))
