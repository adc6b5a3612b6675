"""kopf handlers: thin translations from watch events to :class:`~.controller.Reconciler` calls.

No handler keeps state or writes through kopf: each asks the reconciler to look at one resource,
and the reconciler reads everything afresh. So handlers may fire in any order, twice, or after a
restart, and the outcome is the same. None of them needs a finalizer (no ``on.delete``, no
daemons or timers, which kopf guards with finalizers): children are deleted by Kubernetes'
garbage collector through their owner references, so uninstalling the operator can never leave a
resource stuck in deletion. The periodic look (labels arriving in the store, Jobs waiting for a
node) is one background task started at startup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from oraculum.control.jobs import MANAGED_BY
from oraculum.manifests import GROUP, VERSION

from .controller import Reconciler

log = logging.getLogger("oraculum.operator")

EXPERIMENTS = (GROUP, VERSION, "activelearningexperiments")
PREPROCESSING = (GROUP, VERSION, "preprocessingjobs")
JOBS = ("batch", "v1", "jobs")
#: Only Jobs this operator made are watched (a server-side label selector).
JOB_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings that the design relies on."""
    settings.peering.standalone = True  # one replica; no peering objects or their RBAC
    settings.scanning.disabled = True  # the CRDs are installed with the chart: no CRD watching
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf only reports errors
    settings.watching.server_timeout = 600  # the API server closes each watch after 10 min; kopf reopens it
    settings.watching.label_selectors[JOBS] = JOB_SELECTOR


def build_registry(reconciler: Reconciler, login: Callable[[], kopf.ConnectionInfo],
                   poll_interval: float | None = None) -> kopf.OperatorRegistry:
    """A fresh registry with every handler (a function, so tests can start several operators)."""
    registry = kopf.OperatorRegistry()
    background: dict[str, asyncio.Task[None]] = {}

    @kopf.on.login(id="oraculum-login", registry=registry)
    def login_handler(**_: Any) -> kopf.ConnectionInfo:
        return login()

    @kopf.on.startup(id="oraculum-startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        background["poll"] = asyncio.create_task(reconciler.poll(poll_interval), name="oraculum-poll")

    @kopf.on.cleanup(id="oraculum-cleanup", registry=registry)
    async def cleanup(**_: Any) -> None:
        task = background.pop("poll", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await reconciler.client.close()

    @kopf.on.event(*EXPERIMENTS, id="experiment-event", registry=registry)
    async def experiment_event(type: str | None, name: str, namespace: str, meta: kopf.Meta, **_: Any) -> None:
        await _reconcile(reconciler, "ActiveLearningExperiment", type, namespace, name, meta.get("resourceVersion"))

    @kopf.on.event(*PREPROCESSING, id="preprocessing-event", registry=registry)
    async def preprocessing_event(type: str | None, name: str, namespace: str, meta: kopf.Meta, **_: Any) -> None:
        await _reconcile(reconciler, "PreprocessingJob", type, namespace, name, meta.get("resourceVersion"))

    @kopf.on.event(*JOBS, labels={"app.kubernetes.io/managed-by": MANAGED_BY}, id="child-job-event", registry=registry)
    async def child_job_event(body: kopf.Body, **_: Any) -> None:
        owner = await reconciler.owner_of_job(dict(body))
        if owner is not None:  # a finished, failed, started or vanished Job moves its owner on
            await reconciler.reconcile(*owner)

    return registry


async def _reconcile(reconciler: Reconciler, kind: str, event: str | None, namespace: str, name: str,
                     resource_version: str | None = None) -> None:
    key = (kind, namespace, name)
    if event == "DELETED":
        reconciler.forget(key)  # children go with it (owner references)
        return
    if reconciler.own_write(key, resource_version):
        return  # the echo of the reconciler's own status write: what it shows was just decided
    await reconciler.reconcile(kind, namespace, name)
