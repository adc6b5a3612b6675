"""The local runner's Job controller and kubelet: Job dicts in, subprocesses out.

:class:`LocalJobs` plays Kubernetes for the Job dicts the state machines ask for
(:mod:`oraculum.control.jobs` builds the same dicts for a cluster): it runs each container's command
(``oraculum iterate ...``, ``oraculum preprocess --shard $(JOB_COMPLETION_INDEX)/N ...``) as a
subprocess of this Python, with the local store in ``ORACULUM_STORE``, the iteration's manifest
ConfigMap written to a folder and mounted by path substitution, pod retries up to
``backoffLimit`` (per index for Indexed Jobs), the pod failure policy's fail-fast exit code,
``parallelism`` and ``activeDeadlineSeconds``, ``$(VAR)`` in variables and ``secretKeyRef`` from
the Secrets it was given. Nothing else is simulated: the store, the CLI verbs and the state
machine are the real ones.

Apart from the runner (:mod:`oraculum.control.runner`), which decides when to look at what, because
this is a world of its own (processes, logs, mounts) that the demo and tests also drive directly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oraculum.control.decision import SPEC_HASH_ANNOTATION, ObservedJob, controller_uid
from oraculum.control.jobs import CONTAINER, POD_ONLY_ENV
from oraculum.settings import Settings

__all__ = ["LocalJobs"]

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
        meta = self.manifest["metadata"]
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
            owner_uid=controller_uid(meta.get("ownerReferences") or []),
            spec_hash=str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION) or ""),
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
