"""``oraculum run``: the operator's loop on one machine, with subprocesses instead of pods.

The same reconcile functions (:mod:`oraculum.control.reconcile`) decide; :class:`LocalJobs` plays the
Kubernetes Job controller and kubelet for the Job dicts they ask for: it runs each container's
command (``oraculum iterate ...``, ``oraculum preprocess --shard $(JOB_COMPLETION_INDEX)/N ...``) as
a subprocess of this Python, with the local store in ``ORACULUM_STORE``, the iteration's manifest
ConfigMap written to a folder and mounted by path substitution, pod retries up to
``backoffLimit`` (per index for Indexed Jobs), the pod failure policy's fail-fast exit code,
``parallelism`` and ``activeDeadlineSeconds``, ``$(VAR)`` in variables and ``secretKeyRef`` from
the Secrets it was given. Nothing else is simulated: the store, the CLI verbs and the state
machine are the real ones.

Inside the API gateway (``oraculum serve api --run-jobs``) the runner is given the API's URL and a
worker token, and its Jobs report their progress to that API exactly as pods do on a cluster
(:mod:`oraculum.progress`): the Job dicts carry the same variables and the token's ``secretKeyRef``.

Status is kept in the store under ``local/<plural>/<name>/status.json`` with the manifest's hash,
so running the same manifest again resumes where it stopped (a Job that was running when the
runner stopped is *vanished* and starts again; finished steps are found in the store), and a
changed manifest counts as a new generation (which retries a Failed resource).

The manifests themselves are registered beside the status (:mod:`oraculum.control.registry`), which is
what the API gateway lists, creates, suspends, resumes and deletes on one machine. The runner
re-reads that desired state before each reconcile, so a suspend or delete through the API reaches
a running ``oraculum run``; :meth:`LocalRunner.serve` runs whatever the API created.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oraculum.control.jobs import CONTAINER, LABEL_EXPERIMENT, LABEL_PPJ, POD_ONLY_ENV, JobConfig
from oraculum.manifests import ActiveLearningExperiment, ExperimentSpec, Manifest, PreprocessingJob
from oraculum.control.observe import observe_dataset, observe_experiment
from oraculum.control.reconcile import Decision, ObjectRef, ObservedJob, reconcile_experiment, reconcile_preprocessing
from oraculum.control.registry import KIND_PLURALS, LocalRegistry
from oraculum.control.registry import spec_hash as _spec_hash
from oraculum.settings import Settings
from oraculum.store import KeyNotFound, LocalStore, ObjectStore

__all__ = ["LocalJobs", "LocalRunner", "RunResult"]

Echo = Callable[[str], None]
#: The Secret the runner's Job dicts refer to for the worker token (it exists only in this process).
LOCAL_PROGRESS_SECRET = "oraculum-local-progress"
_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Pod:
    index: int
    attempt: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float


@dataclass
class _LocalJob:
    """One Job dict and the processes run for it."""

    manifest: dict[str, Any]
    created: datetime
    started: datetime | None = None
    running: dict[int, _Pod] = field(default_factory=dict)
    succeeded: set[int] = field(default_factory=set)
    failures: dict[int, int] = field(default_factory=dict)
    failed_reason: str | None = None
    failed_message: str = ""
    suspended: bool = False
    last_log: Path | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def completions(self) -> int:
        return int(self.spec.get("completions") or 1)

    @property
    def complete(self) -> bool:
        return len(self.succeeded) >= self.completions

    def observed(self) -> ObservedJob:
        return ObservedJob(
            name=self.name,
            active=len(self.running),
            ready=len(self.running),
            succeeded=len(self.succeeded),
            failed=sum(self.failures.values()),
            completions=self.completions,
            complete=self.complete and self.failed_reason is None,
            failed_reason=self.failed_reason,
            failed_message=self.failed_message,
            suspended=self.suspended,
            created=self.created,
            started=self.started,
        )


class LocalJobs:
    """The Job controller and kubelet of ``oraculum run``: Job dicts in, subprocesses out."""

    def __init__(self, settings: Settings, log_dir: Path, max_parallel: int | None = None,
                 secrets: dict[str, dict[str, str]] | None = None) -> None:
        self.settings = settings
        self.secrets = secrets or {}  # Secret name -> data, for the pods' secretKeyRef
        self.log_dir = log_dir
        self.max_parallel = max_parallel or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self.jobs: dict[str, _LocalJob] = {}
        self.configmaps: dict[str, dict[str, Any]] = {}
        self._mounts = Path(tempfile.mkdtemp(prefix="oraculum-run-"))

    # -- the API side ---------------------------------------------------------------------------

    def create(self, obj: dict[str, Any]) -> bool:
        """Create a Job or ConfigMap; False when it exists (the API's 409)."""
        name = obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap":
            if name in self.configmaps:
                return False
            self.configmaps[name] = obj
            return True
        if obj["kind"] != "Job":
            raise ValueError(f"the local runner cannot create a {obj['kind']}")
        if name in self.jobs:
            return False
        self.jobs[name] = _LocalJob(manifest=obj, created=_utcnow(), suspended=bool(obj["spec"].get("suspend")))
        return True

    def delete(self, name: str) -> None:
        job = self.jobs.pop(name, None)
        if job is not None:
            for pod in job.running.values():
                _terminate(pod.process)

    def set_suspended(self, name: str, suspended: bool) -> None:
        job = self.jobs.get(name)
        if job is None:
            return
        job.suspended = suspended
        if suspended:  # like Kubernetes: active pods are terminated, finished indexes stay
            for pod in job.running.values():
                _terminate(pod.process)
            job.running.clear()

    def observe(self, label: str, owner: str) -> dict[str, ObservedJob]:
        return {
            name: job.observed() for name, job in self.jobs.items()
            if job.manifest["metadata"].get("labels", {}).get(label) == owner
        }

    def busy(self) -> bool:
        return any(job.running for job in self.jobs.values())

    def stop(self) -> None:
        for job in self.jobs.values():
            for pod in job.running.values():
                _terminate(pod.process)
            job.running.clear()

    # -- the controller side --------------------------------------------------------------------

    def step(self) -> list[tuple[str, Path]]:
        """Reap finished pods, fail Jobs past their limits, start pods; returns failed pods' logs."""
        failed_logs: list[tuple[str, Path]] = []
        for job in list(self.jobs.values()):
            for index, pod in list(job.running.items()):
                code = pod.process.poll()
                if code is None:
                    continue
                del job.running[index]
                job.last_log = pod.log
                if code == 0:
                    job.succeeded.add(index)
                    continue
                job.failures[index] = job.failures.get(index, 0) + 1
                failed_logs.append((job.name, pod.log))
                self._judge(job, index, code)
            deadline = job.spec.get("activeDeadlineSeconds")
            if (job.failed_reason is None and not job.complete and deadline and job.started is not None
                    and (_utcnow() - job.started).total_seconds() > float(deadline)):
                job.failed_reason, job.failed_message = "DeadlineExceeded", "Job was active longer than specified deadline"
            if job.failed_reason is not None:
                for pod in job.running.values():
                    _terminate(pod.process)
                job.running.clear()
        self._start_pods()
        return failed_logs

    def _judge(self, job: _LocalJob, index: int, code: int) -> None:
        for rule in (job.spec.get("podFailurePolicy") or {}).get("rules", []):
            exits = rule.get("onExitCodes")
            if exits and exits.get("operator") == "In" and code in exits.get("values", []) and rule.get("action") == "FailJob":
                job.failed_reason = "PodFailurePolicy"
                job.failed_message = f"Container {CONTAINER} for pod {job.name}-{index} failed with exit code {code} matching FailJob rule"
                return
        per_index = job.spec.get("backoffLimitPerIndex")
        if per_index is not None:
            if job.failures[index] > int(per_index):
                job.failed_reason = "FailedIndexes"
                job.failed_message = f"Job has failed indexes: {index} (exit code {code})"
        elif sum(job.failures.values()) > int(job.spec.get("backoffLimit", 6)):
            job.failed_reason = "BackoffLimitExceeded"
            job.failed_message = f"Job has reached the specified backoff limit (last exit code {code})"

    def _start_pods(self) -> None:
        free = self.max_parallel - sum(len(job.running) for job in self.jobs.values())
        for job in self.jobs.values():
            if free <= 0:
                return
            if job.suspended or job.failed_reason is not None or job.complete:
                continue
            parallelism = int(job.spec.get("parallelism") or 1)
            for index in range(job.completions):
                if free <= 0 or len(job.running) >= parallelism:
                    break
                if index in job.succeeded or index in job.running:
                    continue
                job.running[index] = self._start(job, index)
                job.started = job.started or _utcnow()
                free -= 1

    def _mount(self, configmap: str) -> Path:
        folder = self._mounts / configmap
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for key, value in self.configmaps.get(configmap, {}).get("data", {}).items():
                (folder / key).write_text(value, encoding="utf-8")
        return folder

    def _start(self, job: _LocalJob, index: int) -> _Pod:
        pod_spec = job.spec["template"]["spec"]
        container = next(c for c in pod_spec["containers"] if c["name"] == CONTAINER)
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        paths: dict[str, str] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume:
                paths[mount["mountPath"]] = str(self._mount(volume["configMap"]["name"]))
        env = dict(os.environ)
        env.update({"ORACULUM_STORE": self.settings.store, "JOB_COMPLETION_INDEX": str(index)})
        for name in ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_region", "cache_dir"):
            value = getattr(self.settings, name)
            if value:
                env[f"ORACULUM_{name.upper()}"] = str(value)
        for item in container.get("env", []):
            if item["name"] in POD_ONLY_ENV:
                continue
            if "value" in item:  # like the kubelet: $(VAR) of the variables defined so far
                env[item["name"]] = _VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                value = self.secrets.get(ref.get("name", ""), {}).get(ref.get("key", ""))
                if value is not None:
                    env[item["name"]] = value
                else:  # an optional reference is left unset, as a pod would; never inherit this machine's
                    env.pop(item["name"], None)

        def local(arg: str) -> str:
            arg = _VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), arg)
            for mount, folder in paths.items():
                if arg == mount or arg.startswith(mount + "/"):
                    return folder + arg[len(mount):]
            return arg

        command = [local(part) for part in container.get("command", [])] + [local(a) for a in container.get("args", [])]
        if command and command[0] == "oraculum":  # the image's entry point: this installation's CLI
            command = [sys.executable, "-m", "oraculum.cli.main", *command[1:]]
        attempt = job.failures.get(index, 0)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{job.name}-{index}-{attempt}.log"
        handle = open(log, "wb")
        try:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            handle.close()
        return _Pod(index, attempt, process, log, time.monotonic())


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class _Resource:
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
    def plural(self) -> str:
        return KIND_PLURALS[self.kind]

    @property
    def label(self) -> str:
        return f"{'ale' if self.kind == 'ActiveLearningExperiment' else 'ppj'}/{self.name}"

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", "Pending"))


@dataclass
class RunResult:
    """How each resource ended: ``{"ale/name": "Succeeded", ...}``."""

    phases: dict[str, str]
    statuses: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(phase == "Succeeded" for phase in self.phases.values())


def _status_key(plural: str, name: str) -> str:
    return f"local/{plural}/{name}/status.json"


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

    def _load(self, manifest: Manifest, register: str | None = "oraculum-run") -> _Resource:
        kind = manifest.kind
        plural = KIND_PLURALS[kind]
        raw_spec = manifest.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        spec_hash = _spec_hash(raw_spec)
        if register:
            self.registry.apply(manifest, managed_by=register)
        try:
            saved = json.loads(self.store.get_bytes(_status_key(plural, manifest.metadata.name)))
        except KeyNotFound:
            saved = {}
        generation = int(saved.get("generation", 1))
        if saved and saved.get("specHash") != spec_hash:
            generation += 1
        return _Resource(
            manifest=manifest, kind=kind, name=manifest.metadata.name, raw_spec=raw_spec,
            status=saved.get("status", {}), generation=generation, uid=saved.get("uid") or f"local-{uuid.uuid4()}",
            spec_hash=spec_hash,
        )

    def _save(self, resource: _Resource) -> None:
        document = {"kind": resource.kind, "name": resource.name, "uid": resource.uid, "generation": resource.generation,
                    "specHash": resource.spec_hash, "status": resource.status}
        self.store.put_bytes(_status_key(resource.plural, resource.name), (json.dumps(document, indent=2) + "\n").encode())

    def _reconcile(self, resource: _Resource) -> Decision:
        ref = ObjectRef(kind=resource.kind, name=resource.name, namespace=None, uid=resource.uid,  # type: ignore[arg-type]
                        generation=resource.generation)
        now = _utcnow()
        if resource.kind == "ActiveLearningExperiment":
            spec = resource.manifest.spec
            assert isinstance(spec, ExperimentSpec)
            iteration = int(resource.status.get("iteration", 0))
            observation = observe_experiment(self.store, resource.name, spec, iteration)
            jobs = self.jobs.observe(LABEL_EXPERIMENT, resource.name)
            return reconcile_experiment(ref, resource.raw_spec, resource.status, jobs, observation, now, self.config)
        observation = observe_dataset(self.store, resource.manifest.spec.dataset)  # type: ignore[union-attr]
        jobs = self.jobs.observe(LABEL_PPJ, resource.name)
        return reconcile_preprocessing(ref, resource.raw_spec, resource.status, jobs, observation, now, self.config)

    def _apply(self, resource: _Resource, decision: Decision) -> None:
        for obj in decision.create:
            self.jobs.create(obj)
        for name in decision.delete:
            self.jobs.delete(name)
        for name, suspended in decision.suspend.items():
            self.jobs.set_suspended(name, suspended)
        for event in decision.events:
            mark = "!" if event.type == "Warning" else "-"
            self.echo(f"  {mark} {resource.label}: {event.reason}: {event.message}")
        old_message = resource.status.get("message")
        resource.status = decision.status
        if decision.status.get("message") != old_message:
            self.echo(f"[{resource.label}] {decision.phase}: {decision.status.get('message', '')}")
        self._save(resource)

    def _tick(self, resource: _Resource, now: float) -> None:
        decision = self._reconcile(resource)
        self._apply(resource, decision)
        delay = decision.requeue_after if decision.requeue_after is not None else self.poll
        resource.next_check = now + min(max(delay, 0.0), 5.0)
        if self._waiting_for_person(resource) and not resource.hinted:
            resource.hinted = True
            self.echo(f"  {resource.label} waits for the oracle: label iteration "
                      f"{resource.status.get('iteration', 0)} in the dashboard and submit it")

    def _forget(self, resource: _Resource) -> None:
        """Stop and remove the Jobs of a deleted resource (its children, garbage-collected)."""
        label = LABEL_EXPERIMENT if resource.kind == "ActiveLearningExperiment" else LABEL_PPJ
        for name in self.jobs.observe(label, resource.name):
            self.jobs.delete(name)

    def _desired(self, resource: _Resource) -> _Resource | None:
        """The resource as registered now: itself, a reload after a spec change (a new
        generation, e.g. suspended through the API), or None when it was deleted."""
        registered = self.registry.get(resource.kind, resource.name)
        if registered is None:
            self._forget(resource)
            self.echo(f"[{resource.label}] deleted")
            return None
        if _spec_hash(registered.spec) == resource.spec_hash:
            return resource
        try:
            manifest = registered.parsed()
        except ValueError as error:  # an invalid manifest in the registry: keep the last good one
            self.echo(f"  ! {resource.label}: ignoring an invalid registered manifest: {error}")
            return resource
        reloaded = self._load(manifest, register=None)
        reloaded.hinted = resource.hinted
        return reloaded

    def serve(self, stop: Any, managed_by: str = "api") -> None:
        """Reconcile every registered resource managed by ``managed_by`` until ``stop`` (a
        :class:`threading.Event`) is set: the local runner of the API gateway on one machine.
        Resources appear, change and disappear as the registry does."""
        resources: dict[tuple[str, str], _Resource] = {}
        try:
            while not stop.is_set():
                for job_name, log in self.jobs.step():
                    self.echo(f"  ! pod of Job {job_name} failed; last lines of {log}:")
                    for line in _tail(log, 12):
                        self.echo(f"      {line}")
                wanted = {}
                for kind in ("PreprocessingJob", "ActiveLearningExperiment"):
                    for registered in self.registry.list(kind):
                        if registered.managed_by == managed_by:
                            wanted[(kind, registered.name)] = registered
                for key in list(resources):
                    if key not in wanted:
                        self._forget(resources.pop(key))
                now = time.monotonic()
                for key, registered in wanted.items():
                    resource = resources.get(key)
                    if resource is None or resource.spec_hash != _spec_hash(registered.spec):
                        try:
                            fresh = self._load(registered.parsed(), register=None)
                        except ValueError as error:
                            self.echo(f"  ! {key[0]} {key[1]}: invalid registered manifest: {error}")
                            continue
                        if resource is not None:
                            fresh.hinted = resource.hinted
                        resources[key] = resource = fresh
                    if now >= resource.next_check:
                        self._tick(resource, now)
                stop.wait(self.poll)
        finally:
            self.jobs.stop()

    def _waiting_for_person(self, resource: _Resource) -> bool:
        spec = resource.manifest.spec
        return (resource.kind == "ActiveLearningExperiment" and isinstance(spec, ExperimentSpec)
                and spec.oracle.type == "human" and resource.phase == "AwaitingLabels")

    def run(self, manifests: Iterable[Manifest], timeout: float | None = None, exit_when_waiting: bool = False) -> RunResult:
        """Reconcile until done; ``exit_when_waiting`` returns when only a person can make progress."""
        resources = [self._load(m) for m in manifests]
        started = time.monotonic()
        names = ", ".join(r.label for r in resources)
        self.echo(f"oraculum run: {names} with the store {self.store.url} (logs in {self.jobs.log_dir})")
        try:
            while True:
                for job_name, log in self.jobs.step():
                    self.echo(f"  ! pod of Job {job_name} failed; last lines of {log}:")
                    for line in _tail(log, 12):
                        self.echo(f"      {line}")
                now = time.monotonic()
                for resource in list(resources):
                    if now < resource.next_check:
                        continue
                    current = self._desired(resource)
                    if current is None:
                        resources.remove(resource)
                        continue
                    if current is not resource:
                        resources[resources.index(resource)] = resource = current
                    self._tick(resource, now)
                if not resources:
                    break
                settled = [r.phase in ("Succeeded", "Failed") for r in resources]
                if all(settled) and not self.jobs.busy():
                    break
                if all(s or r.phase == "Suspended" or (exit_when_waiting and self._waiting_for_person(r))
                       for s, r in zip(settled, resources, strict=True)) and not self.jobs.busy():
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
        for resource in resources:
            self._save(resource)
        return RunResult({r.label: r.phase for r in resources}, {r.label: r.status for r in resources})


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


__all__ += ["load_all", "order_manifests"]
