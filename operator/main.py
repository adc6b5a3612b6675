"""``oraculum operator``: run the kopf operator with the oraculum handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import kopf

from oraculum.control.jobs import JobConfig
from oraculum.kube import KubeClient, make_login
from oraculum.settings import Settings
from oraculum.store import ObjectStore, open_store

from .controller import Reconciler
from .handlers import build_registry, configure

__all__ = ["job_config", "operator_main", "run_operator"]

log = logging.getLogger("oraculum.operator")


def job_config(settings: Settings, config: JobConfig | None = None) -> JobConfig:
    """How Jobs are built: ``config`` or ``ORACULUM_JOB_*``, with the API that running Jobs report
    their progress to taken from the operator's own ``ORACULUM_API_URL`` when the Job settings name none."""
    config = config or JobConfig()
    if not config.api_url and settings.api_url:
        config = config.model_copy(update={"api_url": settings.api_url})
    if config.api_url:
        log.info("Jobs report their progress to %s%s", config.api_url,
                 "" if config.progress_secret else " (no worker token Secret set: ORACULUM_JOB_PROGRESS_SECRET)")
    return config


async def operator_main(
    settings: Settings,
    *,
    namespaces: list[str] | None = None,
    connection: kopf.ConnectionInfo | None = None,
    liveness: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    poll_interval: float = 30.0,
    config: JobConfig | None = None,
    store_factory: Callable[[], ObjectStore] | None = None,
    now: Callable[[], datetime] | None = None,
    reconciler_out: list[Reconciler] | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or for ever); see :func:`run_operator`."""
    login = make_login(connection)
    reconciler = Reconciler(KubeClient(login), store_factory or (lambda: open_store(settings=settings)),
                            job_config(settings, config), now)
    if reconciler_out is not None:
        reconciler_out.append(reconciler)
    registry = build_registry(reconciler, login, poll_interval)
    operator_settings = kopf.OperatorSettings()
    configure(operator_settings)
    try:
        await kopf.operator(
            registry=registry, settings=operator_settings, standalone=True,
            clusterwide=not namespaces, namespaces=namespaces or (),
            liveness_endpoint=liveness, stop_flag=stop_flag, ready_flag=ready_flag,
        )
    finally:
        await reconciler.client.close()


def run_operator(settings: Settings, namespaces: list[str] | None = None, liveness: str | None = None) -> None:
    """Block running the operator (SIGINT/SIGTERM stop it gracefully).

    Raises :class:`kopf.LoginError` at once when there is no way to reach an API server (kopf
    itself would retry for ever, which hides a missing kubeconfig behind a stream of tracebacks).
    """
    make_login()()
    logging.getLogger("kopf").setLevel(logging.INFO)
    logging.getLogger("oraculum.operator").setLevel(logging.INFO)
    asyncio.run(operator_main(settings, namespaces=namespaces, liveness=liveness))
