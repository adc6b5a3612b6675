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

When to look again is decided here, per resource: at the decision's ``requeue_after`` (capped by
the poll interval); no sooner than its ``backoff`` (a refused Job, an unreachable store); after
a reconcile that raised, at twice the previous wait (from the poll interval up to a maximum);
and a finished resource (Succeeded or Failed) not at all until it changes (its watch event). The
watch event of the operator's own status write is no reason to look again: nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from oraculum.control.decision import Decision, Event, ObjectRef, ObservedJob
from oraculum.control.driver import Refused, Resource, Runtime, drive, owner_of
from oraculum.control.jobs import JobConfig
from oraculum.kube import KINDS, ApiError, KubeClient
from oraculum.store import ObjectStore

from .metrics import OperatorMetrics

log = logging.getLogger("oraculum.operator")

#: Attempts of one reconcile when its status write conflicts with a newer version of the object.
CONFLICT_ATTEMPTS = 5
#: The API server's answers to a create that asking again at once cannot fix: a bad request, a
#: refusal (RBAC, a ResourceQuota, a namespace being deleted), an invalid object.
REFUSALS = (400, 403, 422)
#: Phases after which a resource is looked at again only when it changes.
FINISHED = ("Succeeded", "Failed")

Key = tuple[str, str, str]  # (kind, namespace, name)
T = TypeVar("T")


def status_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch (RFC 7386) that makes the status exactly ``new``: every key of ``old``
    missing from ``new`` becomes null, at every depth (``estimate.value`` of an iteration without an
    estimate too), and lists, which a merge patch replaces whole, are given whole."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = status_patch(old.get(key), value) if isinstance(value, dict) else value
    return patch


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
        self.written: dict[Key, str] = {}  # the resourceVersion each resource's last status write made

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
        """409: it exists (``False``); 400, 403, 422: :class:`Refused` with the server's message."""
        ref = resource.ref
        obj.setdefault("metadata", {}).setdefault("namespace", ref.namespace)
        try:
            created = await self.client.create(obj)
        except ApiError as error:
            if error.status in REFUSALS:
                log.warning("%s %s/%s: the API server refused %s %s: %s %s: %s", ref.kind, ref.namespace, ref.name,
                            obj["kind"], obj["metadata"].get("name"), error.status, error.reason, error.message)
                raise Refused(f"{error.status} {error.reason}: {error.message}") from error
            raise
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
        stored = await self.client.replace_status(ref.kind, ref.namespace, ref.name, resource.version,
                                                  status_patch(dict(resource.status), status))
        version = ((stored or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            self.written[(ref.kind, ref.namespace or "", ref.name)] = str(version)

    async def post_event(self, resource: Resource, event: Event) -> None:
        ref = resource.ref
        involved = {"apiVersion": KINDS[ref.kind][0], "kind": ref.kind, "metadata": {
            "name": ref.name, "namespace": ref.namespace, "uid": ref.uid, "resourceVersion": resource.version}}
        await self.client.post_event(involved, event.type, event.reason, event.message)


class Reconciler:
    """Reconciles PreprocessingJobs and ActiveLearningExperiments against one API server and store."""

    def __init__(self, client: KubeClient, store_factory: Callable[[], ObjectStore], config: JobConfig,
                 now: Callable[[], datetime] | None = None, *, interval: float = 30.0, max_backoff: float = 600.0,
                 concurrency: int = 8, metrics: OperatorMetrics | None = None) -> None:
        self.client = client
        self.runtime = KubeRuntime(client, store_factory, config, now)
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.metrics = metrics or OperatorMetrics()
        self._locks: dict[Key, asyncio.Lock] = {}
        self._looking = asyncio.Semaphore(concurrency)
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self.known: set[Key] = set()
        self.due: dict[Key, float | None] = {}  # loop time of the next periodic look; None: only when it changes
        self.failures: dict[Key, int] = {}  # reconciles in a row that raised
        self.conflicts = 0  # status writes that hit 409 and were retried (tests read this)

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        self.known.discard(key)
        self.due.pop(key, None)
        self.failures.pop(key, None)
        self._locks.pop(key, None)
        self.runtime.written.pop(key, None)
        self.metrics.forget(key)

    def own_write(self, key: Key, resource_version: str | None) -> bool:
        """Whether this version of the resource is the one the last status write made (its watch
        event echoes what was just decided: nothing to look at)."""
        return bool(resource_version) and self.runtime.written.get(key) == str(resource_version)

    def _schedule(self, key: Key, decision: Decision) -> None:
        now = asyncio.get_running_loop().time()
        self.failures.pop(key, None)
        if decision.backoff is not None:
            self.due[key] = now + decision.backoff
        elif decision.requeue_after is not None:
            self.due[key] = now + min(decision.requeue_after, self.interval)
        elif decision.phase in FINISHED:
            self.due[key] = None
        else:
            self.due[key] = now + self.interval

    def _failed(self, key: Key, error: BaseException) -> None:
        self.known.add(key)  # even when its first read failed: the periodic look tries again
        failures = self.failures[key] = self.failures.get(key, 0) + 1
        wait = min(self.max_backoff, self.interval * 2 ** (failures - 1))
        self.due[key] = asyncio.get_running_loop().time() + wait
        self.metrics.failed(key[0], error)
        log.warning("reconciling %s %s/%s failed (%d in a row); next look in %.0f s", *key, failures, wait)

    async def reconcile(self, kind: str, namespace: str, name: str) -> Decision | None:
        """Reconcile one resource until its status is written (or it is gone)."""
        key = (kind, namespace, name)
        async with self._lock(key):
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                for _attempt in range(CONFLICT_ATTEMPTS):
                    body = await self.client.get(kind, namespace, name)
                    if body is None or body["metadata"].get("deletionTimestamp"):
                        self.forget(key)
                        self.metrics.reconciled(kind, "gone")
                        return None
                    self.known.add(key)
                    resource = resource_from_body(kind, body)
                    try:
                        decision = await drive(resource, self.runtime)
                    except ApiError as error:
                        if error.conflict:
                            self.conflicts += 1
                            self.metrics.reconciled(kind, "conflict")
                            log.info("%s %s/%s changed while reconciling (%s); reconciling again", kind, namespace,
                                     name, error.message)
                            continue
                        raise
                    self._schedule(key, decision)
                    self.metrics.reconciled(kind, "ok", loop.time() - began)
                    self.metrics.decided(key, resource.status, decision)
                    return decision
            except Exception as error:
                self._failed(key, error)
                raise
            log.warning("%s %s/%s kept changing during %d reconciles; will try again", kind, namespace, name,
                        CONFLICT_ATTEMPTS)
            self.due[key] = loop.time() + 1
            return None

    async def owner_of_job(self, job: dict[str, Any]) -> Key | None:
        """The resource a Job belongs to, from its labels."""
        meta = job.get("metadata", {})
        owner = owner_of(meta.get("labels") or {})
        return None if owner is None else (owner[0], meta.get("namespace") or "", owner[1])

    async def _look(self, key: Key) -> None:
        try:
            async with self._looking:
                await self.reconcile(*key)
        except Exception:  # one broken resource must not stop the others (reconcile() scheduled the retry)
            log.exception("reconciling %s %s/%s failed", *key)
        finally:
            self._inflight.pop(key, None)

    async def poll(self, interval: float | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Forever: look at every known resource when it is due (see the module docstring).

        Looks run side by side (up to ``concurrency`` at once), so one resource whose store reads
        hang until their timeout delays no other.
        """
        if interval is not None:
            self.interval = interval
            self.max_backoff = max(self.max_backoff, interval)
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = loop.time()
                for key in list(self.known):
                    due = self.due.get(key, now)
                    if due is not None and now >= due and key not in self._inflight:
                        self._inflight[key] = asyncio.create_task(self._look(key), name=f"oraculum-look-{key[2]}")
                await sleep(min(1.0, self.interval))
        finally:
            tasks = list(self._inflight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
