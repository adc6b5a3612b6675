"""HTTP for the VO sources: retries with exponential backoff, streaming downloads with sha256.

One policy for every request oraculum makes to an archive (the VOTable or index page itself,
DataLink calls, SODA cutouts, the spectra): a 5xx answer, a timeout, a dropped connection or a
transfer shorter than its ``Content-Length`` is tried again after ``backoff * 2**attempt`` seconds
(with jitter, and never sooner than a ``Retry-After`` asks); any other 4xx is final at once,
because asking again cannot change "not found" or "forbidden". 408 and 429 are the two 4xx
answers that mean "later", so they are retried too.

A failure is a :class:`FetchError` carrying the URL, the HTTP status (if there was one), a reason
a person can act on, and how many attempts were made: the fetch report is built from these. A
reason never quotes the answer (not even the server's reason phrase): reports and rejected-file
lists are readable by every viewer, and a fetch may have reached a server they cannot.

Every request obeys the outbound fetch policy (:mod:`oraculum.vo.policy`): only http(s); the
connection is opened by :class:`PolicyBackend` to an address the policy checked (the host's DNS
answer resolved once, checked, and that address connected to); redirects are followed here, hop
by hop, each one checked again; a file is cut off at the policy's size cap. A refusal is final
(never retried).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpcore
import httpx

from oraculum import __version__
from oraculum.vo.policy import OutboundPolicy, PolicyViolation

log = logging.getLogger(__name__)

#: 4xx statuses that are worth asking again (request timeout, too many requests).
RETRYABLE_4XX = frozenset({408, 429})

Params = Mapping[str, str | Sequence[str]] | None


class FetchError(Exception):
    """A request that failed for good: ``url``, ``status`` (None without an answer), ``reason``."""

    def __init__(self, url: str, reason: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(f"{url}: {reason}" + (f" (after {attempts} attempts)" if attempts > 1 else ""))
        self.url = url
        self.reason = reason
        self.status = status
        self.attempts = attempts


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``retries`` extra attempts, ``backoff * 2**k`` s apart (capped), ``timeout`` s
    per connect/read (not for the whole transfer: a slow big file is fine while bytes flow)."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 60.0
    timeout: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential with +-25 % jitter, so that many
        workers that failed together do not come back together."""
        base = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.75, 1.25)
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_backoff))
        return base


@dataclass(frozen=True)
class Download:
    """A finished download in a local temporary file."""

    url: str
    path: Path
    sha256: str
    size: int
    content_type: str
    attempts: int


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare from archives; the exponential delay applies
        return None


def _status_problem(response: httpx.Response, url: str) -> _Retryable | FetchError | None:
    """None for a success; a retryable problem for 5xx/408/429; a final error for other 4xx (for
    ``url``, the URL asked for, not where redirects led). The reason has the standard phrase of
    the status, not the one the server sent."""
    status = response.status_code
    if status < 400:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    reason = f"HTTP {status} {phrase}".rstrip()
    if status >= 500 or status in RETRYABLE_4XX:
        return _Retryable(reason, status, _retry_after(response))
    return FetchError(url, reason, status)


class PolicyBackend(httpcore.SyncBackend):
    """Opens every connection to an address the outbound policy checked: the host is resolved
    once, every address of the answer is checked, and the socket connects to those addresses
    (TLS still verifies the certificate against the host name)."""

    def __init__(self, outbound: OutboundPolicy) -> None:
        self.outbound = outbound

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for _, address in self.outbound.addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise PolicyViolation("Unix sockets are not fetched from")


class PolicyTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool on :class:`PolicyBackend`. Giving a client a
    transport also turns off the proxies of the environment, whose DNS the policy cannot check."""

    def __init__(self, outbound: OutboundPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):  # an httpx that changed inside
            raise RuntimeError("httpx.HTTPTransport has no connection pool to put the fetch policy on")
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PolicyBackend(outbound),
        )


class HttpClient:
    """A thread-safe HTTP client with the retry policy and the outbound fetch policy (``outbound``,
    by default the one of the environment's settings); ``concurrency`` bounds open connections."""

    def __init__(self, policy: RetryPolicy | None = None, concurrency: int = 8,
                 sleep: Callable[[float], None] = time.sleep, *, outbound: OutboundPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.outbound = outbound or OutboundPolicy.from_settings()
        self._sleep = sleep
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.policy.timeout),
            transport=PolicyTransport(self.outbound, limits),
            follow_redirects=False,  # followed by _open, every hop checked
            headers={"User-Agent": f"oraculum/{__version__} (spectra fetch)", "Accept-Encoding": "identity"},
        )
        self._requests = 0
        self._lock = threading.Lock()

    @property
    def requests(self) -> int:
        """Requests sent so far (every attempt counts)."""
        return self._requests

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attempts(self, url: str, attempt_once: Callable[[], Any]) -> Any:
        """Run ``attempt_once`` until it returns, retrying :class:`_Retryable` by the policy."""
        last: _Retryable | None = None
        for attempt in range(self.policy.retries + 1):
            if attempt:
                assert last is not None
                self._sleep(self.policy.delay(attempt - 1, last.retry_after))
            with self._lock:
                self._requests += 1
            try:
                result = attempt_once()
            except _Retryable as problem:
                last = problem
                continue
            except PolicyViolation as refused:
                raise FetchError(url, refused.reason, attempts=attempt + 1) from None
            except httpx.TimeoutException as error:
                last = _Retryable(f"timed out ({type(error).__name__})")
                continue
            except httpx.ConnectError as error:  # refused, unreachable: the system's words, not the peer's
                last = _Retryable(f"connection failed ({type(error).__name__}: {error})")
                continue
            except httpx.TransportError as error:  # reset, peer closed early, a malformed answer
                log.info("%s: %s: %s", url, type(error).__name__, error)  # the details (may quote the answer)
                last = _Retryable(f"connection failed ({type(error).__name__})")
                continue
            except httpx.DecodingError:
                raise FetchError(url, "the answer's content encoding could not be decoded",
                                 attempts=attempt + 1) from None
            except httpx.InvalidURL as error:
                raise FetchError(url, f"invalid URL: {error}") from None
            except FetchError as error:
                error.attempts = attempt + 1
                raise
            if attempt and isinstance(result, Download):
                result = replace(result, attempts=attempt + 1)
            return result
        assert last is not None
        raise FetchError(url, last.reason, last.status, self.policy.retries + 1)

    def _open(self, method: str, url: str, params: Params = None, data: Params = None) -> tuple[httpx.Response, str]:
        """The streaming response to ``method url`` after following its redirects (at most the
        policy's ``max_redirects``), every hop checked by the policy first, and the URL first
        asked for (with its query); the caller closes the response."""
        request = self._client.build_request(method, url, params=params, data=data)
        asked = str(request.url)
        for _ in range(self.outbound.max_redirects + 1):
            self.outbound.check_url(str(request.url))
            response = self._client.send(request, stream=True)
            following = response.next_request  # set by httpx for a redirect with a Location
            if following is None:
                return response, asked
            response.close()
            request = following
        raise FetchError(url, f"more than {self.outbound.max_redirects} redirects")

    def _body(self, url: str, method: str, params: Params, data: Params, size: int | None) -> bytes:
        """The answer's body, at most ``size`` bytes of it when given (else all, within the cap)."""
        response, _ = self._open(method, url, params, data)
        try:
            problem = _status_problem(response, url)
            if problem is not None:
                raise problem
            body = bytearray()
            for chunk in _bounded(response, url, self.outbound.max_bytes):
                body += chunk
                if size is not None and len(body) >= size:
                    return bytes(body[:size])
            _check_length(response)
            return bytes(body)
        finally:
            response.close()

    def get_bytes(self, url: str, params: Params = None, *, data: Params = None) -> bytes:
        """The body of a small document (VOTable, index page, DataLink answer); POST when ``data``."""
        method = "POST" if data is not None else "GET"
        return self._attempts(url, lambda: self._body(url, method, params, data, None))

    def get_head(self, url: str, size: int) -> bytes:
        """The first ``size`` bytes of ``url`` (fewer if the body is shorter): enough to see what a
        document is without transferring all of it (an SSAP answer or an index page may be large,
        and it is read in full once more when its plan is made)."""
        return self._attempts(url, lambda: self._body(url, "GET", None, None, size))

    def download(self, url: str, params: Params = None, *, directory: str | None = None) -> Download:
        """Stream ``url`` into a temporary file, hashing as it goes; the caller deletes the file.

        A body shorter than its ``Content-Length`` (a dropped transfer) is retried; a body that is
        complete but corrupt is the readers' business (they reject it with a reason).
        """
        def once() -> Download:
            response, asked = self._open("GET", url, params)
            try:
                problem = _status_problem(response, url)
                if problem is not None:
                    raise problem
                digest = hashlib.sha256()
                fd, name = tempfile.mkstemp(prefix="oraculum-fetch-", suffix=".part", dir=directory)
                size = 0
                try:
                    with os.fdopen(fd, "wb") as handle:
                        for chunk in _bounded(response, url, self.outbound.max_bytes):
                            handle.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    _check_length(response)
                except BaseException:
                    Path(name).unlink(missing_ok=True)
                    raise
                return Download(asked, Path(name), digest.hexdigest(), size,
                                response.headers.get("content-type", ""), 1)
            finally:
                response.close()

        return self._attempts(url, once)


def _bounded(response: httpx.Response, url: str, limit: int) -> Iterator[bytes]:
    """The body in chunks; :class:`FetchError` as soon as it (as sent, or as decoded) passes ``limit``
    bytes, or when its ``Content-Length`` says it will."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(url, _too_large(limit), response.status_code)
    received = 0
    for chunk in response.iter_bytes(1 << 16):
        received += len(chunk)
        if received > limit or response.num_bytes_downloaded > limit:
            raise FetchError(url, _too_large(limit), response.status_code)
        yield chunk


def _too_large(limit: int) -> str:
    return f"larger than {limit} bytes (the size cap ORACULUM_FETCH_MAX_BYTES); not downloaded"


def _check_length(response: httpx.Response) -> None:
    """A transfer that ended early without the connection layer noticing is retried."""
    declared = response.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return
    if response.num_bytes_downloaded != int(declared):
        raise _Retryable(
            f"transfer ended after {response.num_bytes_downloaded} of {declared} bytes", response.status_code
        )

