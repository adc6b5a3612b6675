"""An oraculum API error and its message, for every client of the API (notebooks, the dashboard).

Kept apart from :mod:`oraculum.client.rest` so that a caller which only needs the message (the
dashboard's server, at start-up) does not import numpy and astropy with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["ClientError", "detail_message", "response_error"]


class ClientError(Exception):
    """The API refused a call (``status``: the HTTP status, 0 when it could not be reached);
    ``message`` is the API's own explanation, ``detail`` its whole answer (e.g. the offset to
    resume an upload from, or which items are missing from an incomplete batch)."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


def detail_message(detail: Any, fallback: str) -> str:
    """A one-line message from the ``detail`` of an API error: its message (with who holds the
    items of a 409 claim conflict), the fields and reasons of a validation error, or ``fallback``."""
    if isinstance(detail, dict):
        text = str(detail.get("message") or detail)
        holders = detail.get("holders")
        if holders:
            text += ": " + ", ".join(f"#{index} by {who}" for index, who in list(holders.items())[:5])
        return text
    if isinstance(detail, list):  # pydantic validation errors: where and what
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
                         for e in detail[:5] if isinstance(e, dict)) or fallback
    return str(detail) if detail is not None else fallback


def response_error(response: httpx.Response, limit: int = 500) -> tuple[str, Any]:
    """(message, detail) of a failed API response: the JSON ``detail`` the API sends, else the
    first ``limit`` characters of the body (a proxy's or gateway's page), else the reason phrase."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        detail = response.text[:limit] or response.reason_phrase
    return detail_message(detail, response.reason_phrase), detail
