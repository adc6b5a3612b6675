"""``docs/reference/openapi.json`` and ``docs/reference/api.md``, generated from the application itself.

The OpenAPI document is what ``/openapi.json`` serves; the Markdown page lists every endpoint with
its method, path, the role it needs and its summary. The role is read from the route's dependency
tree (the ``require(<role>)`` dependencies of :mod:`oraculum.api.deps`), so the table cannot claim
a role the code does not enforce. Both are checked by ``oraculum docs --check``.

It lives in the API package, not in the core, because it needs FastAPI; see :mod:`oraculum.docs.pages`.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from oraculum.docs.page import Page, banner, table

from .app import create_app
from .auth import TokenTable

__all__ = ["api_pages", "endpoint_rows", "openapi_document", "required_role"]

_ROLE_PREFIX = "require_"
#: How a role reads in the table; ``any`` is every valid token whatever its role, ``signature`` a
#: signed link instead of a token (oraculum.api.links).
_ROLE_TEXT = {"any": "any token", "viewer": "viewer", "oracle": "oracle", "admin": "admin", "worker": "worker (or admin)",
              "signature": "signed link (no token)"}


def _app() -> FastAPI:
    """The application as served, built without tokens: none is needed to describe it, and none
    may leak into the docs (the "no tokens" warning is silenced, it concerns serving only)."""
    logger = logging.getLogger("oraculum.api")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return create_app(tokens=TokenTable([]))
    finally:
        logger.setLevel(level)


def openapi_document(app: FastAPI | None = None) -> str:
    """The OpenAPI schema as stable, indented JSON with a final newline."""
    return json.dumps((app or _app()).openapi(), indent=2, ensure_ascii=False) + "\n"


def required_role(dependant: Dependant) -> str | None:
    """The role a route's dependencies require (the strictest when several), or ``None`` if public."""
    found = []
    stack = [dependant]
    while stack:
        node = stack.pop()
        name = getattr(node.call, "__name__", "")
        if name.startswith(_ROLE_PREFIX):
            found.append(name.removeprefix(_ROLE_PREFIX))
        stack.extend(node.dependencies)
    order = ["signature", "any", "viewer", "worker", "oracle", "admin"]
    return max(found, key=order.index) if found else None


def _routes_by_operation(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Every API route under its (method, full path), across included routers."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x keeps included routers nested
    except ImportError:  # older FastAPI: app.routes is already flat
        flat = [(route.path_format, route) for route in app.routes if isinstance(route, APIRoute)]
    else:
        flat = [(context.path_format or context.path or "", context.original_route)
                for context in iter_route_contexts(app.routes) if isinstance(context.original_route, APIRoute)]
    return {(method, path): route for path, route in flat for method in route.methods}


def endpoint_rows(app: FastAPI | None = None) -> list[tuple[str, str, str, str, str]]:
    """(method, path, role, summary, tag) for every operation in the OpenAPI document, in its order.

    The document decides what is listed (what a client can see); the route's dependencies decide
    the role. An operation whose route cannot be found is an error, not a guess."""
    app = app or _app()
    routes = _routes_by_operation(app)
    rows = []
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((method.upper(), path))
            if route is None:
                raise LookupError(f"no route serves {method.upper()} {path}: cannot tell which role it needs")
            role = required_role(route.dependant)
            role_text = _ROLE_TEXT.get(role, role) if role else "none (public)"
            tags = operation.get("tags") or ["other"]
            rows.append((method.upper(), path, role_text, operation.get("summary", ""), str(tags[0])))
    return rows


def _markdown(rows: list[tuple[str, str, str, str, str]], info: dict[str, Any]) -> str:
    parts = [
        banner("the FastAPI application (oraculum.api.app)"),
        f"# API reference ({info.get('title', 'oraculum API')} {info.get('version', '')})\n",
        "Every endpoint of `oraculum serve api`, with the role its token needs. Authenticate with "
        "`Authorization: Bearer <token>`; roles are ordered viewer < oracle < admin, and a worker token "
        "(a Job's) may only report progress. No token or an unknown one: 401; a role that may not: 403. "
        "The full schema of every request and response is [openapi.json](openapi.json) (also served "
        "at `/openapi.json`, browsable at `/docs`); how the gateway stores labels and fails is in "
        "[../api.md](../api.md).\n",
    ]
    for tag in dict.fromkeys(row[4] for row in rows):
        parts.append(f"## {tag}\n")
        parts.append(table(["method", "path", "role", "summary"],
                           [(m, f"`{p}`", r, s) for m, p, r, s, t in rows if t == tag]))
    return "\n".join(parts)


@functools.cache
def api_pages() -> tuple[Page, ...]:
    """The generated API reference pages (paths relative to the repository root). Built once per
    process: the routes cannot change while it runs, and building the app takes seconds."""
    app = _app()
    return (
        Page("docs/reference/openapi.json", openapi_document(app)),
        Page("docs/reference/api.md", _markdown(endpoint_rows(app), app.openapi().get("info", {}))),
    )
