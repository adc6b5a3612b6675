"""The dashboard's only door to data: the API gateway over HTTP (never the store).

One :class:`ApiClient` per process (an ``httpx.Client`` with a connection pool; thread-safe, so
gunicorn's threads share it). Every call carries the signed-in oracle's token: the API decides
what each role may do, and records who labelled what. Answers that are not 2xx become
:class:`ApiError` (a :class:`oraculum.client.errors.ClientError`) with the API's own message
(``detail``), which the pages show as they are.

Why not :class:`oraculum.client.Client` itself: that one holds one person's token, while this
server speaks for everyone signed in, one token per call on a shared pool, and it must not
import numpy and astropy at start-up; it shares the public client's error type and message
reader (:mod:`oraculum.client.errors`, which imports neither).

Spectra of a dataset never change (a dataset is immutable once written), so their flux is kept
in a bounded in-process cache, shared by everyone; it is only read after the same request has
proven the caller's token to the API (see :meth:`ApiClient.whoami`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from oraculum.client.errors import ClientError, response_error

PREFIX = "/api/v1"


class ApiError(ClientError):
    """The API answered with an error, or could not be reached (``status`` 0): the public client's
    :class:`~oraculum.client.errors.ClientError`, shown as the pages show it (message first)."""

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


def error_message(response: httpx.Response) -> str:
    """The API's message for a failed response (see :func:`oraculum.client.errors.response_error`)."""
    return response_error(response, limit=300)[0]


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class ApiClient:
    """Calls of the API with a caller's token (see the module docstring)."""

    def __init__(self, base_url: str, timeout: float = 30.0, flux_cache: int = 50_000,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0),
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                                 headers={"User-Agent": "oraculum-dashboard"}, transport=transport)
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="oraculum-dashboard-api")
        self._flux = _Lru(flux_cache)
        self._answers = _Lru(2000)  # short-lived answers per token: who it is, its experiments

    # -- plumbing -------------------------------------------------------------------------------

    def request(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.http.request(method, PREFIX + path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(0, f"the API at {self.base_url} cannot be reached: {error}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, *response_error(response, limit=300))
        return response

    def get(self, path: str, token: str | None, **params: Any) -> Any:
        return self.request("GET", path, token, params={k: v for k, v in params.items() if v is not None}).json()

    def send(self, method: str, path: str, token: str | None, body: Any = None, **kwargs: Any) -> Any:
        response = self.request(method, path, token, json=body, **kwargs)
        return response.json() if response.content else None

    # -- who ------------------------------------------------------------------------------------

    def _remember(self, key: tuple[Any, ...], ttl: float, load: Callable[[], Any], fresh: bool = False) -> Any:
        hit = None if fresh else self._answers.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        value = load()
        self._answers.put(key, (time.monotonic() + ttl, value))
        return value

    def whoami(self, token: str | None, ttl: float = 30.0) -> dict[str, str]:
        """The token's name and role (cached for ``ttl`` seconds); raises ApiError 401 if invalid."""
        if not token:
            raise ApiError(401, "not signed in")
        return dict(self._remember(("whoami", token), ttl, lambda: self.get("/whoami", token)))

    def experiment_names(self, token: str | None, ttl: float = 5.0, fresh: bool = False) -> frozenset[str]:
        """The names of the experiments the API lists for this token (cached for ``ttl`` seconds;
        ``fresh``: asked again now)."""
        return self._remember(("names", token), ttl, lambda: frozenset(
            str(entry.get("name")) for entry in self.get("/experiments", token) if isinstance(entry, dict)), fresh)

    def experiment_dataset(self, token: str | None, name: str, ttl: float = 60.0) -> str:
        """The dataset of experiment ``name`` as the API tells (its spec; cached for ``ttl`` seconds)."""
        return self._remember(("dataset", token, name), ttl, lambda: str(
            (self.get(f"/experiments/{name}", token).get("spec") or {}).get("dataset") or ""))

    # -- spectra --------------------------------------------------------------------------------

    def flux(self, token: str | None, dataset: str, index: int) -> dict[str, Any]:
        """``/datasets/{dataset}/spectra/{index}/flux`` (cached: datasets never change)."""
        key = (dataset, int(index))
        hit = self._flux.get(key)
        if hit is not None:
            return hit
        document = self.get(f"/datasets/{dataset}/spectra/{int(index)}/flux", token)
        self._flux.put(key, document)
        return document

    def fluxes(self, token: str | None, dataset: str, indices: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Many spectra at once, fetched in parallel (the API has one spectrum per request)."""
        wanted = list(dict.fromkeys(int(i) for i in indices))
        self.whoami(token)  # the cache below is shared: prove the token first
        found = {i: hit for i in wanted if (hit := self._flux.get((dataset, i))) is not None}
        missing = [i for i in wanted if i not in found]
        if len(missing) == 1:
            found[missing[0]] = self.flux(token, dataset, missing[0])
        elif missing:
            for index, document in zip(missing, self.pool.map(lambda i: self.flux(token, dataset, i), missing),
                                       strict=True):
                found[index] = document
        return found

    def close(self) -> None:
        self.http.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
