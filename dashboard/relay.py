"""An API answer passed on as the dashboard's own: the browser's authenticated proxy
(``<prefix>_oraculum/api/v1/...``) and the door to signed links for SAMP tools
(``<prefix>_oraculum/shared/...``) both forward one request to the API and hand its answer back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flask
import httpx

from .client import ApiClient


def relay(client: ApiClient, method: str, path: str, *, params: Any = None, content: bytes | None = None,
          headers: dict[str, str] | None = None, keep: Iterable[str] = (), default_type: str = "application/json",
          ) -> flask.Response:
    """The API's answer to ``method path`` with its status, type and the ``keep`` headers; 502 with
    the reason when the API cannot be reached."""
    try:
        upstream = client.http.request(method, path, params=params, content=content, headers=headers)
    except httpx.HTTPError as error:
        failed = flask.jsonify(detail=f"the API at {client.base_url} cannot be reached: {error}")
        failed.status_code = 502
        return failed
    response = flask.Response(upstream.content, status=upstream.status_code,
                              content_type=upstream.headers.get("content-type", default_type))
    for header in keep:
        if header in upstream.headers:
            response.headers[header] = upstream.headers[header]
    return response
