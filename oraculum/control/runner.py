"""``oraculum run``: the operator's loop on one machine, with subprocesses instead of pods.

The same driver (:mod:`oraculum.control.driver`) observes, decides and applies as on a cluster;
this module is its local runtime. :class:`LocalRuntime` gives the driver its verbs: child Jobs and
ConfigMaps are :class:`~oraculum.control.local_jobs.LocalJobs` (subprocesses of the same
``oraculum`` verbs a pod would run), the status is a file in the store, Events are printed lines.
:class:`LocalRunner` decides only when to look at what, for ``oraculum run`` and for the API
gateway's ``--run-jobs`` alike (one loop, :meth:`LocalRunner._pass`).

Inside the API gateway (``oraculum serve api --run-jobs``) the runner is given the API's URL and a
worker token, and its Jobs report their progress to that API exactly as pods do on a cluster
(:mod:`oraculum.progress`): the Job dicts carry the same variables and the token's ``secretKeyRef``.

Status is kept in the store under ``local/<plural>/<name>/status.json`` with the manifest's hash,
so running the same manifest again resumes where it stopped (a Job that was running when the
runner stopped is *vanished* and starts again; finished steps are found in the store), and a
changed manifest counts as a new generation (which retries a Failed resource).

The manifests themselves are registered beside the status (:mod:`oraculum.control.registry`), which is
what the API gateway lists, creates, suspends, resumes and deletes on one machine. The runner
re-reads that desired state on every pass, so a suspend or delete through the API reaches a
running ``oraculum run``; :meth:`LocalRunner.serve` runs whatever the API created.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from oraculum.control.decision import Event, ObjectRef, ObservedJob
from oraculum.control.driver import CHILD_LABELS, Resource, Runtime, drive_now
from oraculum.control.jobs import JobConfig
from oraculum.control.local_jobs import LocalJobs
from oraculum.control.registry import KIND_PLURALS, LocalRegistry, RegisteredResource, spec_hash, status_key
from oraculum.manifests import ActiveLearningExperiment, ExperimentSpec, Manifest, PreprocessingJob
from oraculum.settings import Settings
from oraculum.store import KeyNotFound, LocalStore, ObjectStore

__all__ = ["LocalJobs", "LocalRunner", "LocalRuntime", "RunResult", "load_all", "order_manifests"]

Echo = Callable[[str], None]
Key = tuple[str, str]  # (kind, name)
T = TypeVar("T")
#: The Secret the runner's Job dicts refer to for the worker token (it exists only in this process).
LOCAL_PROGRESS_SECRET = "oraculum-local-progress"


def _label(kind: str, name: str) -> str:
    """How the runner names a resource in what it prints: ``ale/<name>`` or ``ppj/<name>``."""
    return f"{'ale' if kind == 'ActiveLearningExperiment' else 'ppj'}/{name}"


class LocalRuntime(Runtime):
    """The driver's verbs on one machine: children in :class:`LocalJobs`, status in the store,
    Events printed. None of them waits, so the runner drives it with
    :func:`~oraculum.control.driver.drive_now`, without an event loop."""

    def __init__(self, store: LocalStore, jobs: LocalJobs, config: JobConfig, echo: Echo) -> None:
        self._store = store
        self.jobs = jobs
        self.config = config
        self.echo = echo

    @property
    def store(self) -> ObjectStore:
        return self._store

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def read_store(self, read: Callable[[], T]) -> T:
        return read()

    async def child_jobs(self, resource: Resource) -> dict[str, ObservedJob]:
        return self.jobs.observe(*resource.selector)

    async def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        return self.jobs.create(obj)

    async def delete_job(self, resource: Resource, name: str) -> None:
        self.jobs.delete(name)

    async def suspend_job(self, resource: Resource, name: str, suspended: bool) -> None:
        self.jobs.set_suspended(name, suspended)

    async def write_status(self, resource: Resource, status: dict[str, Any]) -> None:
        self.save(resource, status)

    async def post_event(self, resource: Resource, event: Event) -> None:
        mark = "!" if event.type == "Warning" else "-"
        self.echo(f"  {mark} {_label(resource.ref.kind, resource.ref.name)}: {event.reason}: {event.message}")

    def save(self, resource: Resource, status: Mapping[str, Any]) -> None:
        """``status.json``: the status with what identifies the resource across runs (its uid, its
        generation, and the hash of the spec it was computed from, which is the local runtime's
        :attr:`~oraculum.control.driver.Resource.version`)."""
        ref = resource.ref
        document = {"kind": ref.kind, "name": ref.name, "uid": ref.uid, "generation": ref.generation,
                    "specHash": resource.version, "status": dict(status)}
        self._store.put_bytes(status_key(KIND_PLURALS[ref.kind], ref.name),
                              (json.dumps(document, indent=2) + "\n").encode())


@dataclass
class _Resource:
    """A resource the runner follows: the driver's view of it plus when to look again."""

    manifest: Manifest
    kind: str
    name: str
    raw_spec: dict[str, Any]
    status: dict[str, Any]
    generation: int
    uid: str
    spec_hash: str
    next_check: float = 0.0
    hinted: bool = False

    @property
    def label(self) -> str:
        return _label(self.kind, self.name)

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", "Pending"))

    def view(self) -> Resource:
        """What the driver sees (the spec hash stands in for Kubernetes' resourceVersion)."""
        ref = ObjectRef(kind=self.kind, name=self.name, namespace=None, uid=self.uid,  # type: ignore[arg-type]
                        generation=self.generation)
        return Resource(ref=ref, spec=self.raw_spec, status=self.status, version=self.spec_hash)


@dataclass
class RunResult:
    """How each resource ended: ``{"ale/name": "Succeeded", ...}``."""

    phases: dict[str, str]
    statuses: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(phase == "Succeeded" for phase in self.phases.values())


class LocalRunner:
    """Reconcile manifests until every one has Succeeded or Failed (or waits for a person)."""

    def __init__(self, store: ObjectStore, settings: Settings, echo: Echo = print, max_parallel: int | None = None,
                 poll_seconds: float = 0.5, config: JobConfig | None = None, progress_token: str | None = None) -> None:
        """``progress_token`` (a worker token of the API at ``settings.api_url``): the Jobs report
        their progress there, through the same variables and Secret reference as on a cluster."""
        if not isinstance(store, LocalStore):
            raise ValueError(f"oraculum run uses a local folder as the store, not {store.url}: set --store to a folder")
        self.store = store
        self.settings = settings.model_copy(update={"store": store.url})
        self.echo = echo
        self.poll = poll_seconds
        self.config = config or JobConfig()
        secrets: dict[str, dict[str, str]] = {}
        if progress_token and settings.api_url:
            self.config = self.config.model_copy(update={
                "api_url": settings.api_url, "progress_secret": LOCAL_PROGRESS_SECRET, "progress_secret_key": "token"})
            secrets[LOCAL_PROGRESS_SECRET] = {"token": progress_token}
        self.jobs = LocalJobs(self.settings, Path(store.url) / "local" / "logs", max_parallel, secrets)
        self.registry = LocalRegistry(store)
        self.runtime = LocalRuntime(store, self.jobs, self.config, echo)

    def _load(self, manifest: Manifest, register: str | None = "oraculum-run") -> _Resource:
        kind = manifest.kind
        raw_spec = manifest.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        hashed = spec_hash(raw_spec)
        if register:
            self.registry.apply(manifest, managed_by=register)
        try:
            saved = json.loads(self.store.get_bytes(status_key(KIND_PLURALS[kind], manifest.metadata.name)))
        except KeyNotFound:
            saved = {}
        generation = int(saved.get("generation", 1))
        if saved and saved.get("specHash") != hashed:
            generation += 1
        return _Resource(
            manifest=manifest, kind=kind, name=manifest.metadata.name, raw_spec=raw_spec,
            status=saved.get("status", {}), generation=generation, uid=saved.get("uid") or f"local-{uuid.uuid4()}",
            spec_hash=hashed,
        )

    def _save(self, resource: _Resource) -> None:
        self.runtime.save(resource.view(), resource.status)

    def _tick(self, resource: _Resource, now: float) -> None:
        """One reconcile through the driver, then what only the runner prints and schedules."""
        old_message = resource.status.get("message")
        decision = drive_now(resource.view(), self.runtime)
        resource.status = decision.status
        if decision.status.get("message") != old_message:
            self.echo(f"[{resource.label}] {decision.phase}: {decision.status.get('message', '')}")
        delay = next(d for d in (decision.backoff, decision.requeue_after, self.poll) if d is not None)
        resource.next_check = now + min(max(delay, 0.0), 5.0)
        if self._waiting_for_person(resource) and not resource.hinted:
            resource.hinted = True
            self.echo(f"  {resource.label} waits for the oracle: label iteration "
                      f"{resource.status.get('iteration', 0)} in the dashboard and submit it")

    def _forget(self, resource: _Resource) -> None:
        """Stop and remove the Jobs of a deleted resource (its children, garbage-collected)."""
        for name in self.jobs.observe(CHILD_LABELS[resource.kind], resource.name):
            self.jobs.delete(name)

    def _follow(self, resource: _Resource | None, registered: RegisteredResource | None) -> _Resource | None:
        """The resource as registered now: ``resource`` itself, a (re)load when it is new or its
        spec changed (a new generation, e.g. suspended through the API), or None when it is not
        registered (deleted: its Jobs are stopped)."""
        if registered is None:
            if resource is not None:
                self._forget(resource)
                self.echo(f"[{resource.label}] deleted")
            return None
        if resource is not None and spec_hash(registered.spec) == resource.spec_hash:
            return resource
        try:
            manifest = registered.parsed()
        except ValueError as error:  # an invalid manifest in the registry: keep the last good one
            self.echo(f"  ! {_label(registered.kind, registered.name)}: ignoring an invalid registered manifest: {error}")
            return resource
        reloaded = self._load(manifest, register=None)
        if resource is not None:
            reloaded.hinted = resource.hinted
        return reloaded

    def _desired(self, resource: _Resource) -> _Resource | None:
        """:meth:`_follow` with the registry's current entry for ``resource``."""
        return self._follow(resource, self.registry.get(resource.kind, resource.name))

    def _pass(self, resources: dict[Key, _Resource], registered: Mapping[Key, RegisteredResource | None]) -> None:
        """One look at everything, for ``run`` and ``serve`` alike: reap finished pods, follow the
        registry (``registered``: its entry for each resource to run, None when deleted), and
        reconcile every resource that is due. ``resources`` is updated in place."""
        for job_name, log in self.jobs.step():
            self.echo(f"  ! pod of Job {job_name} failed; last lines of {log}:")
            for line in _tail(log, 12):
                self.echo(f"      {line}")
        now = time.monotonic()
        for key, entry in registered.items():
            resource = self._follow(resources.get(key), entry)
            if resource is None:
                resources.pop(key, None)
                continue
            resources[key] = resource
            if now >= resource.next_check:
                self._tick(resource, now)

    def serve(self, stop: Any, managed_by: str = "api") -> None:
        """Reconcile every registered resource managed by ``managed_by`` until ``stop`` (a
        :class:`threading.Event`) is set: the local runner of the API gateway on one machine.
        Resources appear, change and disappear as the registry does."""
        resources: dict[Key, _Resource] = {}
        try:
            while not stop.is_set():
                wanted: dict[Key, RegisteredResource | None] = dict.fromkeys(resources)
                for kind in ("PreprocessingJob", "ActiveLearningExperiment"):
                    for registered in self.registry.list(kind):
                        if registered.managed_by == managed_by:
                            wanted[(kind, registered.name)] = registered
                self._pass(resources, wanted)
                stop.wait(self.poll)
        finally:
            self.jobs.stop()

    def _waiting_for_person(self, resource: _Resource) -> bool:
        spec = resource.manifest.spec
        return (resource.kind == "ActiveLearningExperiment" and isinstance(spec, ExperimentSpec)
                and spec.oracle.type == "human" and resource.phase == "AwaitingLabels")

    def run(self, manifests: Iterable[Manifest], timeout: float | None = None, exit_when_waiting: bool = False) -> RunResult:
        """Reconcile until done; ``exit_when_waiting`` returns when only a person can make progress."""
        resources = {(r.kind, r.name): r for r in (self._load(m) for m in manifests)}
        started = time.monotonic()
        names = ", ".join(r.label for r in resources.values())
        self.echo(f"oraculum run: {names} with the store {self.store.url} (logs in {self.jobs.log_dir})")
        try:
            while True:
                self._pass(resources, {key: self.registry.get(*key) for key in resources})
                if not resources:
                    break
                settled = [r.phase in ("Succeeded", "Failed") for r in resources.values()]
                if all(settled) and not self.jobs.busy():
                    break
                if all(s or r.phase == "Suspended" or (exit_when_waiting and self._waiting_for_person(r))
                       for s, r in zip(settled, resources.values(), strict=True)) and not self.jobs.busy():
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    self.echo(f"oraculum run: stopping after {timeout:.0f} s; run it again to resume")
                    break
                time.sleep(self.poll)
        except KeyboardInterrupt:
            self.echo("oraculum run: interrupted; run the same command again to resume")
            raise
        finally:
            self.jobs.stop()
        for resource in resources.values():
            self._save(resource)
        return RunResult({r.label: r.phase for r in resources.values()},
                         {r.label: r.status for r in resources.values()})


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def order_manifests(manifests: list[Manifest]) -> list[Manifest]:
    """PreprocessingJobs first (they make the pools the experiments read)."""
    return sorted(manifests, key=lambda m: 0 if isinstance(m, PreprocessingJob) else 1 if isinstance(m, ActiveLearningExperiment) else 2)


def load_all(paths: Iterable[str | os.PathLike[str]]) -> list[Manifest]:
    """Every manifest in the given files (folders: their *.yaml and *.yml files)."""
    from oraculum.manifests import load_manifests

    found: list[Manifest] = []
    for path in paths:
        path = Path(path)
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            found.extend(load_manifests(file))
    return order_manifests(found)
