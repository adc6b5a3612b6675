"""Request bodies read safely: every JSON body, manifests (JSON or YAML), validation errors.

FastAPI parses a JSON body with ``json.loads``, which accepts NaN and Infinity, strings with lone
surrogates (``"\\ud800"``) and nesting until Python's recursion limit; each of those became a 500
later (a validation error that cannot be serialised, a label event that cannot be stored as UTF-8,
a RecursionError). Every router here is built with :class:`SafeRoute`, whose requests parse JSON
with :func:`oraculum.safe_parse.load_json`: such a body is a 422 naming the field and the problem
(413 when it has too many values), before any model sees it.

Manifests (``POST /experiments``, ``/preprocessingjobs``, the UWS facade) are parsed by
:func:`manifest_document` on a worker thread (PyYAML builds about 30,000 values a second), with
aliases counted before they are expanded and a depth limit (see :mod:`oraculum.safe_parse`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from oraculum.manifests import KINDS
from oraculum.safe_parse import DocumentError, Limits, load_json, load_yaml

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
#: A manifest is a few kB; these bound what parsing one may cost (about a second of CPU at most).
MANIFEST_LIMITS = Limits(depth=64, nodes=50_000, bytes=1024 * 1024)
#: Every other JSON body (the largest is a bulk label of 10,000 indices).
BODY_LIMITS = Limits(depth=32, nodes=100_000)


class SafeRequest(Request):
    """A request whose JSON body goes through :func:`oraculum.safe_parse.load_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = load_json(await self.body(), "the request body", BODY_LIMITS)
            except DocumentError as error:
                raise HTTPException(error.status, error.message) from None
        return self._json


class SafeRoute(APIRoute):
    """The route class of every router of the API (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe(request: Request) -> Response:
            return await handler(SafeRequest(request.scope, request.receive))

        return safe


def manifest_document(raw: bytes, content_type: str, origin: str) -> dict[str, Any]:
    """One manifest (a mapping) from a request body: YAML when the content type says so (or is
    text), else JSON. Blocking (YAML is slow): call it on a worker thread. :class:`DocumentError`
    naming the problem otherwise; never a crash, whatever the body."""
    content_type = content_type.split(";")[0].strip().lower()
    if content_type in YAML_TYPES or content_type.startswith("text/"):
        return manifest_text(raw, origin)
    if not raw.strip():
        raise DocumentError(f"{origin} is empty: send a manifest as JSON or YAML")
    return manifest_shape(load_json(raw, origin, MANIFEST_LIMITS), origin)


def manifest_text(raw: bytes | str, origin: str) -> dict[str, Any]:
    """One manifest from YAML (or JSON) text; see :func:`manifest_document`."""
    if not raw.strip():
        raise DocumentError(f"{origin} is empty: send a manifest as JSON or YAML")
    return manifest_shape(load_yaml(raw, origin, MANIFEST_LIMITS), origin)


def manifest_shape(document: Any, origin: str) -> dict[str, Any]:
    """The top of a manifest checked before the models see it: a mapping whose apiVersion and
    kind are text and whose metadata and spec are mappings (``kind: {}`` was a 500)."""
    if not isinstance(document, dict):
        raise DocumentError(f"{origin}: a manifest must be a mapping with apiVersion, kind, metadata and spec, "
                            f"not {_kind_of(document)}")
    for field in ("apiVersion", "kind"):
        if field in document and not isinstance(document[field], str):
            expected = " (one of " + ", ".join(KINDS) + ")" if field == "kind" else ""
            raise DocumentError(f"{origin}: {field} must be text{expected}, not {_kind_of(document[field])}")
    for field in ("metadata", "spec"):
        if field in document and not isinstance(document[field], dict):
            raise DocumentError(f"{origin}: {field} must be a mapping, not {_kind_of(document[field])}")
    return document


def _kind_of(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")


async def read_manifest(request: Request, origin: str, status: int | None = None) -> dict[str, Any]:
    """The request body as one manifest, parsed on a worker thread; an HTTPException with the
    parser's status (or ``status``) and message otherwise."""
    raw = await request.body()
    try:
        return await asyncio.to_thread(manifest_document, raw, request.headers.get("content-type", ""), origin)
    except DocumentError as error:
        raise HTTPException(status or error.status, error.message) from None


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry made printable: non-finite numbers as text, lone
    surrogates escaped. A validation error echoes the input it refused, and NaN or ``"\\ud800"``
    there made the 422 itself fail as a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, whatever the refused input holds."""
    return JSONResponse({"detail": json_safe(jsonable_encoder(error.errors()))}, status_code=422)
