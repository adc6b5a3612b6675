"""HTTP for the VO sources: retries with exponential backoff, streaming downloads with sha256.

One policy for every request oraculum makes to an archive (the VOTable or index page itself,
DataLink calls, SODA cutouts, the spectra): a 5xx answer, a timeout, a dropped connection or a
transfer shorter than its ``Content-Length`` is tried again after ``backoff * 2**attempt`` seconds
(with jitter, and never sooner than a ``Retry-After`` asks); any other 4xx is final at once,
because asking again cannot change "not found" or "forbidden". 408 and 429 are the two 4xx
answers that mean "later", so they are retried too.

A failure is a :class:`FetchError` carrying the URL, the HTTP status (if there was one), a reason
a person can act on, and how many attempts were made: the fetch report is built from these.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from oraculum import __version__

#: 4xx statuses that are worth asking again (request timeout, too many requests).
RETRYABLE_4XX = frozenset({408, 429})
#: Largest single file accepted (bytes): a spectrum is at most a few MB; this stops a runaway.
MAX_DOWNLOAD_BYTES = 2 * 1024**3

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


def _status_problem(response: httpx.Response) -> _Retryable | FetchError | None:
    """None for a success; a retryable problem for 5xx/408/429; a final error for other 4xx."""
    status = response.status_code
    if status < 400:
        return None
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status >= 500 or status in RETRYABLE_4XX:
        return _Retryable(reason, status, _retry_after(response))
    return FetchError(str(response.url), reason, status)


class HttpClient:
    """A thread-safe HTTP client with the retry policy; ``concurrency`` bounds open connections."""

    def __init__(self, policy: RetryPolicy | None = None, concurrency: int = 8,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.policy.timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=True,
            headers={"User-Agent": f"oraculum/{__version__} (spectra fetch)"},
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
            except httpx.TimeoutException as error:
                last = _Retryable(f"timed out ({type(error).__name__})")
                continue
            except httpx.TransportError as error:  # refused, reset, DNS, peer closed early
                last = _Retryable(f"connection failed ({type(error).__name__}: {error})")
                continue
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

    def get_bytes(self, url: str, params: Params = None, *, data: Params = None, limit: int = 512 * 1024**2) -> bytes:
        """The body of a small document (VOTable, index page, DataLink answer); POST when ``data``."""
        def once() -> bytes:
            request = self._client.build_request("POST" if data is not None else "GET", url, params=params, data=data)
            response = self._client.send(request, stream=True)
            try:
                problem = _status_problem(response)
                if problem is not None:
                    raise problem
                body = b"".join(_bounded(response, url, limit))
                _check_length(response)
                return body
            finally:
                response.close()

        return self._attempts(url, once)

    def get_head(self, url: str, size: int) -> bytes:
        """The first ``size`` bytes of ``url`` (fewer if the body is shorter): enough to see what a
        document is without transferring all of it (an SSAP answer or an index page may be large,
        and it is read in full once more when its plan is made)."""
        def once() -> bytes:
            with self._client.stream("GET", url) as response:
                problem = _status_problem(response)
                if problem is not None:
                    raise problem
                head = bytearray()
                for chunk in response.iter_bytes(min(size, 1 << 16)):
                    head += chunk
                    if len(head) >= size:
                        break
                return bytes(head[:size])

        return self._attempts(url, once)

    def download(self, url: str, params: Params = None, *, directory: str | None = None) -> Download:
        """Stream ``url`` into a temporary file, hashing as it goes; the caller deletes the file.

        A body shorter than its ``Content-Length`` (a dropped transfer) is retried; a body that is
        complete but corrupt is the readers' business (they reject it with a reason).
        """
        def once() -> Download:
            with self._client.stream("GET", url, params=params) as response:
                problem = _status_problem(response)
                if problem is not None:
                    raise problem
                digest = hashlib.sha256()
                fd, name = tempfile.mkstemp(prefix="oraculum-fetch-", suffix=".part", dir=directory)
                size = 0
                try:
                    with os.fdopen(fd, "wb") as handle:
                        for chunk in _bounded(response, url, MAX_DOWNLOAD_BYTES):
                            handle.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    _check_length(response)
                except BaseException:
                    Path(name).unlink(missing_ok=True)
                    raise
                return Download(str(response.url), Path(name), digest.hexdigest(), size,
                                response.headers.get("content-type", ""), 1)

        return self._attempts(url, once)


def _bounded(response: httpx.Response, url: str, limit: int) -> Iterator[bytes]:
    for chunk in response.iter_bytes(1 << 16):
        if response.num_bytes_downloaded > limit:
            raise FetchError(url, f"larger than {limit} bytes; refusing to download it", response.status_code)
        yield chunk


def _check_length(response: httpx.Response) -> None:
    """A transfer that ended early without the connection layer noticing is retried."""
    declared = response.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return
    if response.num_bytes_downloaded != int(declared):
        raise _Retryable(
            f"transfer ended after {response.num_bytes_downloaded} of {declared} bytes", response.status_code
        )

