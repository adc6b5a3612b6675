"""The FastAPI application: ``create_app()``, ``create_served_app()`` (uvicorn's factory for worker
processes) and ``serve()`` (``oraculum serve api``).

Everything is under ``/api/v1`` (OpenAPI at ``/docs`` and ``/openapi.json``), except the probes
and metrics at ``/healthz``, ``/readyz`` and ``/metrics``. Behind an ingress path prefix set
``ORACULUM_ROOT_PATH`` (e.g. ``/oraculum``). Errors are JSON ``{"detail": ...}`` with a 4xx for
anything the caller can fix; a store or Redis that cannot be reached is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from oraculum import __version__
from oraculum.spectra.datasets import DatasetError
from oraculum.learning.experiments import ExperimentError
from oraculum.manifests import ManifestError
from oraculum.settings import Settings, get_settings
from oraculum.store import KeyNotFound, ObjectStore, StoreError, open_store

from .auth import TokenEntry, TokenTable
from .backend import Backend, BackendError, open_backend
from .bodies import validation_error
from .collector import freeze_startup_objects
from .limits import BodyLimitMiddleware
from .live import Live, LiveUnavailable, open_live
from .metrics import Metrics, MetricsMiddleware
from .ratelimit import parse_rates
from .server import configure as configure_protocol
from .server import uvicorn_options
from .routers import batches, datasets, events, health, labels, resources, results, spectra
from .routers import uploads as uploads_router
from .routers import uws as uws_router
from .routers import share as share_router
from .state import AppState

log = logging.getLogger("oraculum.api")

PREFIX = "/api/v1"
DESCRIPTION = """The one door to oraculum: experiments and preprocessing jobs (custom resources on a
cluster, the local runner on one machine), batches with predictions, spectra, durable labels,
metrics, candidates, Job progress and live events.

Authenticate with `Authorization: Bearer <token>`. Roles: **viewer** reads, **oracle** also labels,
**admin** also creates, suspends and deletes; **worker** only reports Job progress."""


def create_app(settings: Settings | None = None, *, store: ObjectStore | None = None, backend: Backend | None = None,
               live: Live | None = None, tokens: TokenTable | None = None, served: bool = False) -> FastAPI:
    """The gateway, configured from ``settings`` (default: ``ORACULUM_*``); parts can be given (tests).

    ``served``: this process only serves this app (``oraculum serve api``), so its start-up
    objects are frozen out of the garbage collector's reach (see :mod:`oraculum.api.collector`)."""
    settings = settings or get_settings()
    tokens = tokens if tokens is not None else TokenTable.from_settings(settings)
    if not len(tokens):
        log.warning("no API tokens configured (ORACULUM_AUTH_FILE, ORACULUM_API_TOKENS): every request will be refused")
    metrics = Metrics()
    if served:  # this process's uvicorn protocol (a worker process of --workers N builds its app here)
        configure_protocol(settings)
    rates = parse_rates(settings.api_rate_limits)  # a mistake in them stops the start, naming it
    runner_stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if served:
            _log_like_uvicorn()
        the_store = store or open_store(settings=settings)
        state = AppState(settings, the_store, backend or open_backend(settings, the_store), live or open_live(settings.redis_url),
                         tokens, metrics)
        app.state.oraculum = state
        runner = _start_runner(settings, state, runner_stop)
        expiry = asyncio.create_task(uploads_router.expire_uploads(app, state), name="oraculum-upload-expiry")
        log.info("oraculum API %s: store %s, backend %s, live state %s", __version__, the_store.url,
                 state.backend.name, state.live.kind)
        if served:
            freeze_startup_objects()
        try:
            yield
        finally:
            expiry.cancel()
            runner_stop.set()
            if runner is not None:
                runner.join(timeout=30)
            await state.close()

    app = FastAPI(
        title="oraculum API", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
        responses={401: {"description": "no or invalid token"}, 403: {"description": "the token's role may not do this"},
                   413: {"description": "request body too large"}},
    )
    app.state.rates = rates
    app.include_router(health.router)
    app.include_router(health.api, prefix=PREFIX)
    for router in (resources.experiments, resources.preprocessing, batches.router, labels.router, results.router,
                   events.router, datasets.router, spectra.router):
        app.include_router(router, prefix=PREFIX)
    app.include_router(uploads_router.router, prefix=PREFIX)
    app.include_router(uws_router.router, prefix=PREFIX)  # IVOA UWS 1.1 facade (docs/uws.md)
    app.include_router(share_router.router, prefix=PREFIX)  # signed links for SAMP tools (docs/dashboard.md)
    _errors(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.root_path.strip("/"):
        app.add_middleware(RootPathMiddleware, root_path="/" + settings.root_path.strip("/"))
    return app


class RootPathMiddleware:
    """Serve under an ingress path prefix (``ORACULUM_ROOT_PATH``), whether or not the ingress
    strips it: sets the ASGI ``root_path`` (links in /docs and the OpenAPI ``servers`` use it)."""

    def __init__(self, app: Any, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not scope.get("root_path"):
            scope = dict(scope)
            scope["root_path"] = self.root_path
        await self.app(scope, receive, send)


def _start_runner(settings: Settings, state: AppState, stop: threading.Event) -> threading.Thread | None:
    """``--run-jobs`` on one machine: run the Jobs of resources created through the API."""
    if not settings.api_run_jobs:
        return None
    from oraculum.control.runner import LocalRunner
    from oraculum.store import LocalStore

    if state.backend.name != "local" or not isinstance(state.store, LocalStore):
        log.warning("ORACULUM_API_RUN_JOBS needs the local backend and a local store: not running Jobs here")
        return None
    token = None
    if settings.api_url:  # the runner's Jobs report progress here, with a worker token of this process only
        token = secrets.token_urlsafe(32)
        state.tokens.add(TokenEntry(name="local-runner", role="worker", token=token))
    runner = LocalRunner(state.store, settings, echo=lambda line: log.info("runner: %s", line), progress_token=token)
    thread = threading.Thread(target=runner.serve, args=(stop,), name="oraculum-local-runner", daemon=True)
    thread.start()
    return thread


def own_url(host: str, port: int) -> str:
    """This server's URL as a process on the same machine reaches it (a wildcard address: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _errors(app: FastAPI) -> None:
    """The core's exceptions as 4xx/503 answers with their message (never a bare 500)."""

    def answer(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

    @app.exception_handler(KeyNotFound)
    async def not_found(_: Request, error: KeyNotFound) -> JSONResponse:
        return answer(404, str(error))

    @app.exception_handler(DatasetError)
    async def dataset_error(_: Request, error: DatasetError) -> JSONResponse:
        return answer(404, str(error))

    @app.exception_handler(ExperimentError)
    async def experiment_error(_: Request, error: ExperimentError) -> JSONResponse:
        return answer(404, str(error))

    @app.exception_handler(ManifestError)
    async def manifest_error(_: Request, error: ManifestError) -> JSONResponse:
        return answer(422, str(error))

    @app.exception_handler(BackendError)
    async def backend_error(_: Request, error: BackendError) -> JSONResponse:
        return answer(error.status, error.message, {"Retry-After": "5"} if error.status == 503 else None)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, error: StoreError) -> JSONResponse:
        log.warning("store error: %s", error)
        return answer(503, f"the object store cannot be reached: {error}", {"Retry-After": "5"})

    @app.exception_handler(LiveUnavailable)
    async def live_error(_: Request, error: LiveUnavailable) -> JSONResponse:
        return answer(503, str(error), {"Retry-After": "1"})


def worker_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``ORACULUM_*`` variables a worker process reads them back from."""
    out = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            out[f"ORACULUM_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _log_like_uvicorn() -> None:
    """Let the gateway's own log lines (``oraculum.*``) out, at uvicorn's level and in its format:
    uvicorn configures only its own loggers, so without this they reached no handler."""
    logger = logging.getLogger("oraculum")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())


def create_served_app() -> FastAPI:
    """uvicorn's factory for each worker process of ``oraculum serve api --workers N``."""
    return create_app(served=True)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info") -> None:
    """Run the gateway with uvicorn (blocks)."""
    import uvicorn

    logging.getLogger("oraculum").setLevel(log_level.upper())
    if settings.api_run_jobs and not settings.api_url:  # where the local runner's Jobs report progress
        settings = settings.model_copy(update={"api_url": own_url(host, port)})
    if workers > 1:  # each worker process builds its own app from the environment
        if not settings.redis_url:
            raise ValueError(f"{workers} API workers need Redis (ORACULUM_REDIS_URL): without it labels, claims "
                             "and events live in each process and the workers would disagree; use one worker")
        if settings.api_run_jobs:
            raise ValueError("ORACULUM_API_RUN_JOBS runs Jobs inside the API process: use one worker with it")
        if not settings.api_share_secret:  # one key for all workers, or a link signed by one fails in another
            settings = settings.model_copy(update={"api_share_secret": secrets.token_urlsafe(32)})
        os.environ.update(worker_environment(settings))  # flags too, not only what came from the environment
        uvicorn.run("oraculum.api.app:create_served_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, proxy_headers=True, **uvicorn_options(settings))
        return
    uvicorn.run(create_app(settings, served=True), host=host, port=port, log_level=log_level, proxy_headers=True,
                **uvicorn_options(settings))
