"""Child Job and ConfigMap manifests (pure dicts): names, ownership, limits, placement, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from oraculum.control.jobs import (
    MANIFEST_FILE,
    JobConfig,
    child_name,
    experiment_job,
    experiment_job_name,
    manifest_configmap,
    manifest_configmap_name,
    merge_pod_template,
    preprocess_job,
    spec_digest,
)
from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec, load_manifests

CONFIG = JobConfig(image="registry.example/oraculum:1.0", gpu_image="registry.example/oraculum-gpu:1.0",
                   settings_configmap="oraculum-settings", s3_secret="oraculum-s3")


def spec(**resources: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "dataset": "pool",
        "classes": [{"name": "absorption"}, {"name": "emission", "target": True}],
        "resources": resources,
    })


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_names_are_deterministic_and_fit_kubernetes_limits() -> None:
    assert experiment_job_name("exp", "iterate", 3) == "exp-iter-3"
    assert experiment_job_name("exp", "answer", 3) == "exp-answer-3"
    assert experiment_job_name("exp", "evaluate", 3) == "exp-eval-3"
    long = "a" * 63
    name = child_name(long, "-iter-12")
    assert len(name) == 63 and name.endswith("-iter-12") and name == child_name(long, "-iter-12")
    assert child_name("b" + "a" * 62, "-iter-12") != name


def test_iteration_job_has_owner_limits_and_failure_policy() -> None:
    job = experiment_job("exp", "lab", "uid-1", spec(), "iterate", 2, CONFIG)
    assert job["apiVersion"] == "batch/v1" and job["metadata"]["name"] == "exp-iter-2" and job["metadata"]["namespace"] == "lab"
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment", "name": "exp", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True}]
    labels = job["metadata"]["labels"]
    assert labels["oraculum.dev/experiment"] == "exp" and labels["oraculum.dev/iteration"] == "2"
    assert labels["app.kubernetes.io/managed-by"] == "oraculum-operator"
    s = job["spec"]
    assert s["ttlSecondsAfterFinished"] == CONFIG.ttl_seconds_after_finished
    assert s["backoffLimit"] == CONFIG.backoff_limit
    assert s["activeDeadlineSeconds"] == CONFIG.iterate_deadline_seconds
    rules = s["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules  # evictions do not count
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules)  # usage errors fail fast
    pod = s["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    c = container(job)
    assert c["command"] == ["oraculum"]
    assert c["args"] == ["--no-progress", "iterate", "/etc/oraculum/experiment.yaml", "--iteration", "2"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "manifest", "configMap": {"name": manifest_configmap_name("exp", "uid-1", spec(), 2)}} in pod["volumes"]
    assert job["metadata"]["annotations"] == {"oraculum.dev/spec-hash": spec_digest(spec())}


def test_object_store_credentials_come_only_from_references() -> None:
    job = experiment_job("exp", "lab", "uid-1", spec(), "iterate", 0, CONFIG)
    c = container(job)
    assert c["envFrom"] == [{"configMapRef": {"name": "oraculum-settings", "optional": True}},
                            {"secretRef": {"name": "oraculum-s3", "optional": True}}]
    text = json.dumps(job).lower()
    for forbidden in ("access_key", "secret_key", "password", "aws_"):
        assert forbidden not in text
    assert all("value" in e or "valueFrom" in e for e in c["env"])


def test_gpu_node_selector_and_tolerations() -> None:
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    job = experiment_job("exp", "lab", "u", spec(gpu=2, nodeSelector={"accelerator": "a100"}, tolerations=tolerations,
                                                 cpu="4", memory="16Gi"), "iterate", 0, CONFIG)
    c = container(job)
    assert c["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": 2}}
    assert c["image"] == CONFIG.gpu_image
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"accelerator": "a100"} and pod["tolerations"] == tolerations
    # the light steps of the same iteration take no GPU but keep the placement rules
    for purpose in ("answer", "evaluate"):
        light = experiment_job("exp", "lab", "u", spec(gpu=2, nodeSelector={"accelerator": "a100"}), purpose, 0, CONFIG)
        assert "nvidia.com/gpu" not in container(light)["resources"]["limits"] and container(light)["image"] == CONFIG.image
        assert light["spec"]["activeDeadlineSeconds"] == CONFIG.step_deadline_seconds
    cpu_only = experiment_job("exp", "lab", "u", spec(), "iterate", 0, CONFIG)
    assert "nvidia.com/gpu" not in container(cpu_only)["resources"]["limits"] and container(cpu_only)["image"] == CONFIG.image


def test_pod_template_override_merges_by_name() -> None:
    override = {
        "metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}},
        "spec": {
            "priorityClassName": "high",
            "securityContext": {"runAsUser": 2000},
            "containers": [{"name": "oraculum", "env": [{"name": "TF_NUM_INTRAOP_THREADS", "value": "4"}]},
                           {"name": "sidecar", "image": "busybox"}],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
            "tolerations": None,
        },
    }
    job = experiment_job("exp", "lab", "u", spec(tolerations=[{"key": "x", "operator": "Exists"}], podTemplate=override),
                         "iterate", 0, CONFIG)
    template = job["spec"]["template"]
    pod = template["spec"]
    assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert template["metadata"]["labels"]["oraculum.dev/experiment"] == "exp"  # generated labels kept
    assert pod["priorityClassName"] == "high"
    assert pod["securityContext"]["runAsUser"] == 2000 and pod["securityContext"]["runAsNonRoot"] is True
    names = [c["name"] for c in pod["containers"]]
    assert names == ["oraculum", "sidecar"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"TF_NUM_INTRAOP_THREADS", "HOME"} <= env  # added, not replaced
    assert pod["containers"][0]["args"][1] == "iterate"
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "manifest", "scratch"}
    assert "tolerations" not in pod  # null removes
    assert merge_pod_template({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}  # unnamed lists are replaced


def test_manifest_configmap_round_trips_to_the_same_spec(tmp_path: Path) -> None:
    s = spec(gpu=1)
    configmap = manifest_configmap("exp", "lab", "uid-1", s, 4)
    assert configmap["metadata"]["name"] == manifest_configmap_name("exp", "uid-1", s, 4)
    assert configmap["metadata"]["name"].startswith("exp-iter-4-")
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    path = tmp_path / MANIFEST_FILE
    path.write_text(configmap["data"][MANIFEST_FILE])
    (manifest,) = load_manifests(path)
    assert manifest.metadata.name == "exp" and manifest.spec == s


def test_preprocess_is_one_indexed_job_with_the_index_from_the_downward_api() -> None:
    ppj = PreprocessingJobSpec.model_validate({
        "source": {"url": "s3://lamost/dr2/", "patterns": ["*.fits.gz"]}, "dataset": "lamost-dr2", "shards": 8,
        "parallelism": 20, "blurSigmaPx": 7, "grid": {"start": 6500, "end": 6700, "points": 200, "medium": "air"},
    })
    job = preprocess_job("lamost", "lab", "uid-9", ppj, CONFIG)
    s = job["spec"]
    assert job["metadata"]["name"] == "lamost-preprocess"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "PreprocessingJob"
    assert s["completionMode"] == "Indexed" and s["completions"] == 8 and s["parallelism"] == 8  # capped
    assert s["backoffLimitPerIndex"] == CONFIG.backoff_limit and "backoffLimit" not in s
    assert s["ttlSecondsAfterFinished"] and s["activeDeadlineSeconds"] == CONFIG.preprocess_deadline_seconds
    c = container(job)
    assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} in c["env"]
    args = c["args"]
    assert args[:3] == ["--no-progress", "preprocess", "s3://lamost/dr2/"]
    assert args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/8"
    assert args[args.index("--blur-sigma") + 1] == "7.0" and args[args.index("--medium") + 1] == "air"
    assert args[args.index("--glob") + 1] == "*.fits.gz"
    synthetic = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 500, "seed": 3}}, "dataset": "s"})
    args = container(preprocess_job("s", "lab", "u", synthetic, CONFIG))["args"]
    assert args[2] == "synthetic:500?seed=3" and "--glob" not in args


def test_the_preprocess_jobs_arguments_give_the_specs_parameters(monkeypatch: Any) -> None:
    """Every preprocessing parameter of the spec reaches the pod: the CLI, given the Job's own
    arguments, builds exactly ``spec.parameters()`` (masking limits included)."""
    from click.testing import CliRunner

    import oraculum.cli.data as data
    from oraculum.cli import main

    ppj = PreprocessingJobSpec.model_validate({
        "source": {"url": "s3://lamost/dr2/"}, "dataset": "lamost-dr2", "blurSigmaPx": 3,
        "grid": {"start": 6500, "end": 6700, "points": 200, "spacing": "log", "medium": "air"},
        "normalisation": "continuum", "continuumDegree": 3, "maxMaskedFraction": 0.35, "maxMaskedGapA": 25,
    })
    args = container(preprocess_job("lamost", "lab", "uid-9", ppj, CONFIG))["args"]
    built: list[Any] = []

    class Built(Exception):
        """Stops the verb once its parameters are built: nothing is read or written."""

    def record(parameters: Any = data._parameters, **values: Any) -> Any:
        built.append(parameters(**values))
        raise Built

    monkeypatch.setattr(data, "_parameters", record)
    result = CliRunner().invoke(main, [a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in args])
    assert isinstance(result.exception, Built), result.output
    assert built == [ppj.parameters()]


def test_job_config_comes_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("ORACULUM_JOB_IMAGE", "example/oraculum:9")
    monkeypatch.setenv("ORACULUM_JOB_BACKOFF_LIMIT", "5")
    config = JobConfig()
    assert config.image == "example/oraculum:9" and config.backoff_limit == 5


def test_job_manifests_are_valid_yaml_documents() -> None:
    job = experiment_job("exp", "lab", "u", spec(gpu=1), "iterate", 0, CONFIG)
    assert yaml.safe_load(yaml.safe_dump(job)) == job


def test_jobs_get_the_progress_variables_and_the_token_by_reference_only_with_an_api() -> None:
    assert not any(e["name"].startswith("ORACULUM_PROGRESS") or e["name"] == "ORACULUM_API_URL"
                   for e in container(experiment_job("exp", "lab", "u", spec(), "iterate", 0, CONFIG))["env"])
    config = CONFIG.model_copy(update={"api_url": "http://oraculum-api.oraculum.svc:8000",
                                       "progress_secret": "oraculum-worker-token"})
    env = {e["name"]: e for e in container(experiment_job("exp", "lab", "u", spec(), "iterate", 4, config))["env"]}
    assert env["ORACULUM_API_URL"]["value"] == "http://oraculum-api.oraculum.svc:8000"
    assert env["ORACULUM_PROGRESS_KIND"]["value"] == "ActiveLearningExperiment"
    assert env["ORACULUM_PROGRESS_NAME"]["value"] == "exp" and env["ORACULUM_PROGRESS_JOB"]["value"] == "exp-iter-4"
    # the token never appears in the manifest: a reference, optional so that a namespace without the
    # Secret (one the API does not serve) runs its Jobs without reports instead of failing them
    assert env["ORACULUM_PROGRESS_TOKEN"] == {"name": "ORACULUM_PROGRESS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "oraculum-worker-token", "key": "token", "optional": True}}}
    ppj = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 50}}, "dataset": "s", "shards": 4})
    names = [e["name"] for e in container(preprocess_job("s", "lab", "u", ppj, config))["env"]]
    env = {e["name"]: e for e in container(preprocess_job("s", "lab", "u", ppj, config))["env"]}
    # each pod reports on its own line: the kubelet expands the index defined before it
    assert env["ORACULUM_PROGRESS_JOB"]["value"] == "s-preprocess-$(JOB_COMPLETION_INDEX)"
    assert names.index("JOB_COMPLETION_INDEX") < names.index("ORACULUM_PROGRESS_JOB")
    assert env["ORACULUM_PROGRESS_KIND"]["value"] == "PreprocessingJob"
    # without a Secret the variables are there but no token: the pod does not report
    no_secret = CONFIG.model_copy(update={"api_url": "http://api:8000"})
    assert "ORACULUM_PROGRESS_TOKEN" not in {e["name"] for e in container(preprocess_job("s", None, "u", ppj, no_secret))["env"]}


def test_progress_settings_come_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("ORACULUM_JOB_API_URL", "http://oraculum-api.astro.svc:8000")
    monkeypatch.setenv("ORACULUM_JOB_PROGRESS_SECRET", "oraculum-worker-token")
    config = JobConfig()
    assert (config.api_url, config.progress_secret, config.progress_secret_key) == (
        "http://oraculum-api.astro.svc:8000", "oraculum-worker-token", "token")
