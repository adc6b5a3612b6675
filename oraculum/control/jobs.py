"""Child Job and ConfigMap manifests as plain dicts: what a resource asks Kubernetes to run.

Pure functions, no Kubernetes client: the operator posts these dicts to the API server, and the
local runner (``oraculum run``) reads the container command out of the very same dicts and runs
it as a subprocess. So a Job on a cluster and a step on a laptop cannot drift apart.

What every Job gets, and why:

* a deterministic name (``<experiment>-iter-<k>``, ``<ppj>-preprocess``): a retried or restarted
  reconcile creates the same name again and HTTP 409 tells it the Job already exists;
* the hash of the spec it was built from (annotation ``oraculum.dev/spec-hash``), so a later look
  can tell a Job that still does what the spec asks from one made before an edit;
* an owner reference to its resource, so deleting the resource deletes its Jobs (Kubernetes'
  garbage collector; no finalizer that could get stuck when the operator is gone);
* ``ttlSecondsAfterFinished`` (finished Jobs do not pile up; the store keeps the results),
  ``backoffLimit`` and a ``podFailurePolicy`` that ignores evictions and preemptions
  (``DisruptionTarget``) and fails at once on a usage error (exit code 2), and
  ``activeDeadlineSeconds`` so a hung pod cannot hold a GPU forever;
* object-store settings only by reference: ``envFrom`` a ConfigMap (endpoint, bucket) and a
  Secret (credentials), never a value in the manifest;
* a non-root, read-only-root-filesystem security context, with ``/tmp`` as an emptyDir;
* when the installation has an API to report to (``api_url``), the variables of
  :mod:`oraculum.progress`: the API's URL, the resource and Job it reports for, and a worker token
  by ``secretKeyRef`` (``optional``: in a namespace without that Secret the Job simply does not
  report, it never fails to start).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from oraculum import __version__
from oraculum.control.decision import SPEC_HASH_ANNOTATION
from oraculum.manifests import API_VERSION, ExperimentSpec, PreprocessingJobSpec, ResourcesSpec
from oraculum.progress import ENV_API_URL, ENV_JOB, ENV_KIND, ENV_NAME, ENV_TOKEN

__all__ = [
    "CONTAINER",
    "JobConfig",
    "LABEL_EXPERIMENT",
    "LABEL_ITERATION",
    "LABEL_PPJ",
    "LABEL_PURPOSE",
    "MANAGED_BY",
    "MANIFEST_FILE",
    "MANIFEST_MOUNT",
    "POD_ONLY_ENV",
    "child_name",
    "experiment_job",
    "experiment_job_name",
    "manifest_configmap",
    "manifest_configmap_name",
    "merge_pod_template",
    "owner_reference",
    "preprocess_job",
    "preprocess_job_name",
    "progress_env",
    "spec_digest",
]

#: Labels on every child object; the operator finds its Jobs with these selectors.
MANAGED_BY = "oraculum-operator"
LABEL_EXPERIMENT = "oraculum.dev/experiment"
LABEL_PPJ = "oraculum.dev/preprocessingjob"
LABEL_PURPOSE = "oraculum.dev/purpose"
LABEL_ITERATION = "oraculum.dev/iteration"
#: The container name (pod failure policy rules refer to it).
CONTAINER = "oraculum"
#: Where an iteration's experiment manifest is mounted in its pods.
MANIFEST_MOUNT = "/etc/oraculum"
MANIFEST_FILE = "experiment.yaml"
#: Variables that point into the pod's own filesystem (``/tmp`` is an emptyDir there); the local
#: runner keeps the machine's values for these instead.
POD_ONLY_ENV = frozenset({"HOME", "ORACULUM_CACHE_DIR", "MPLCONFIGDIR"})
#: Exit code of a usage error (click): retrying cannot help, so the Job fails at once.
USAGE_ERROR_EXIT_CODE = 2


class JobConfig(BaseSettings):
    """How child Jobs are built on this installation (the chart sets these on the operator).

    Environment variables ``ORACULUM_JOB_<FIELD>``, e.g. ``ORACULUM_JOB_IMAGE``.
    """

    model_config = SettingsConfigDict(env_prefix="ORACULUM_JOB_", extra="ignore")

    image: str = Field(f"oraculum:{__version__}", description="Image with the oraculum CLI.")
    gpu_image: str | None = Field(None, description="Image for pods that request GPUs (default: image).")
    image_pull_policy: str = Field("IfNotPresent", description="imagePullPolicy of the containers.")
    service_account: str | None = Field(None, description="serviceAccountName of the pods (default: the namespace's).")
    settings_configmap: str = Field(
        "oraculum-settings", description="ConfigMap with ORACULUM_* settings (store URL, S3 endpoint) for envFrom."
    )
    s3_secret: str = Field(
        "oraculum-s3", description="Secret with ORACULUM_S3_ACCESS_KEY / ORACULUM_S3_SECRET_KEY for envFrom."
    )
    ttl_seconds_after_finished: int = Field(86_400, ge=0, description="Finished Jobs are deleted after this.")
    backoff_limit: int = Field(2, ge=0, description="Pod retries of a Job (evictions do not count).")
    iterate_deadline_seconds: int = Field(43_200, ge=60, description="activeDeadlineSeconds of an iteration Job.")
    step_deadline_seconds: int = Field(3_600, ge=60, description="activeDeadlineSeconds of answer/evaluate Jobs.")
    preprocess_deadline_seconds: int = Field(86_400, ge=60, description="activeDeadlineSeconds of a preprocessing Job.")
    pending_timeout_seconds: float = Field(
        600, ge=0, description="A Job whose pods are not running after this long is reported as unschedulable."
    )
    run_as_user: int = Field(10001, ge=1, description="UID the containers run as (non-root; the images create uid 10001).")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels added to pods that request GPUs (JSON in the environment); the resource's own "
        "node_selector wins on the same key.",
    )
    api_url: str | None = Field(
        None,
        description="The API gateway as Job pods reach it, e.g. http://oraculum-api.oraculum.svc:8000; running "
        "Jobs report their progress there (oraculum.progress). Unset: Jobs do not report.",
    )
    progress_secret: str | None = Field(
        None, description="Secret in the Job's namespace whose key progress_secret_key is a worker token for "
        "progress reports (optional in the pod: without it a Job does not report).",
    )
    progress_secret_key: str = Field("token", description="Key of the worker token in progress_secret.")
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations added to pods that request GPUs (JSON in the environment), e.g. for the "
        "nvidia.com/gpu taint of GPU nodes; the resource's own tolerations are kept.",
    )


def child_name(base: str, suffix: str, limit: int = 63) -> str:
    """``base + suffix`` within Kubernetes' 63-character limit for names used as label values.

    Too long a base is cut and given a hash of the full name, so the result stays unique and
    the same on every call (determinism is what makes creation idempotent).
    """
    full = f"{base}{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def experiment_job_name(experiment: str, purpose: str, iteration: int) -> str:
    """``<experiment>-iter-<k>`` (train and choose), ``-answer-<k>`` (simulated oracle), ``-eval-<k>``."""
    suffix = {"iterate": "iter", "answer": "answer", "evaluate": "eval"}[purpose]
    return child_name(experiment, f"-{suffix}-{iteration}")


def preprocess_job_name(ppj: str) -> str:
    return child_name(ppj, "-preprocess")


def spec_digest(spec: BaseModel, salt: str = "") -> str:
    """A short hash of what a spec asks a Job to do: the validated spec in its canonical form,
    without ``suspend`` (pausing changes no Job's work), optionally salted (e.g. with the owner's uid)."""
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    document.pop("suspend", None)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()[:10]


def manifest_configmap_name(experiment: str, uid: str, spec: ExperimentSpec, iteration: int) -> str:
    """``<experiment>-iter-<k>-<hash>``: the hash of the spec and the experiment's uid, so that a
    retry after a spec change (or a new experiment of the same name) mounts its own manifest and
    never the one an earlier attempt left behind, while the same spec asks for the same ConfigMap
    again (409: it is there, with this very content)."""
    return child_name(experiment, f"-iter-{iteration}-{spec_digest(spec, uid)}")


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """The owner reference that makes Kubernetes delete a child with its resource."""
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}


def _merge_named(base: list[Any], override: list[Any]) -> list[Any]:
    """Lists of named items (containers, volumes, env) merge by name; other lists are replaced."""
    if not all(isinstance(item, dict) and "name" in item for item in [*base, *override]):
        return copy.deepcopy(override)
    merged = [copy.deepcopy(item) for item in base]
    positions = {item["name"]: i for i, item in enumerate(merged)}
    for item in override:
        if item["name"] in positions:
            merged[positions[item["name"]]] = merge_pod_template(merged[positions[item["name"]]], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged


def merge_pod_template(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a user's partial pod template over the generated one.

    Mappings merge key by key, lists of named items (containers, volumes, env, volumeMounts)
    merge by name, and anything else in the override replaces the generated value. A ``null``
    removes a generated field. So ``{spec: {containers: [{name: oraculum, env: [...]}]}}``
    adds variables without restating the container.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_pod_template(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_named(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def progress_env(config: JobConfig, kind: str, name: str, job: str) -> list[dict[str, Any]]:
    """The variables a pod reports its progress with (:mod:`oraculum.progress`); none without an API.

    ``job`` may refer to earlier variables as ``$(VAR)`` (the kubelet expands it), e.g. the
    completion index of an Indexed Job's pod, so each shard reports on its own line.
    """
    if not config.api_url:
        return []
    env: list[dict[str, Any]] = [
        {"name": ENV_API_URL, "value": config.api_url},
        {"name": ENV_KIND, "value": kind},
        {"name": ENV_NAME, "value": name},
        {"name": ENV_JOB, "value": job},
    ]
    if config.progress_secret:
        env.append({"name": ENV_TOKEN, "valueFrom": {"secretKeyRef": {
            "name": config.progress_secret, "key": config.progress_secret_key, "optional": True}}})
    return env


def _labels(owner_label: str, owner: str, purpose: str, iteration: int | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "oraculum",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": purpose,
        owner_label: owner,
        LABEL_PURPOSE: purpose,
    }
    if iteration is not None:
        labels[LABEL_ITERATION] = str(iteration)
    return labels


def _pod_template(
    config: JobConfig, resources: ResourcesSpec, args: list[str], labels: dict[str, str],
    extra_env: list[dict[str, Any]], volumes: list[dict[str, Any]], mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpu:
        limits["nvidia.com/gpu"] = resources.gpu
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": (config.gpu_image or config.image) if resources.gpu else config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["oraculum"],
        "args": ["--no-progress", *args],
        "envFrom": [
            {"configMapRef": {"name": config.settings_configmap, "optional": True}},
            {"secretRef": {"name": config.s3_secret, "optional": True}},
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "ORACULUM_CACHE_DIR", "value": "/tmp/oraculum-cache"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            *extra_env,
        ],
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
    }
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    node_selector = {**config.gpu_node_selector, **resources.node_selector} if resources.gpu else dict(resources.node_selector)
    tolerations = copy.deepcopy(resources.tolerations)
    if resources.gpu:  # the installation's GPU placement (chart: workers.gpu), after the resource's own
        tolerations += [copy.deepcopy(t) for t in config.gpu_tolerations if t not in tolerations]
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    template = {"metadata": {"labels": dict(labels)}, "spec": spec}
    if resources.pod_template:
        template = merge_pod_template(template, resources.pod_template)
    return template


def _job(
    name: str, namespace: str | None, labels: dict[str, str], owner: dict[str, Any], template: dict[str, Any],
    config: JobConfig, deadline: int, spec_hash: str, extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels), "annotations": {SPEC_HASH_ANNOTATION: spec_hash},
                                "ownerReferences": [owner]}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {
        "backoffLimit": config.backoff_limit,
        "activeDeadlineSeconds": deadline,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": [USAGE_ERROR_EXIT_CODE]}},
            ]
        },
        "template": template,
    }
    spec.update(extra_spec or {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def manifest_configmap(
    experiment: str, namespace: str | None, uid: str, spec: ExperimentSpec, iteration: int
) -> dict[str, Any]:
    """The experiment manifest an iteration's pods read (``MANIFEST_MOUNT/MANIFEST_FILE``).

    One per iteration and spec (:func:`manifest_configmap_name`): a Job reads the spec as it was
    when the Job was made, editing the experiment never changes the input of a Job that is already
    running, and each attempt's spec stays visible beside it.
    """
    document = {
        "apiVersion": API_VERSION,
        "kind": "ActiveLearningExperiment",
        "metadata": {"name": experiment, **({"namespace": namespace} if namespace else {})},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    metadata: dict[str, Any] = {
        "name": manifest_configmap_name(experiment, uid, spec, iteration),
        "labels": _labels(LABEL_EXPERIMENT, experiment, "manifest", iteration),
        "ownerReferences": [owner_reference("ActiveLearningExperiment", experiment, uid)],
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {MANIFEST_FILE: yaml.safe_dump(document, sort_keys=False, allow_unicode=True)},
    }


def experiment_job(
    experiment: str, namespace: str | None, uid: str, spec: ExperimentSpec, purpose: str, iteration: int,
    config: JobConfig,
) -> dict[str, Any]:
    """The Job of one step of iteration ``iteration``.

    ``iterate`` runs ``oraculum iterate`` (train, score the pool, choose the batch) with the
    experiment's resources (GPUs, node selector, tolerations, pod template); ``answer`` runs the
    simulated oracle and ``evaluate`` the performance estimate, both small CPU pods.
    """
    name = experiment_job_name(experiment, purpose, iteration)
    labels = _labels(LABEL_EXPERIMENT, experiment, purpose, iteration)
    manifest = f"{MANIFEST_MOUNT}/{MANIFEST_FILE}"
    args = {
        "iterate": ["iterate", manifest, "--iteration", str(iteration)],
        "answer": ["answer", manifest, "--iteration", str(iteration)],
        "evaluate": ["evaluate", manifest, "--iteration", str(iteration)],
    }[purpose]
    if purpose == "iterate":
        resources = spec.resources
        deadline = config.iterate_deadline_seconds
    else:  # light steps: no GPU, but the same placement rules (the store may only be reachable there)
        resources = spec.resources.model_copy(update={"gpu": 0, "cpu": "250m", "memory": "1Gi"})
        deadline = config.step_deadline_seconds
    volumes = [{"name": "manifest", "configMap": {"name": manifest_configmap_name(experiment, uid, spec, iteration)}}]
    mounts = [{"name": "manifest", "mountPath": MANIFEST_MOUNT, "readOnly": True}]
    env = progress_env(config, "ActiveLearningExperiment", experiment, name)
    template = _pod_template(config, resources, args, labels, env, volumes, mounts)
    owner = owner_reference("ActiveLearningExperiment", experiment, uid)
    return _job(name, namespace, labels, owner, template, config, deadline, spec_digest(spec))


def preprocess_job(
    ppj: str, namespace: str | None, uid: str, spec: PreprocessingJobSpec, config: JobConfig
) -> dict[str, Any]:
    """One Indexed Job: ``completions`` = shards, pod *i* runs ``oraculum preprocess --shard i/N``.

    The index reaches the command through ``$(JOB_COMPLETION_INDEX)``, which the kubelet expands
    from the pod's environment (declared explicitly from the downward API so the expansion never
    depends on the Job controller's own injection). Each shard is retried on its own
    (``backoffLimitPerIndex``), and the last shard to finish writes the dataset index.
    """
    name = preprocess_job_name(ppj)
    labels = _labels(LABEL_PPJ, ppj, "preprocess", None)
    grid = spec.grid
    args = [
        "preprocess", spec.source.location(spec.grid), "--dataset", spec.dataset,
        "--shard", f"$(JOB_COMPLETION_INDEX)/{spec.shards}",
        "--start", repr(grid.start), "--end", repr(grid.end), "--points", str(grid.points),
        "--spacing", grid.spacing, "--medium", grid.medium,
        "--normalisation", spec.normalisation, "--continuum-degree", str(spec.continuum_degree),
        "--max-masked-fraction", repr(spec.max_masked_fraction), "--max-masked-gap", repr(spec.max_masked_gap_A),
    ]
    if spec.blur_sigma_px is not None:
        args += ["--blur-sigma", repr(spec.blur_sigma_px)]
    if spec.source.url is not None:
        for pattern in spec.source.patterns:
            args += ["--glob", pattern]
    index_env = [{
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
    }]
    env = index_env + progress_env(config, "PreprocessingJob", ppj, f"{name}-$(JOB_COMPLETION_INDEX)")
    template = _pod_template(config, spec.resources, args, labels, env, [], [])
    owner = owner_reference("PreprocessingJob", ppj, uid)
    extra = {
        "completionMode": "Indexed",
        "completions": spec.shards,
        "parallelism": min(spec.parallelism, spec.shards),
        "backoffLimitPerIndex": config.backoff_limit,
    }
    job = _job(name, namespace, labels, owner, template, config, config.preprocess_deadline_seconds, spec_digest(spec),
               extra)
    # backoffLimitPerIndex replaces the Job-wide limit (both may not be mixed meaningfully)
    job["spec"].pop("backoffLimit")
    return job
