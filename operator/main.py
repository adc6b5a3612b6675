"""``oraculum operator``: run the kopf operator with the oraculum handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import kopf
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from oraculum.control.jobs import JobConfig
from oraculum.kube import KubeClient, make_login
from oraculum.settings import Settings
from oraculum.store import ObjectStore, open_store

from .controller import Reconciler
from .handlers import build_registry, configure
from .metrics import OperatorMetrics

__all__ = ["OperatorConfig", "job_config", "operator_main", "operator_store", "run_operator"]

log = logging.getLogger("oraculum.operator")


class OperatorConfig(BaseSettings):
    """How the operator itself runs; environment variables ``ORACULUM_OPERATOR_<FIELD>`` (the chart
    sets the metrics port). Child Jobs have their own settings (:class:`~oraculum.control.jobs.JobConfig`)."""

    model_config = SettingsConfigDict(env_prefix="ORACULUM_OPERATOR_", extra="ignore")

    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="Serve Prometheus metrics at http://<metrics_address>:<port>/metrics (unset: no endpoint; "
        "0: any free port).")
    metrics_address: str = Field("0.0.0.0", description="Address the metrics endpoint listens on.")
    poll_interval: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds between looks at a resource that runs (labels arriving in the store, Jobs "
        "waiting for a node); finished resources are looked at only when they change.")
    max_backoff: float = Field(
        600.0, gt=0, le=86_400,
        description="Longest wait before looking again at a resource whose reconcile keeps failing (the wait "
        "doubles from poll_interval).")
    concurrency: int = Field(8, ge=1, le=256, description="Resources the periodic look reconciles at once.")
    store_timeout: float = Field(
        5.0, gt=0, le=300,
        description="Seconds the operator's store reads may take to connect, and to answer (the Jobs keep the "
        "store's own, ORACULUM_S3_TIMEOUT): one slow store must not hold every reconcile.")
    store_retries: int = Field(1, ge=0, le=10, description="Retries of an operator's store read that failed.")


def operator_store(settings: Settings, config: OperatorConfig | None = None) -> ObjectStore:
    """The store as the operator reads it: the settings' store with the operator's short timeouts
    and few retries (an unreachable store is reported in a condition within seconds)."""
    config = config or OperatorConfig()
    return open_store(settings=settings.model_copy(update={
        "s3_timeout": config.store_timeout, "s3_retries": config.store_retries}))


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
    poll_interval: float | None = None,
    config: JobConfig | None = None,
    store_factory: Callable[[], ObjectStore] | None = None,
    now: Callable[[], datetime] | None = None,
    reconciler_out: list[Reconciler] | None = None,
    operator_config: OperatorConfig | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or for ever); see :func:`run_operator`."""
    own = operator_config or OperatorConfig()
    if poll_interval is not None:
        own = own.model_copy(update={"poll_interval": poll_interval})
    login = make_login(connection)
    metrics = OperatorMetrics()
    reconciler = Reconciler(KubeClient(login), store_factory or (lambda: operator_store(settings, own)),
                            job_config(settings, config), now, interval=own.poll_interval,
                            max_backoff=own.max_backoff, concurrency=own.concurrency, metrics=metrics)
    if reconciler_out is not None:
        reconciler_out.append(reconciler)
    registry = build_registry(reconciler, login)
    operator_settings = kopf.OperatorSettings()
    configure(operator_settings)
    if own.metrics_port is not None:
        port = metrics.serve(own.metrics_port, own.metrics_address)
        log.info("Prometheus metrics at http://%s:%d/metrics", own.metrics_address, port)
    try:
        await kopf.operator(
            registry=registry, settings=operator_settings, standalone=True,
            clusterwide=not namespaces, namespaces=namespaces or (),
            liveness_endpoint=liveness, stop_flag=stop_flag, ready_flag=ready_flag,
        )
    finally:
        metrics.stop()
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
