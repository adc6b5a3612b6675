"""How uvicorn serves the gateway: connection limits that uvicorn has no setting for.

uvicorn times out an idle keep-alive connection (``timeout_keep_alive``), but a connection that
is open and has not finished sending a request's headers is kept for ever: 1,500 half-sent
requests stayed open, each a socket and a parser. And uvicorn's default parser (httptools) does
not bound the size of a request's headers (only its h11 parser has
``h11_max_incomplete_event_size``). :class:`GuardedHttpToolsProtocol` adds both:

* the request line and headers must arrive within ``ORACULUM_API_HEADER_TIMEOUT`` seconds of the
  connection opening (or of the first byte of the next request on a kept-alive connection);
  otherwise 408 and the connection is closed;
* they may hold at most ``ORACULUM_API_MAX_HEADER_BYTES``; beyond that 431 and close.

A body is not timed here: the body limit (413) bounds its size, and a handler reading it is an
ordinary awaiting task, not a parser holding a connection before the app knows of it.

``oraculum serve api`` passes :func:`uvicorn_options` to ``uvicorn.run``; behind gunicorn
(``-k uvicorn.workers.UvicornWorker``) set the worker's ``http`` to this class in the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from oraculum.settings import Settings

log = logging.getLogger("oraculum.api")

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without its [standard] extras
    httptools = None
    HttpToolsProtocol = object  # type: ignore[assignment, misc]


def _answer(status: bytes, message: str) -> bytes:
    body = message.encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's httptools protocol with a header deadline and a header size limit (see the
    module docstring); the class attributes are set by :func:`configure`."""

    header_timeout = 10.0
    max_header_bytes = 32 * 1024

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._head_timer: Any = None
        self._head_bytes = 0
        self._head_too_large = False
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_answer(b"408 Request Timeout", f"the request's headers did not arrive within "
                                                                 f"{self.header_timeout:g} s"))
            self.transport.close()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise ValueError("request headers too large")  # stops the parser: send_400_response answers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self._disarm()
        self.transport.write(_answer(b"431 Request Header Fields Too Large",
                                     f"the request line and headers are larger than {self.max_header_bytes} bytes"))
        self.transport.close()


def configure(settings: Settings) -> None:
    """Set the limits of :class:`GuardedHttpToolsProtocol` (each worker process does, as it
    builds its app)."""
    GuardedHttpToolsProtocol.header_timeout = float(settings.api_header_timeout)
    GuardedHttpToolsProtocol.max_header_bytes = int(settings.api_max_header_bytes)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``uvicorn.run`` gets besides the app, host, port and workers."""
    configure(settings)
    options: dict[str, Any] = {
        "timeout_keep_alive": settings.api_keep_alive_timeout,
        "h11_max_incomplete_event_size": settings.api_max_header_bytes,  # when h11 parses
    }
    if httptools is not None:
        options["http"] = GuardedHttpToolsProtocol
    else:  # pragma: no cover
        log.warning("httptools is not installed: requests are parsed by h11, without a header deadline")
        options["http"] = "h11"
    return options
