"""Where experiments and preprocessing jobs live: custom resources on a cluster, or the local
runner's registry in the store on one machine. One async interface, two implementations.

* :class:`KubernetesBackend`: the ``oraculum.dev/v1alpha1`` custom resources in one namespace,
  through the operator's own small client (:class:`oraculum.kube.KubeClient`, the same
  login: service account in a pod, kubeconfig outside one). Suspend and resume patch
  ``spec.suspend``; the labels-submitted signal is the annotation the operator watches.
* :class:`LocalBackend`: :class:`oraculum.control.registry.LocalRegistry`; the signal is
  :func:`oraculum.control.observe.submit_labels`. Resources created here run in whichever process runs
  the registry (``oraculum serve api --run-jobs``, see :meth:`oraculum.control.runner.LocalRunner.serve`).
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oraculum.manifests import API_VERSION, Manifest
from oraculum.control.observe import submit_labels
from oraculum.control.reconcile import LABELS_SUBMITTED_ANNOTATION
from oraculum.control.registry import AlreadyExists, LocalRegistry, normalised
from oraculum.settings import Settings
from oraculum.store import ObjectStore

KINDS = ("ActiveLearningExperiment", "PreprocessingJob")
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class BackendError(Exception):
    """A backend refused an operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotFound(BackendError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(404, f"no {kind} named {name!r}")


class Conflict(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


@dataclass
class Resource:
    """A custom resource as the API shows it, whichever backend holds it."""

    kind: str
    name: str
    namespace: str | None
    uid: str
    generation: int
    created: str
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    managed_by: str | None = None


class Backend(abc.ABC):
    name = "abstract"

    @abc.abstractmethod
    async def list(self, kind: str) -> list[Resource]: ...

    @abc.abstractmethod
    async def get(self, kind: str, name: str) -> Resource | None: ...

    @abc.abstractmethod
    async def create(self, manifest: Manifest) -> Resource: ...

    @abc.abstractmethod
    async def set_suspend(self, kind: str, name: str, suspend: bool) -> Resource: ...

    @abc.abstractmethod
    async def delete(self, kind: str, name: str) -> None: ...

    @abc.abstractmethod
    async def submit_labels(self, experiment: str, iteration: int, who: str) -> str:
        """Signal that the oracle finished ``iteration``; returns what was done, for people."""

    async def ping(self) -> None:
        """Raise when the backend cannot be reached."""

    async def close(self) -> None:
        """Release connections."""


class LocalBackend(Backend):
    """The local runner's registry (see :mod:`oraculum.control.registry`)."""

    name = "local"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.registry = LocalRegistry(store)

    @staticmethod
    def _resource(registered: Any) -> Resource:
        return Resource(
            kind=registered.kind, name=registered.name, namespace=None, uid=registered.uid,
            generation=registered.generation, created=registered.created, spec=registered.spec,
            status=registered.status, managed_by=registered.managed_by,
        )

    async def list(self, kind: str) -> list[Resource]:
        return [self._resource(r) for r in await asyncio.to_thread(self.registry.list, kind)]

    async def get(self, kind: str, name: str) -> Resource | None:
        registered = await asyncio.to_thread(self.registry.get, kind, name)
        return None if registered is None else self._resource(registered)

    async def create(self, manifest: Manifest) -> Resource:
        try:
            registered = await asyncio.to_thread(self.registry.apply, manifest, "api", True)
        except AlreadyExists as error:
            raise Conflict(str(error)) from None
        return self._resource(registered)

    async def set_suspend(self, kind: str, name: str, suspend: bool) -> Resource:
        registered = await asyncio.to_thread(self.registry.set_suspend, kind, name, suspend)
        if registered is None:
            raise NotFound(kind, name)
        return self._resource(registered)

    async def delete(self, kind: str, name: str) -> None:
        if not await asyncio.to_thread(self.registry.delete, kind, name):
            raise NotFound(kind, name)

    async def submit_labels(self, experiment: str, iteration: int, who: str) -> str:
        key = await asyncio.to_thread(submit_labels, self.store, experiment, iteration, who)
        return f"wrote {key}"


def default_namespace(settings: Settings) -> str:
    if settings.namespace:
        return settings.namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


class KubernetesBackend(Backend):
    """Custom resources in one namespace, through the operator's Kubernetes client."""

    name = "kubernetes"

    def __init__(self, namespace: str, login: Callable[[], Any] | None = None) -> None:
        from oraculum.kube import KubeClient
        from oraculum.kube import make_login

        from oraculum import __version__

        self.namespace = namespace
        self.client = KubeClient(login or make_login(), user_agent=f"oraculum-api/{__version__}")

    async def _call(self, coro: Any) -> Any:
        import aiohttp

        from oraculum.kube import ApiError

        try:
            return await coro
        except ApiError as error:
            status = error.status if error.status in (400, 403, 404, 409, 422) else 502
            raise BackendError(status, f"Kubernetes API: {error.reason or error.status}: {error.message}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise BackendError(503, f"the Kubernetes API server cannot be reached: {error}") from None

    @staticmethod
    def _resource(body: dict[str, Any]) -> Resource:
        meta = body.get("metadata") or {}
        return Resource(
            kind=body.get("kind", ""), name=meta.get("name", ""), namespace=meta.get("namespace"),
            uid=meta.get("uid", ""), generation=int(meta.get("generation") or 1),
            created=meta.get("creationTimestamp", ""), spec=body.get("spec") or {}, status=body.get("status") or {},
            annotations=dict(meta.get("annotations") or {}),
        )

    async def list(self, kind: str) -> list[Resource]:
        items = await self._call(self.client.list(kind, self.namespace))
        return sorted((self._resource({"kind": kind, **item}) for item in items), key=lambda r: r.name)

    async def get(self, kind: str, name: str) -> Resource | None:
        body = await self._call(self.client.get(kind, self.namespace, name))
        return None if body is None else self._resource({"kind": kind, **body})

    async def create(self, manifest: Manifest) -> Resource:
        from oraculum.kube import KINDS as KUBE_KINDS
        from oraculum.kube import path

        body = normalised(manifest)
        body["apiVersion"] = API_VERSION
        body["metadata"] = {k: v for k, v in body["metadata"].items()
                            if k in ("name", "labels", "annotations")}
        body["metadata"]["namespace"] = self.namespace
        api_version, plural = KUBE_KINDS[manifest.kind]
        try:
            created = await self._call(self.client.request("POST", path(api_version, plural, self.namespace), body))
        except BackendError as error:
            if error.status == 409:
                raise Conflict(f"{manifest.kind} {manifest.metadata.name!r} exists already in namespace "
                               f"{self.namespace}") from None
            raise
        return self._resource({"kind": manifest.kind, **created})

    async def set_suspend(self, kind: str, name: str, suspend: bool) -> Resource:
        if await self.get(kind, name) is None:
            raise NotFound(kind, name)
        body = await self._call(self.client.merge_patch(kind, self.namespace, name, {"spec": {"suspend": suspend}}))
        return self._resource({"kind": kind, **body})

    async def delete(self, kind: str, name: str) -> None:
        if await self.get(kind, name) is None:
            raise NotFound(kind, name)
        await self._call(self.client.delete(kind, self.namespace, name))

    async def submit_labels(self, experiment: str, iteration: int, who: str) -> str:
        patch = {"metadata": {"annotations": {LABELS_SUBMITTED_ANNOTATION: str(int(iteration))}}}
        await self._call(self.client.merge_patch("ActiveLearningExperiment", self.namespace, experiment, patch))
        return f"annotated ActiveLearningExperiment {self.namespace}/{experiment} {LABELS_SUBMITTED_ANNOTATION}={iteration}"

    async def ping(self) -> None:
        await self._call(self.client.request("GET", "/version"))

    async def close(self) -> None:
        await self.client.close()


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SERVICE_ACCOUNT_NAMESPACE)


def open_backend(settings: Settings, store: ObjectStore) -> Backend:
    """The backend ``settings.api_backend`` names (auto: kubernetes inside a cluster)."""
    choice = settings.api_backend
    if choice == "auto":
        choice = "kubernetes" if in_cluster() else "local"
    if choice == "kubernetes":
        return KubernetesBackend(default_namespace(settings))
    return LocalBackend(store)
