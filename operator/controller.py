"""The reconciler: the driver of :mod:`oraculum.control.driver` on a Kubernetes cluster.

What a reconcile does (observe the children and the store, decide, create, delete, suspend,
write the status, post Events) is the driver's, shared with the local runner. This module adds
only what is Kubernetes' own: :class:`KubeRuntime`, the driver's verbs as API requests (409 on
create means the child exists: done; the pods of a Job that waits for a node are read for the
scheduler's message), and :class:`Reconciler`, which reads the object afresh before each
reconcile and writes the whole status *at the resourceVersion it read*. If the object changed
meanwhile (a spec edit, the API's labels-submitted annotation) the write gets 409 and the whole
reconcile runs again on the new version, so a status is never computed from one version and
stored over another.

Reconciles of one resource never overlap (a lock per resource), whoever asks: a watch event on
the resource, an event on one of its Jobs, or the periodic poll that notices labels arriving in
the store and Jobs waiting too long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from oraculum.control.decision import Decision, Event, ObjectRef, ObservedJob
from oraculum.control.driver import Resource, Runtime, drive, owner_of
from oraculum.control.jobs import JobConfig
from oraculum.kube import KINDS, ApiError, KubeClient
from oraculum.store import ObjectStore

log = logging.getLogger("oraculum.operator")

#: Attempts of one reconcile when its status write conflicts with a newer version of the object.
CONFLICT_ATTEMPTS = 5

Key = tuple[str, str, str]  # (kind, namespace, name)
T = TypeVar("T")


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that makes the status exactly ``new`` (removed keys become null)."""
    return {**{key: None for key in (old or {}) if key not in new}, **new}


def resource_from_body(kind: str, body: dict[str, Any]) -> Resource:
    """The driver's view of a custom resource as the API server returned it."""
    meta = body["metadata"]
    ref = ObjectRef(kind=kind, name=meta["name"], namespace=meta.get("namespace"), uid=meta.get("uid", ""),  # type: ignore[arg-type]
                    generation=int(meta.get("generation") or 1), annotations=meta.get("annotations") or {})
    return Resource(ref=ref, spec=body.get("spec") or {}, status=body.get("status") or {},
                    version=str(meta.get("resourceVersion") or ""))


class KubeRuntime(Runtime):
    """The driver's verbs against one API server (children in the resource's namespace)."""

    def __init__(self, client: KubeClient, store_factory: Callable[[], ObjectStore], config: JobConfig,
                 now: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.config = config
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self._now = now or (lambda: datetime.now(timezone.utc))

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def now(self) -> datetime:
        return self._now()

    async def read_store(self, read: Callable[[], T]) -> T:
        return await asyncio.to_thread(read)  # the store's clients block; kopf's loop must not

    async def child_jobs(self, resource: Resource) -> dict[str, ObservedJob]:
        namespace = resource.ref.namespace or ""
        label, owner = resource.selector
        observed = {}
        for job in await self.client.list("Job", namespace, {label: owner}):
            pods: list[dict[str, Any]] = []
            status = job.get("status") or {}
            if int(status.get("active") or 0) > 0 and not status.get("ready"):
                pods = await self.client.list("Pod", namespace, {"batch.kubernetes.io/job-name": job["metadata"]["name"]})
            observed[job["metadata"]["name"]] = ObservedJob.from_manifest(job, pods)
        return observed

    async def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        ref = resource.ref
        obj.setdefault("metadata", {}).setdefault("namespace", ref.namespace)
        created = await self.client.create(obj)
        log.info("%s %s/%s: %s %s", ref.kind, ref.namespace, ref.name, obj["kind"],
                 f"{obj['metadata']['name']} created" if created else f"{obj['metadata']['name']} exists (409)")
        return created

    async def delete_job(self, resource: Resource, name: str) -> None:
        await self.client.delete("Job", resource.ref.namespace, name)

    async def suspend_job(self, resource: Resource, name: str, suspended: bool) -> None:
        try:
            await self.client.merge_patch("Job", resource.ref.namespace, name, {"spec": {"suspend": suspended}})
        except ApiError as error:
            if not error.not_found:
                raise

    async def write_status(self, resource: Resource, status: dict[str, Any]) -> None:
        """Raises :class:`ApiError` 409 when the object moved past :attr:`Resource.version`."""
        ref = resource.ref
        await self.client.replace_status(ref.kind, ref.namespace, ref.name, resource.version,
                                         status_patch(dict(resource.status), status))

    async def post_event(self, resource: Resource, event: Event) -> None:
        ref = resource.ref
        involved = {"apiVersion": KINDS[ref.kind][0], "kind": ref.kind, "metadata": {
            "name": ref.name, "namespace": ref.namespace, "uid": ref.uid, "resourceVersion": resource.version}}
        await self.client.post_event(involved, event.type, event.reason, event.message)


class Reconciler:
    """Reconciles PreprocessingJobs and ActiveLearningExperiments against one API server and store."""

    def __init__(self, client: KubeClient, store_factory: Callable[[], ObjectStore], config: JobConfig,
                 now: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.runtime = KubeRuntime(client, store_factory, config, now)
        self._locks: dict[Key, asyncio.Lock] = {}
        self.known: set[Key] = set()
        self.requeue: dict[Key, float] = {}
        self.conflicts = 0  # status writes that hit 409 and were retried (tests read this)

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        self.known.discard(key)
        self.requeue.pop(key, None)
        self._locks.pop(key, None)

    async def reconcile(self, kind: str, namespace: str, name: str) -> Decision | None:
        """Reconcile one resource until its status is written (or it is gone)."""
        key = (kind, namespace, name)
        async with self._lock(key):
            for _attempt in range(CONFLICT_ATTEMPTS):
                body = await self.client.get(kind, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    self.forget(key)
                    return None
                self.known.add(key)
                try:
                    decision = await drive(resource_from_body(kind, body), self.runtime)
                except ApiError as error:
                    if error.conflict:
                        self.conflicts += 1
                        log.info("%s %s/%s changed while reconciling (%s); reconciling again", kind, namespace, name,
                                 error.message)
                        continue
                    raise
                loop = asyncio.get_running_loop()
                if decision.requeue_after is not None:
                    self.requeue[key] = loop.time() + decision.requeue_after
                else:
                    self.requeue.pop(key, None)
                return decision
            log.warning("%s %s/%s kept changing during %d reconciles; will try again", kind, namespace, name,
                        CONFLICT_ATTEMPTS)
            self.requeue[key] = asyncio.get_running_loop().time() + 1
            return None

    async def owner_of_job(self, job: dict[str, Any]) -> Key | None:
        """The resource a Job belongs to, from its labels."""
        meta = job.get("metadata", {})
        owner = owner_of(meta.get("labels") or {})
        return None if owner is None else (owner[0], meta.get("namespace") or "", owner[1])

    async def poll(self, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Forever: reconcile every known resource every ``interval`` seconds, or sooner when a
        decision asked to be looked at again (labels arrive in the store without any watch event)."""
        loop = asyncio.get_running_loop()
        last: dict[Key, float] = {}
        while True:
            now = loop.time()
            for key in list(self.known):
                due = self.requeue.get(key, last.get(key, 0) + interval)
                if now >= min(due, last.get(key, 0) + interval):
                    last[key] = now
                    try:
                        await self.reconcile(*key)
                    except Exception:  # one broken resource must not stop the others
                        log.exception("reconciling %s %s/%s failed", *key)
            await sleep(min(1.0, interval))
