"""The reconciler: Kubernetes in, :mod:`oraculum.control.reconcile` decision out, Kubernetes again.

For one resource it reads the object afresh, lists its Jobs by label (and the pods of any Job
that waits for a node, for the scheduler's message), reads the store, calls the pure reconcile
function and carries the decision out: create children (409 means it exists: done), delete or
(un)suspend Jobs, post Events, and write the whole status *at the resourceVersion it read*. If
the object changed meanwhile (a spec edit, the API's labels-submitted annotation) the write gets
409 and the whole reconcile runs again on the new version, so a status is never computed from
one version and stored over another.

Reconciles of one resource never overlap (a lock per resource), whoever asks: a watch event on
the resource, an event on one of its Jobs, or the periodic poll that notices labels arriving in
the store and Jobs waiting too long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from oraculum.control.jobs import LABEL_EXPERIMENT, LABEL_PPJ, JobConfig
from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec
from oraculum.control.observe import observe_dataset, observe_experiment
from oraculum.control.reconcile import (
    Decision,
    ObjectRef,
    ObservedJob,
    labels_submitted_from_annotations,
    reconcile_experiment,
    reconcile_preprocessing,
)
from oraculum.store import ObjectStore, StoreError

from oraculum.kube import ApiError, KubeClient

log = logging.getLogger("oraculum.operator")

#: Attempts of one reconcile when its status write conflicts with a newer version of the object.
CONFLICT_ATTEMPTS = 5

Key = tuple[str, str, str]  # (kind, namespace, name)


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that makes the status exactly ``new`` (removed keys become null)."""
    return {**{key: None for key in (old or {}) if key not in new}, **new}


class Reconciler:
    """Reconciles PreprocessingJobs and ActiveLearningExperiments against one API server and store."""

    def __init__(self, client: KubeClient, store_factory: Callable[[], ObjectStore], config: JobConfig,
                 now: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.config = config
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._locks: dict[Key, asyncio.Lock] = {}
        self.known: set[Key] = set()
        self.requeue: dict[Key, float] = {}
        self.conflicts = 0  # status writes that hit 409 and were retried (tests read this)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

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
                decision = await self._decide(kind, body)
                try:
                    await self._apply(kind, body, decision)
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

    async def _jobs(self, namespace: str, label: str, owner: str) -> dict[str, ObservedJob]:
        observed = {}
        for job in await self.client.list("Job", namespace, {label: owner}):
            pods: list[dict[str, Any]] = []
            status = job.get("status") or {}
            if int(status.get("active") or 0) > 0 and not status.get("ready"):
                pods = await self.client.list("Pod", namespace, {"batch.kubernetes.io/job-name": job["metadata"]["name"]})
            observed[job["metadata"]["name"]] = ObservedJob.from_manifest(job, pods)
        return observed

    async def _observe(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking store read off the event loop; None if the store cannot be reached."""
        try:
            return await asyncio.to_thread(fn)
        except (StoreError, OSError) as error:
            log.warning("cannot read the store: %s", error)
            return None

    async def _decide(self, kind: str, body: dict[str, Any]) -> Decision:
        meta = body["metadata"]
        ref = ObjectRef(kind=kind, name=meta["name"], namespace=meta.get("namespace"), uid=meta.get("uid", ""),  # type: ignore[arg-type]
                        generation=int(meta.get("generation") or 1), annotations=meta.get("annotations") or {})
        raw_spec = body.get("spec") or {}
        status = body.get("status") or {}
        now = self._now()
        if kind == "ActiveLearningExperiment":
            jobs = await self._jobs(ref.namespace or "", LABEL_EXPERIMENT, ref.name)
            try:
                spec: ExperimentSpec | None = ExperimentSpec.model_validate(raw_spec)
            except ValidationError:
                spec = None  # reconcile reports it
            iteration = int(status.get("iteration") or 0)
            submitted = labels_submitted_from_annotations(ref.annotations)
            # an invalid spec is reported by the reconcile before it looks at the store
            observation = None if spec is None else await self._observe(
                lambda: observe_experiment(self.store, ref.name, spec, iteration, submitted))
            return reconcile_experiment(ref, raw_spec, status, jobs, observation, now, self.config)
        jobs = await self._jobs(ref.namespace or "", LABEL_PPJ, ref.name)
        try:
            dataset = PreprocessingJobSpec.model_validate(raw_spec).dataset
        except ValidationError:
            return reconcile_preprocessing(ref, raw_spec, status, jobs, None, now, self.config)
        observation = await self._observe(lambda: observe_dataset(self.store, dataset))
        return reconcile_preprocessing(ref, raw_spec, status, jobs, observation, now, self.config)

    async def _apply(self, kind: str, body: dict[str, Any], decision: Decision) -> None:
        meta = body["metadata"]
        namespace = meta.get("namespace")
        for obj in decision.create:
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            created = await self.client.create(obj)
            log.info("%s %s/%s: %s %s", kind, namespace, meta["name"], obj["kind"],
                     f"{obj['metadata']['name']} created" if created else f"{obj['metadata']['name']} exists (409)")
        for name in decision.delete:
            await self.client.delete("Job", namespace, name)
        for name, suspended in decision.suspend.items():
            try:
                await self.client.merge_patch("Job", namespace, name, {"spec": {"suspend": suspended}})
            except ApiError as error:
                if not error.not_found:
                    raise
        old_status = body.get("status") or {}
        if decision.status != old_status:
            await self.client.replace_status(kind, namespace, meta["name"], meta["resourceVersion"],
                                             status_patch(old_status, decision.status))
        for event in decision.events:
            await self.client.post_event(body, event.type, event.reason, event.message)

    async def owner_of_job(self, job: dict[str, Any]) -> Key | None:
        """The resource a Job belongs to, from its labels."""
        labels = job.get("metadata", {}).get("labels") or {}
        namespace = job.get("metadata", {}).get("namespace") or ""
        if LABEL_EXPERIMENT in labels:
            return ("ActiveLearningExperiment", namespace, labels[LABEL_EXPERIMENT])
        if LABEL_PPJ in labels:
            return ("PreprocessingJob", namespace, labels[LABEL_PPJ])
        return None

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
