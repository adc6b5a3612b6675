"""The Helm chart (charts/oraculum) rendered and linted by a real helm, for every values file the
docs describe, and every rendered manifest validated against Kubernetes' own schemas.

* helm: the real CLI (3.17.3, and 4.1.4 for a second opinion), see tests/support/helm_binary.py; the
  tests skip with the reason when it cannot be obtained.
* ``kubernetes-validate --strict`` (unknown fields are errors) at the oldest Kubernetes the chart
  supports (Chart.yaml kubeVersion) and the newest the validator knows.
* The values cases are the chart's ``ci/*-values.yaml`` (chart-testing's convention) and every
  values block in docs/install.md.
* The operator's rendered Role/ClusterRole must grant exactly operator/rbac.yaml, which
  tests/operator/test_operator.py checks against every request the running operator makes.
* The operator Deployment's ORACULUM_JOB_* environment is fed to the real JobConfig and Job
  builder: the chart's GPU placement, images and names reach the worker pods.
"""

from __future__ import annotations

import builtins
import io
import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_binary import HelmUnavailable, helm_binary
from tests.support.operator_harness import load_rbac, ungranted
from tests.operator.test_rbac import NEEDS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "oraculum"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
INSTALL_DOC = ROOT / "docs" / "install.md"
RELEASE, NAMESPACE = "oraculum", "oraculum"
POD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod", "DaemonSet"}


def _kube_versions() -> tuple[str, str]:
    import kubernetes_validate

    oldest = re.search(r"(\d+\.\d+)", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]).group(1)
    return f"{oldest}.0", kubernetes_validate.latest_version()


KUBE_VERSIONS = _kube_versions()


# --- helm -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return helm_binary("3")
    except HelmUnavailable as error:
        pytest.skip(f"no helm binary: {error}")


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120,
                            env={"HOME": "/tmp", "PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": "/tmp/helm-cache",
                                 "HELM_CONFIG_HOME": "/tmp/helm-config", "HELM_DATA_HOME": "/tmp/helm-data"})
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(helm: Path, *values: Path, chart: Path = CHART, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]]
    for path in values:
        args += ["--values", str(path)]
    out = run_helm(helm, *args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def docs_values_blocks() -> list[tuple[str, dict[str, Any]]]:
    """Every ```yaml block of docs/install.md that is a values file (no apiVersion/kind)."""
    if not INSTALL_DOC.exists():
        return []
    blocks = re.findall(r"```yaml\n(.*?)```", INSTALL_DOC.read_text(), flags=re.S)
    found = []
    for number, block in enumerate(blocks):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "apiVersion" not in data and "kind" not in data:
            title = block.splitlines()[0].lstrip("# ").split(":")[0] if block.startswith("#") else f"block-{number}"
            found.append((f"docs:{title}", data))
    return found


CASES = [pytest.param(path, id=path.name.removesuffix("-values.yaml")) for path in CI_VALUES]


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """Every ci values case rendered once (the tests below look at the same output)."""
    return {path.name: render(helm, path) for path in CI_VALUES}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    return doc


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


# --- render, lint, validate ------------------------------------------------------------------------


def test_ci_values_cover_the_documented_options() -> None:
    names = {path.name for path in CI_VALUES}
    assert {"default-values.yaml", "cluster-wide-values.yaml", "namespaced-values.yaml", "external-storage-values.yaml",
            "ingress-values.yaml", "gpu-values.yaml", "no-rbac-values.yaml"} <= names
    text = INSTALL_DOC.read_text()
    for name in names:  # the docs describe every case that CI renders
        assert f"ci/{name}" in text, f"docs/install.md does not mention charts/oraculum/ci/{name}"


@pytest.mark.parametrize("values", CASES)
def test_chart_lints_strictly(helm: Path, values: Path) -> None:
    result = run_helm(helm, "lint", str(CHART), "--strict", "--namespace", NAMESPACE,
                      "--kube-version", KUBE_VERSIONS[0], "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", CASES)
def test_every_manifest_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]], values: Path) -> None:
    import kubernetes_validate

    docs = rendered[values.name]
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        if doc["apiVersion"].startswith("oraculum.dev/"):
            continue  # custom resources: the CRDs' own schemas (tests/control/test_crds.py)
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{values.name}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes "
                            f"{version}: {error.message} at {list(error.path)}")


@pytest.mark.parametrize("title,values", docs_values_blocks() or [pytest.param("none", {}, marks=pytest.mark.skip)])
def test_docs_values_render_and_validate(helm: Path, tmp_path: Path, title: str, values: dict[str, Any]) -> None:
    import kubernetes_validate

    docs = render(helm, values_file(tmp_path, values))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[1], strict=True)


def test_crds_are_installed_from_the_chart_and_valid(helm: Path) -> None:
    import kubernetes_validate

    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top == chart and top
    for name in top:  # byte for byte: `oraculum crds` writes crds/, the chart ships a copy
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/oraculum/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/oraculum/crds/")
    docs = render(helm, extra=("--include-crds",))
    crds = by_kind(docs, "CustomResourceDefinition")
    assert sorted(d["metadata"]["name"] for d in crds) == ["activelearningexperiments.oraculum.dev",
                                                          "preprocessingjobs.oraculum.dev"]
    for doc in crds:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)


def test_helm_4_renders_and_lints_too(tmp_path: Path) -> None:
    try:
        helm4 = helm_binary("4")
    except HelmUnavailable as error:
        pytest.skip(f"no helm 4 binary: {error}")
    for values in CI_VALUES:
        run_helm(helm4, "lint", str(CHART), "--strict", "--values", str(values))
        assert render(helm4, values)


# --- values.schema.json ---------------------------------------------------------------------------

BAD_VALUES = [
    ({"api": {"replicaCount": -1}}, "replicaCount"),
    ({"api": {"workers": 0}}, "workers"),
    ({"dashboard": {"replicaCount": "two"}}, "replicaCount"),
    ({"operator": {"scope": "everywhere"}}, "scope"),
    ({"operator": {"namespaces": ["Not_A_Namespace"]}}, "namespaces"),
    ({"operator": {"namespaces": "astro"}}, "namespaces"),
    ({"operatr": {"scope": "cluster"}}, "operatr"),
    ({"workers": {"gpu": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Sometimes"}]}}}, "operator"),
    ({"workers": {"gpu": {"nodeSelector": {"nvidia.com/gpu.present": True}}}}, "nodeSelector"),
    ({"workers": {"stepDeadlineSeconds": 10}}, "stepDeadlineSeconds"),
    ({"workers": {"backoffLimit": -2}}, "backoffLimit"),
    ({"workers": {"gpuCount": 1}}, "gpuCount"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"runAsUser": 0}, "runAsUser"),
    ({"auth": {"tokens": [{"name": "admin", "role": "root"}]}}, "role"),
    ({"auth": {"tokens": [{"name": "admin", "role": "admin", "token": "short"}]}}, "token"),
    ({"ingress": {"enabled": True, "path": "oraculum/"}}, "path"),
    ({"store": {"bucket": "Bad_Bucket"}}, "bucket"),
    ({"minio": {"enabled": False}}, "endpoint"),
    ({"minio": {"persistence": {"size": "lots"}}}, "size"),
    ({"externalRedis": {"url": "http://redis:6379"}}, "url"),
    ({"rbac": {"create": "yes"}}, "create"),
    ({"api": {"resources": {"limits": {"memory": "a lot"}}}}, "memory"),
    ({"networkPolicy": {"archives": ["public"]}}, "archives"),
    ({"networkPolicy": {"kubernetesApi": {"ports": [0]}}}, "ports"),
    ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
    ({"networkPolicy": {"ingresController": {}}}, "ingresController"),
    ({"namespace": {"podSecurity": {"enforce": "strict"}}}, "enforce"),
    ({"fetch": {"allow": "10.0.0.0/8,archive.internal"}}, "fetch.allow"),
]


@pytest.mark.parametrize("values,field", BAD_VALUES, ids=[field for _, field in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_field(helm: Path, tmp_path: Path, values: dict[str, Any], field: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(values_file(tmp_path, values)),
                      check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


TEMPLATE_CHECKS = [
    ({"minio": {"enabled": False}, "externalS3": {"endpoint": "https://s3.example.org"}}, "externalS3.existingSecret"),
    ({"redis": {"enabled": False}, "api": {"replicaCount": 3}}, "api.replicaCount > 1 needs Redis"),
    ({"redis": {"enabled": False}, "api": {"workers": 2}}, "api.workers > 1 needs Redis"),
    ({"operator": {"serviceAccount": {"create": False}}}, "operator.serviceAccount.name is required"),
    ({"auth": {"tokens": [{"name": "a", "role": "admin"}, {"name": "a", "role": "viewer"}]}}, "more than once"),
]


@pytest.mark.parametrize("values,message", TEMPLATE_CHECKS, ids=[m for _, m in TEMPLATE_CHECKS])
def test_combinations_the_schema_cannot_express_fail_with_a_message(helm: Path, tmp_path: Path,
                                                                     values: dict[str, Any], message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(values_file(tmp_path, values)),
                      check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# --- security -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CASES)
def test_every_container_is_non_root_and_locked_down(rendered: dict[str, list[dict[str, Any]]], values: Path) -> None:
    pods = [doc for doc in rendered[values.name] if doc["kind"] in POD_KINDS]
    assert pods
    for doc in pods:
        where = f"{values.name}: {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert "automountServiceAccountToken" in spec, f"{where}: say whether the pod gets an API token"
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            c = container["securityContext"]
            assert c["allowPrivilegeEscalation"] is False and c["privileged"] is False, where
            assert c["readOnlyRootFilesystem"] is True, where
            assert c["capabilities"] == {"drop": ["ALL"]}, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{where}: /tmp must be a writable emptyDir"
            assert container["resources"]["limits"]["memory"], f"{where}: memory limit"
            assert container["resources"]["requests"]["cpu"], f"{where}: CPU request"
            assert "@" in container["image"] or re.search(r":[\w.-]+$", container["image"]), where


def test_only_the_operator_and_api_and_hook_get_api_tokens(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default-values.yaml"]
    with_token = sorted(d["metadata"]["name"] for d in docs
                        if d["kind"] in POD_KINDS and pod_spec(d)["automountServiceAccountToken"])
    assert with_token == ["oraculum-api", "oraculum-operator", "oraculum-uninstall"]
    worker_accounts = [d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == "oraculum-worker"]
    assert worker_accounts and all(d["automountServiceAccountToken"] is False for d in worker_accounts)


# --- RBAC -----------------------------------------------------------------------------------------


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def operator_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"].endswith("-operator")]


@pytest.mark.parametrize("values", CASES)
def test_operator_rbac_is_exactly_operator_rbac_yaml(rendered: dict[str, list[dict[str, Any]]], values: Path) -> None:
    docs = rendered[values.name]
    chart_values = yaml.safe_load(values.read_text()) or {}
    roles = operator_roles(docs)
    if chart_values.get("rbac", {}).get("create") is False:
        assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
        return
    assert roles
    expected = triples(load_rbac())
    for role in roles:
        rules = role["rules"]
        assert triples(rules) == expected, f"{role['kind']} {role['metadata']['name']} differs from operator/rbac.yaml"
        assert ungranted(NEEDS, rules) == []
        assert not any("*" in rule[key] for rule in rules for key in ("apiGroups", "resources", "verbs"))
        assert not any("secrets" in rule["resources"] for rule in rules)

    deployment = one(docs, "Deployment", "-operator")
    account = pod_spec(deployment)["serviceAccountName"]
    args = pod_spec(deployment)["containers"][0]["args"]
    watched = {args[i + 1] for i, arg in enumerate(args) if arg == "--namespace"}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and d["metadata"]["name"].endswith("-operator")]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
        assert binding["roleRef"]["kind"] == ("ClusterRole" if binding["kind"] == "ClusterRoleBinding" else "Role")
    if chart_values.get("operator", {}).get("scope") == "cluster":
        assert [r["kind"] for r in roles] == ["ClusterRole"] and not watched
    else:  # namespaced: a Role exactly where the operator watches, and it watches the API's namespace
        assert {r["kind"] for r in roles} == {"Role"}
        assert {r["metadata"]["namespace"] for r in roles} == {b["metadata"]["namespace"] for b in bindings} == watched
        api_namespace = chart_values.get("api", {}).get("namespace") or NAMESPACE
        assert {NAMESPACE, api_namespace, *chart_values.get("operator", {}).get("namespaces", [])} == watched


def test_api_rbac_covers_its_backend_and_nothing_more(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["namespaced-values.yaml"]
    role = one(docs, "Role", "-api")
    assert role["metadata"]["namespace"] == "astro-team-a"
    api_rbac = ROOT / "api" / "rbac.yaml"  # the API's recorded needs (tests/api/test_api_kubernetes.py checks them)
    if api_rbac.exists():
        expected = triples(load_rbac(api_rbac))
    else:
        expected = {("oraculum.dev", p, v) for p in ("activelearningexperiments", "preprocessingjobs")
                    for v in ("get", "list", "create", "patch", "delete")}
    assert triples(role["rules"]) == expected, "the chart's API Role differs from api/rbac.yaml"
    deployment = one(docs, "Deployment", "-api")
    env = {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0]["env"]}
    assert env["ORACULUM_NAMESPACE"] == "astro-team-a" and env["ORACULUM_API_BACKEND"] == "kubernetes"
    binding = one(docs, "RoleBinding", "-api")
    assert binding["subjects"][0]["name"] == pod_spec(deployment)["serviceAccountName"]


# --- what the operator passes to its Jobs ---------------------------------------------------------


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = pod_spec(one(docs, "Deployment", "-operator"))["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("values", CASES)
def test_job_settings_reach_real_worker_jobs(rendered: dict[str, list[dict[str, Any]]], values: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from oraculum.control.jobs import JobConfig, experiment_job
    from oraculum.manifests import ExperimentSpec

    docs = rendered[values.name]
    env = operator_env(docs)
    job_env = {name for name in env if name.startswith("ORACULUM_JOB_")}
    known = {f"ORACULUM_JOB_{field.upper()}" for field in JobConfig.model_fields}
    assert job_env <= known, f"variables JobConfig does not read: {sorted(job_env - known)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = JobConfig()
    spec = ExperimentSpec.model_validate({"dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}],
                                          "resources": {"gpu": 1, "nodeSelector": {"pool": "a100"}}})
    job = experiment_job("ale", "astro", "uid-1", spec, "iterate", 0, config)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    chart_values = yaml.safe_load(values.read_text()) or {}
    gpu = chart_values.get("workers", {}).get("gpu", {})
    assert pod["nodeSelector"] == {**gpu.get("nodeSelector", {}), "pool": "a100"}
    assert pod.get("tolerations", []) == gpu.get("tolerations", [])
    assert container["image"] == env["ORACULUM_JOB_GPU_IMAGE"]
    assert pod["securityContext"]["runAsUser"] == 10001
    # the light steps of the same experiment request no GPU: no GPU placement, the CPU image
    light = experiment_job("ale", "astro", "uid-1", spec, "evaluate", 0, config)["spec"]["template"]["spec"]
    assert light["nodeSelector"] == {"pool": "a100"} and "tolerations" not in light
    assert light["containers"][0]["image"] == env["ORACULUM_JOB_IMAGE"]

    # what the Job refers to exists in every namespace where experiments run
    namespaces = {d["metadata"]["namespace"] for d in by_kind(docs, "ConfigMap")
                  if d["metadata"]["name"] == config.settings_configmap}
    assert NAMESPACE in namespaces
    for namespace in namespaces:
        if config.service_account:
            assert any(d["metadata"]["name"] == config.service_account and d["metadata"]["namespace"] == namespace
                       for d in by_kind(docs, "ServiceAccount")), (config.service_account, namespace)
        if not chart_values.get("externalS3", {}).get("existingSecret") or chart_values.get("minio", {}).get("enabled", True):
            assert any(d["metadata"]["name"] == config.s3_secret and d["metadata"]["namespace"] == namespace
                       for d in by_kind(docs, "Secret"))


@pytest.mark.parametrize("case", ["default-values.yaml", "namespaced-values.yaml"])
def test_jobs_report_progress_to_the_api_with_a_worker_token_it_accepts(rendered: dict[str, list[dict[str, Any]]],
                                                                        case: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from oraculum.api.auth import allows, parse_token_file
    from oraculum.control.jobs import JobConfig, preprocess_job
    from oraculum.manifests import PreprocessingJobSpec

    docs = rendered[case]
    env = operator_env(docs)
    dashboard = {e["name"]: e.get("value") for e in pod_spec(one(docs, "Deployment", "-dashboard"))["containers"][0]["env"]}
    assert env["ORACULUM_JOB_API_URL"] == dashboard["ORACULUM_API_URL"] == "http://oraculum-api.oraculum.svc:8000"
    api_namespace = (yaml.safe_load((CHART / "ci" / case).read_text()) or {}).get("api", {}).get("namespace") or NAMESPACE
    # the Jobs' Secret lives where the API's resources (and so their Jobs) are, once
    (copy,) = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == env["ORACULUM_JOB_PROGRESS_SECRET"]]
    assert copy["metadata"]["namespace"] == api_namespace
    token = secret_data(copy)[env["ORACULUM_JOB_PROGRESS_SECRET_KEY"]]
    # ... and the API accepts that token with the role worker (its real token-file parser)
    entries = parse_token_file(secret_data(one(docs, "Secret", "-api-tokens"))["tokens.yaml"], "tokens.yaml")
    (entry,) = [e for e in entries if e.token == token]
    assert entry.role == "worker" and allows(entry.role, "worker") and not allows(entry.role, "viewer")
    # the real Job builder, configured as the chart configures the operator, refers to that Secret
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ppj = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 10}}, "dataset": "d", "shards": 2})
    job_env = {e["name"]: e for e in preprocess_job("p", api_namespace, "u", ppj, JobConfig())
               ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["ORACULUM_API_URL"]["value"] == env["ORACULUM_JOB_API_URL"]
    assert job_env["ORACULUM_PROGRESS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": copy["metadata"]["name"], "key": env["ORACULUM_JOB_PROGRESS_SECRET_KEY"], "optional": True}


def test_progress_reports_can_be_switched_off_or_use_an_existing_secret(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, values_file(tmp_path, {"workers": {"progress": {"enabled": False}}}))
    assert "ORACULUM_JOB_API_URL" not in operator_env(docs)
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-worker-token")]
    entries = yaml.safe_load(secret_data(one(docs, "Secret", "-api-tokens"))["tokens.yaml"])
    assert [e["name"] for e in entries] == ["admin", "oracle"]
    # with the tokens in a Secret of their own, the chart cannot make a worker token: the user names one
    docs = render(helm, values_file(tmp_path, {"auth": {"existingSecret": "my-tokens"}}))
    assert "ORACULUM_JOB_API_URL" not in operator_env(docs)
    docs = render(helm, values_file(tmp_path, {"auth": {"existingSecret": "my-tokens"}, "workers": {"progress": {
        "existingSecret": "my-worker", "existingSecretKey": "ORACULUM_PROGRESS_TOKEN"}}}))
    env = operator_env(docs)
    assert (env["ORACULUM_JOB_PROGRESS_SECRET"], env["ORACULUM_JOB_PROGRESS_SECRET_KEY"]) == ("my-worker", "ORACULUM_PROGRESS_TOKEN")
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] in ("my-worker", "oraculum-worker-token")]
    wrong = values_file(tmp_path, {"auth": {"tokens": [{"name": "worker", "role": "admin"}]}})
    result = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(wrong), check=False)
    assert result.returncode != 0 and "give it the role worker" in result.stderr


def test_gpu_values_place_gpu_jobs_and_images(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = operator_env(rendered["gpu-values.yaml"])
    assert env["ORACULUM_JOB_IMAGE"] == ("registry.example.org/astro/oraculum:0.1.0@sha256:" + "0" * 63 + "1")
    assert env["ORACULUM_JOB_GPU_IMAGE"] == ("registry.example.org/astro/oraculum-gpu:0.1.0@sha256:" + "0" * 63 + "2")
    assert json.loads(env["ORACULUM_JOB_GPU_TOLERATIONS"]) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    worker = one(rendered["gpu-values.yaml"], "ServiceAccount", "-worker")
    assert worker["imagePullSecrets"] == [{"name": "registry-credentials"}]  # how worker pods pull


def test_every_process_gets_the_same_store_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default-values.yaml"]
    settings = one(docs, "ConfigMap", "-settings")
    assert settings["data"] == {"ORACULUM_STORE": "s3://oraculum",
                                "ORACULUM_S3_ENDPOINT": "http://oraculum-minio.oraculum.svc:9000"}
    for name in ("-operator", "-api", "-dashboard"):
        container = pod_spec(one(docs, "Deployment", name))["containers"][0]
        assert container["envFrom"] == [{"configMapRef": {"name": "oraculum-settings"}},
                                        {"secretRef": {"name": "oraculum-s3"}}]
    api_env = {e["name"]: e for e in pod_spec(one(docs, "Deployment", "-api"))["containers"][0]["env"]}
    assert api_env["ORACULUM_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "oraculum-redis", "key": "redis-url"}
    assert api_env["ORACULUM_AUTH_FILE"]["value"] == "/etc/oraculum/auth/tokens.yaml"
    external = rendered["external-storage-values.yaml"]
    settings = one(external, "ConfigMap", "-settings")
    assert settings["data"] == {"ORACULUM_STORE": "s3://lamost-oraculum/production", "ORACULUM_S3_REGION": "eu-central-1",
                                "ORACULUM_S3_ENDPOINT": "https://s3.eu-central-1.amazonaws.com"}
    assert not [d for d in external if d["kind"] == "StatefulSet"]
    assert not [d for d in by_kind(external, "Secret") if d["metadata"]["name"] in ("oraculum-s3", "oraculum-redis")]
    api_env = {e["name"]: e for e in pod_spec(one(external, "Deployment", "-api"))["containers"][0]["env"]}
    assert api_env["ORACULUM_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "oraculum-redis", "key": "url"}
    minimal_api = pod_spec(one(rendered["minimal-values.yaml"], "Deployment", "-api"))["containers"][0]
    assert "ORACULUM_REDIS_URL" not in {e["name"] for e in minimal_api["env"]}


def secret_data(doc: dict[str, Any]) -> dict[str, str]:
    import base64

    return {key: base64.b64decode(value).decode() for key, value in doc["data"].items()}


def test_generated_secrets_agree_wherever_they_are_used(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cluster-wide-values.yaml"]
    copies = [secret_data(d) for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "oraculum-s3"]
    assert len(copies) == 3 and all(c == copies[0] for c in copies)  # one per experiment namespace
    assert len(copies[0]["ORACULUM_S3_ACCESS_KEY"]) >= 3 and len(copies[0]["ORACULUM_S3_SECRET_KEY"]) >= 8
    minio = pod_spec(one(docs, "StatefulSet", "-minio"))["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in minio["env"] if "valueFrom" in e}
    assert refs["MINIO_ROOT_USER"] == {"name": "oraculum-s3", "key": "ORACULUM_S3_ACCESS_KEY"}
    redis = secret_data(one(docs, "Secret", "-redis"))
    assert redis["redis-url"] == f"redis://:{redis['redis-password']}@oraculum-redis.oraculum.svc:6379/0"
    tokens = secret_data(one(docs, "Secret", "-api-tokens"))
    entries = yaml.safe_load(tokens["tokens.yaml"])
    assert [(e["name"], e["role"]) for e in entries] == [("admin", "admin"), ("oracle", "oracle"), ("worker", "worker")]
    assert all(len(e["token"]) >= 32 and tokens[e["name"]] == e["token"] for e in entries)
    assert len({e["token"] for e in entries}) == 3
    assert secret_data(one(docs, "Secret", "-worker-token")) == {"token": tokens["worker"]}  # the Jobs' copy
    # every API replica verifies the signed links (SAMP) with the same key, from this Secret
    assert len(tokens["link-signing-key"]) >= 32
    api_env = pod_spec(one(docs, "Deployment", "-api"))["containers"][0]["env"]
    (share,) = [e for e in api_env if e["name"] == "ORACULUM_API_SHARE_SECRET"]
    assert share["valueFrom"]["secretKeyRef"] == {"name": "oraculum-api-tokens", "key": "link-signing-key",
                                                  "optional": True}


def test_given_tokens_are_used_and_an_existing_secret_replaces_them(helm: Path, tmp_path: Path) -> None:
    given = {"auth": {"tokens": [{"name": "ci-worker", "role": "worker", "token": "w" * 24}]},
             "workers": {"progress": {"tokenName": "ci-worker"}}}
    docs = render(helm, values_file(tmp_path, given))
    tokens = secret_data(one(docs, "Secret", "-api-tokens"))
    assert yaml.safe_load(tokens["tokens.yaml"]) == [{"name": "ci-worker", "role": "worker", "token": "w" * 24}]
    assert secret_data(one(docs, "Secret", "-worker-token")) == {"token": "w" * 24}  # the given one, not another
    docs = render(helm, values_file(tmp_path, {"auth": {"existingSecret": "my-tokens"}}))
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-api-tokens")]
    volumes = pod_spec(one(docs, "Deployment", "-api"))["volumes"]
    assert {"name": "auth", "secret": {"secretName": "my-tokens", "items": [{"key": "tokens.yaml", "path": "tokens.yaml"}]}} in volumes


# --- ingress, probes, hooks, notes ---------------------------------------------------------------


def test_ingress_routes_the_prefix_and_tells_the_apps(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["ingress-values.yaml"]
    (ingress,) = by_kind(docs, "Ingress")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "astro.example.org" and ingress["spec"]["ingressClassName"] == "nginx"
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes == {"/oraculum/api": "oraculum-api", "/oraculum/docs": "oraculum-api",
                      "/oraculum/openapi.json": "oraculum-api", "/oraculum": "oraculum-dashboard"}
    for name in ("-api", "-dashboard"):
        env = {e["name"]: e.get("value") for e in pod_spec(one(docs, "Deployment", name))["containers"][0]["env"]}
        assert env["ORACULUM_ROOT_PATH"] == "/oraculum"
    assert not by_kind(rendered["default-values.yaml"], "Ingress")


def test_operator_api_and_dashboard_run_the_contracted_commands(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default-values.yaml"]
    operator = one(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"] == {"type": "Recreate"}
    container = pod_spec(operator)["containers"][0]
    assert container["command"] == ["oraculum"]
    assert container["args"][:3] == ["operator", "--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    api = pod_spec(one(docs, "Deployment", "-api"))["containers"][0]
    assert api["args"] == ["serve", "api", "--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" and api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dashboard = pod_spec(one(docs, "Deployment", "-dashboard"))["containers"][0]
    assert dashboard["args"] == ["serve", "dashboard", "--host", "0.0.0.0", "--port", "8050"]
    env = {e["name"]: e.get("value") for e in dashboard["env"]}
    assert env["ORACULUM_API_URL"] == "http://oraculum-api.oraculum.svc:8000"
    for kind in ("StatefulSet",):
        for doc in by_kind(docs, kind):
            assert doc["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


def test_helm_test_hook_checks_the_api(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (pod,) = by_kind(rendered["default-values.yaml"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    compile(container["args"][0], "helm-test", "exec")
    assert container["args"][1] == "http://oraculum-api.oraculum.svc:8000"
    assert "/healthz" in container["args"][0]


def test_pre_delete_hook_has_its_own_minimal_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case, role_kind in (("default-values.yaml", "Role"), ("cluster-wide-values.yaml", "ClusterRole")):
        docs = rendered[case]
        hooks = [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"]
        kinds = sorted(d["kind"] for d in hooks)
        assert "Job" in kinds and "ServiceAccount" in kinds and role_kind in kinds
        job = next(d for d in hooks if d["kind"] == "Job")
        weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
        assert all(int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight for d in hooks if d is not job)
        assert pod_spec(job)["serviceAccountName"] == next(d for d in hooks if d["kind"] == "ServiceAccount")["metadata"]["name"]
        for role in (d for d in hooks if d["kind"] == role_kind):
            assert triples(role["rules"]) == {("oraculum.dev", p, v) for p in ("activelearningexperiments", "preprocessingjobs")
                                              for v in ("list", "delete")}
    assert not [d for d in rendered["minimal-values.yaml"] if d["kind"] == "Job"]
    assert not [d for d in rendered["no-rbac-values.yaml"] if d["kind"] == "Job"]


class FakeApiServer:
    """Just enough of the Kubernetes API for the hook script: list and delete custom objects."""

    def __init__(self, objects: dict[str, list[tuple[str, str]]], missing: set[str] = frozenset()) -> None:
        self.objects = {plural: list(items) for plural, items in objects.items()}
        self.missing = missing  # plurals whose CRD is gone (404)
        self.calls: list[tuple[str, str]] = []

    def urlopen(self, request: Any, context: Any = None, timeout: float = 0) -> Any:
        import urllib.error

        method, path = request.get_method(), request.full_url.split("443", 1)[1]
        self.calls.append((method, path))
        assert request.headers["Authorization"] == "Bearer token-123"
        parts = path.strip("/").split("/")
        plural = parts[-1] if method == "GET" else parts[-2]
        if plural in self.missing:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, io.BytesIO(b"{}"))
        if method == "GET":
            namespace = parts[4] if parts[3] == "namespaces" else None
            items = [{"metadata": {"namespace": ns, "name": name}} for ns, name in self.objects.get(plural, [])
                     if namespace in (None, ns)]
            return io.BytesIO(json.dumps({"items": items}).encode())
        self.objects[plural].remove((parts[4], parts[-1]))
        return io.BytesIO(b"{}")


@pytest.mark.parametrize("namespaces", [["oraculum", "astro"], []], ids=["namespaced", "cluster"])
def test_pre_delete_script_deletes_every_resource(monkeypatch: pytest.MonkeyPatch, namespaces: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import ssl
    import urllib.request

    server = FakeApiServer({"activelearningexperiments": [("oraculum", "be-stars"), ("astro", "dr2")],
                            "preprocessingjobs": [("astro", "dr2-pre")]})
    real_open = builtins.open

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/var/run/secrets/kubernetes.io/serviceaccount/"):
            return io.StringIO("token-123\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(ssl, "create_default_context", lambda **kwargs: None)
    monkeypatch.setattr(urllib.request, "urlopen", server.urlopen)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("ORACULUM_NAMESPACES", json.dumps(namespaces))
    script = (CHART / "files" / "delete-resources.py").read_text()
    with pytest.raises(SystemExit) as exit_:
        exec(compile(script, "delete-resources.py", "exec"), {"__name__": "__main__"})
    assert exit_.value.code == 0
    assert server.objects == {"activelearningexperiments": [], "preprocessingjobs": []}
    assert "3 resources deleted" in capsys.readouterr().out
    lists = [path for method, path in server.calls if method == "GET"]
    if namespaces:
        assert "/apis/oraculum.dev/v1alpha1/namespaces/astro/activelearningexperiments" in lists
    else:
        assert lists == ["/apis/oraculum.dev/v1alpha1/activelearningexperiments",
                         "/apis/oraculum.dev/v1alpha1/preprocessingjobs"]

    # a CRD already gone is nothing to delete, not a failed uninstall
    server = FakeApiServer({}, missing={"activelearningexperiments", "preprocessingjobs"})
    monkeypatch.setattr(urllib.request, "urlopen", server.urlopen)
    with pytest.raises(SystemExit) as exit_:
        exec(compile(script, "delete-resources.py", "exec"), {"__name__": "__main__"})
    assert exit_.value.code == 0


@pytest.mark.parametrize("case", ["default-values.yaml", "ingress-values.yaml", "cluster-wide-values.yaml",
                                  "external-storage-values.yaml", "minimal-values.yaml"])
def test_notes_render_and_say_how_to_read_the_tokens(helm: Path, tmp_path: Path, case: str) -> None:
    """NOTES.txt is only rendered by install/upgrade, which need a cluster: render it as a ConfigMap."""
    chart = tmp_path / "oraculum"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '    {{- tpl (.Files.Get "files/NOTES.txt") . | nindent 4 }}\n')
    docs = render(helm, CHART / "ci" / case, chart=chart, extra=("--show-only", "templates/zz-notes.yaml"))
    notes = docs[0]["data"]["notes"]
    assert "helm test oraculum" in notes
    assert "get secret oraculum-api-tokens -o jsonpath='{.data.admin}' | base64 -d" in notes
    assert "report their progress to the API with the worker\n   token in the Secret oraculum-worker-token" in notes
    if case == "ingress-values.yaml":
        assert "https://astro.example.org/oraculum" in notes and "/oraculum/api/v1" in notes
    else:
        assert "port-forward svc/oraculum-api 8000:8000" in notes
    if case == "external-storage-values.yaml":
        assert "oraculum-s3-credentials" in notes


# --- Pod Security: the restricted standard --------------------------------------------------------

#: Volume types the restricted standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
#: The sysctls the baseline standard allows.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """What a pod spec breaks of the Pod Security Standards' ``restricted`` profile (which includes
    ``baseline``), rule by rule as kubernetes.io/docs/concepts/security/pod-security-standards/ lists
    them for the latest version; empty when it complies."""
    found: list[str] = []
    containers = [*pod.get("containers", []), *pod.get("initContainers", []), *pod.get("ephemeralContainers", [])]
    pod_context = pod.get("securityContext") or {}
    contexts = [("pod", pod_context)] + [(c.get("name", "?"), c.get("securityContext") or {}) for c in containers]
    # baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"host namespaces: {key}")
    for where, context in contexts:
        if context.get("privileged"):
            found.append(f"{where}: privileged")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: HostProcess")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: SELinux options {selinux}")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {context['procMount']}")
        if (context.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: AppArmor profile {context['appArmorProfile']}")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined")
        if context.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        if context.get("runAsNonRoot") is False:
            found.append(f"{where}: runAsNonRoot false")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            found.append(f"AppArmor annotation {key}={value}")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    # restricted
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    for container in containers:
        name, context = container.get("name", "?"), container.get("securityContext") or {}
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not (context.get("runAsNonRoot") is True or (pod_context.get("runAsNonRoot") is True
                                                         and context.get("runAsNonRoot") is not False)):
            found.append(f"{name}: runAsNonRoot is not true")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if not (seccomp in ("RuntimeDefault", "Localhost") or (pod_seccomp and seccomp is None)):
            found.append(f"{name}: no RuntimeDefault or Localhost seccomp profile")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities add {capabilities['add']}")
    return found


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod metadata, pod spec) of every pod the chart makes (a StatefulSet's with the
    volumes of its claims, as its controller adds them)."""
    out = []
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            metadata = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"].get("metadata", {})
            spec = pod_spec(doc)
            claims = [{"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-0"}}
                      for t in doc["spec"].get("volumeClaimTemplates") or [] if doc["kind"] == "StatefulSet"]
            if claims:
                spec = {**spec, "volumes": [*spec.get("volumes", []), *claims]}
            out.append((f"{doc['kind']}/{doc['metadata']['name']}", metadata, spec))
    return out


def test_the_restricted_check_finds_what_a_hostile_pod_asks_for() -> None:
    """The check below is only worth its silence if it speaks: the red team's root pod, rule by rule."""
    good = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}
    assert restricted_violations(good) == []
    hostile = {"hostPID": True, "hostNetwork": True,
               "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
               "containers": [{"name": "c", "ports": [{"containerPort": 22, "hostPort": 22}], "securityContext": {
                   "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}, "procMount": "Unmasked",
                   "seccompProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t"}}}],
               "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
    found = " | ".join(restricted_violations(hostile, {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}))
    for rule in ("hostPID", "hostNetwork", "privileged", "runAsUser 0", "sysctl kernel.msgmax", "hostPort",
                 "allowPrivilegeEscalation", "runAsNonRoot", "seccomp", "drop ALL", "SYS_ADMIN", "procMount",
                 "SELinux", "hostPath", "AppArmor"):
        assert rule in found, rule
    # runAsNonRoot on every container instead of the pod is fine; a container's own "false" is not
    each = {**good, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{**good["containers"][0], "securityContext": {
                **good["containers"][0]["securityContext"], "runAsNonRoot": True}}]}
    assert restricted_violations(each) == []
    overridden = {**good, "containers": [{**good["containers"][0], "securityContext": {
        **good["containers"][0]["securityContext"], "runAsNonRoot": False}}]}
    assert restricted_violations(overridden)


@pytest.mark.parametrize("values", CASES)
def test_every_pod_meets_the_restricted_pod_security_standard(rendered: dict[str, list[dict[str, Any]]],
                                                              values: Path) -> None:
    pods = pod_templates(rendered[values.name])
    assert pods
    for where, metadata, spec in pods:
        assert restricted_violations(spec, metadata.get("annotations")) == [], f"{values.name}: {where}"
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container["resources"]  # what a ResourceQuota of the namespace may ask for
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], f"{where}: requests"
            assert resources["limits"]["memory"], f"{where}: memory limit"


@pytest.mark.parametrize("case", ["default-values.yaml", "gpu-values.yaml", "cluster-wide-values.yaml"])
def test_worker_jobs_built_as_the_chart_configures_them_meet_the_restricted_standard(
        rendered: dict[str, list[dict[str, Any]]], case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from oraculum.control.jobs import JobConfig, experiment_job, preprocess_job
    from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec

    for name, value in operator_env(rendered[case]).items():
        monkeypatch.setenv(name, value)
    config = JobConfig()
    spec = ExperimentSpec.model_validate({"dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}],
                                          "resources": {"gpu": 1}})
    ppj = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 10}}, "dataset": "d", "shards": 2})
    jobs = [experiment_job("ale", NAMESPACE, "uid-1", spec, purpose, 1, config) for purpose in ("iterate", "evaluate")]
    jobs.append(preprocess_job("p", NAMESPACE, "uid-2", ppj, config))
    for job in jobs:
        template = job["spec"]["template"]
        assert restricted_violations(template["spec"], template["metadata"].get("annotations")) == [], \
            job["metadata"]["name"]


def test_namespaces_are_labelled_for_the_restricted_standard_when_the_chart_makes_them(helm: Path,
                                                                                       tmp_path: Path) -> None:
    import kubernetes_validate

    assert not by_kind(render(helm, CHART / "ci" / "default-values.yaml"), "Namespace")  # off by default
    docs = render(helm, CHART / "ci" / "cluster-wide-values.yaml", values_file(tmp_path, {"namespace": {"create": True}}))
    namespaces = by_kind(docs, "Namespace")
    assert sorted(d["metadata"]["name"] for d in namespaces) == ["astro-team-a", "astro-team-b", NAMESPACE]
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"
        assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # uninstall keeps it
        kubernetes_validate.validate(namespace, KUBE_VERSIONS[0], strict=True)
    # the namespaces hold the objects that need them
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "ConfigMap"} <= {n["metadata"]["name"] for n in namespaces}
    docs = render(helm, values_file(tmp_path, {"namespace": {"create": True, "podSecurity": {
        "enforce": "baseline", "audit": "", "warn": "restricted", "version": "v1.29"}}}))
    (namespace,) = by_kind(docs, "Namespace")
    security = {k: v for k, v in namespace["metadata"]["labels"].items() if k.startswith("pod-security")}
    assert security == {"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.29",
                        "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "v1.29"}
    # without the template, docs/install.md gives the command that labels an existing namespace
    text = INSTALL_DOC.read_text()
    assert "kubectl label namespace" in text and "pod-security.kubernetes.io/enforce=restricted" in text


# --- NetworkPolicies ------------------------------------------------------------------------------


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's or namespace's labels."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[operator]:
            return False
    return True


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (``ip``)."""

    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ip: str = ""

    @staticmethod
    def pod(namespace: str, labels: dict[str, str]) -> Endpoint:
        return Endpoint(namespace, tuple(sorted(labels.items())))


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:  # CIDRs name addresses outside the cluster (Cilium ignores them for pods)
        if not other.ip:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"], strict=False)
        return address.version == network.version and address in network and not any(
            address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or []
            if ipaddress.ip_network(e, strict=False).version == address.version)
    if other.ip:
        return False
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace})
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and _selects(peer.get("podSelector"), dict(other.labels))


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _side_allows(policies: list[dict[str, Any]], pod: Endpoint, other: Endpoint, port: int, protocol: str,
                 direction: str) -> bool:
    """Whether the policies of ``pod``'s namespace let it talk to ``other`` (Egress) or hear it (Ingress)."""
    kind, key, peers_key = direction, direction.lower(), "to" if direction == "Egress" else "from"
    chosen = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
              and _selects(p["spec"]["podSelector"], dict(pod.labels))
              and kind in p["spec"].get("policyTypes", ["Ingress"])]
    if not chosen:
        return True  # no policy isolates it in this direction
    return any(_port_matches(rule.get("ports"), port, protocol)
               and (not rule.get(peers_key) or any(_peer_matches(peer, p["metadata"]["namespace"], other)
                                                   for peer in rule[peers_key]))
               for p in chosen for rule in p["spec"].get(key) or [])


def connects(docs: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Would the chart's NetworkPolicies let ``source`` open a connection to ``target`` on ``port``?"""
    policies = by_kind(docs, "NetworkPolicy")
    egress = source.ip or _side_allows(policies, source, target, port, protocol, "Egress")
    ingress = target.ip or _side_allows(policies, target, source, port, protocol, "Ingress")
    return bool(egress and ingress)


def chart_pods(docs: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """component -> the pod the chart makes for it (its template's labels)."""
    return {metadata["labels"]["app.kubernetes.io/component"]: Endpoint.pod(NAMESPACE, metadata["labels"])
            for _, metadata, _ in pod_templates(docs)}


def job_pod(namespace: str, purpose: str = "preprocess") -> Endpoint:
    """A worker Job's pod as the real Job builder labels it."""
    from oraculum.control.jobs import JobConfig, experiment_job, preprocess_job
    from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec

    if purpose == "preprocess":
        ppj = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 10}}, "dataset": "d"})
        job = preprocess_job("p", namespace, "uid", ppj, JobConfig())
    else:
        spec = ExperimentSpec.model_validate({"dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}]})
        job = experiment_job("e", namespace, "uid", spec, purpose, 1, JobConfig())
    return Endpoint.pod(namespace, job["spec"]["template"]["metadata"]["labels"])


INGRESS_NGINX = Endpoint.pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
KUBE_DNS = Endpoint.pod("kube-system", {"k8s-app": "kube-dns"})
STRANGER = Endpoint.pod(NAMESPACE, {"app": "something-else"})  # another workload of the namespace
ARCHIVE = Endpoint(ip="193.144.1.10")  # a public archive
METADATA = Endpoint(ip="169.254.169.254")  # the cloud's metadata service
INTERNAL = Endpoint(ip="10.0.0.15")  # an address inside the cluster's network


def test_network_policies_let_each_component_talk_only_to_what_it_needs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default-values.yaml"]
    pods = chart_pods(docs)
    api, dashboard, operator, minio, redis = (pods[c] for c in ("api", "dashboard", "operator", "minio", "redis"))
    jobs = [job_pod(NAMESPACE), job_pod(NAMESPACE, "iterate")]

    # in: the dashboard from the ingress controller; the API from the dashboard, the Jobs and helm test
    assert connects(docs, INGRESS_NGINX, dashboard, 8050)
    assert not connects(docs, STRANGER, dashboard, 8050) and not connects(docs, INGRESS_NGINX, dashboard, 8051)
    assert connects(docs, dashboard, api, 8000) and connects(docs, pods["test"], api, 8000)
    assert all(connects(docs, job, api, 8000) for job in jobs)  # progress reports
    assert not connects(docs, INGRESS_NGINX, api, 8000)  # the chart's Ingress is off: nothing routes there
    assert not connects(docs, STRANGER, api, 8000) and not connects(docs, dashboard, api, 8001)
    for component in ("operator", "minio", "redis", "dashboard"):
        assert not connects(docs, STRANGER, pods[component], 8080), component
    assert not any(connects(docs, STRANGER, job, 8080) or connects(docs, api, job, 8080) for job in jobs)
    # the stores: MinIO for the API, the operator and the Jobs; Redis for the API only
    assert connects(docs, api, minio, 9000) and connects(docs, operator, minio, 9000)
    assert all(connects(docs, job, minio, 9000) for job in jobs)
    assert not connects(docs, dashboard, minio, 9000) and not connects(docs, STRANGER, minio, 9000)
    assert connects(docs, api, redis, 6379)
    assert not any(connects(docs, pod, redis, 6379) for pod in (operator, dashboard, minio, STRANGER, *jobs))
    # out: DNS for everyone who connects anywhere
    for pod in (api, dashboard, operator, pods["uninstall"], pods["test"], *jobs):
        assert connects(docs, pod, KUBE_DNS, 53, "UDP") and connects(docs, pod, KUBE_DNS, 53, "TCP")
        assert not connects(docs, pod, KUBE_DNS, 80)
    assert not connects(docs, minio, KUBE_DNS, 53, "UDP") and not connects(docs, redis, ARCHIVE, 443)
    # the Kubernetes API server: the operator, the API and the uninstall hook; never the Jobs or the dashboard
    apiserver = Endpoint(ip="10.0.0.1")
    for pod in (operator, api, pods["uninstall"]):
        assert connects(docs, pod, apiserver, 443) and connects(docs, pod, apiserver, 6443)
    for pod in (dashboard, minio, redis, pods["test"], *jobs):
        assert not connects(docs, pod, apiserver, 443) and not connects(docs, pod, apiserver, 6443)
    # the archives: public addresses on http(s) for the fetchers (API, Jobs); no metadata service, no 10.x
    for pod in (api, *jobs):
        assert connects(docs, pod, ARCHIVE, 443) and connects(docs, pod, ARCHIVE, 80)
        assert not connects(docs, pod, ARCHIVE, 22)
        assert not connects(docs, pod, METADATA, 80) and not connects(docs, pod, INTERNAL, 80)
    for pod in (dashboard, operator, minio, redis):
        assert not connects(docs, pod, ARCHIVE, 80), pod
    assert not connects(docs, dashboard, ARCHIVE, 443) and not connects(docs, dashboard, redis, 6379)


def test_every_pod_of_the_release_and_its_jobs_is_isolated_both_ways(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case, docs in rendered.items():
        policies = by_kind(docs, "NetworkPolicy")
        namespaces = {d["metadata"]["namespace"] for d in docs if d["kind"] == "ConfigMap"}
        pods = [(where, Endpoint.pod(NAMESPACE, metadata["labels"])) for where, metadata, _ in pod_templates(docs)]
        pods += [(f"Job pod in {namespace}", job_pod(namespace, purpose)) for namespace in namespaces
                 for purpose in ("preprocess", "iterate", "answer", "evaluate")]
        for where, pod in pods:
            for direction in ("Ingress", "Egress"):
                assert any(p["metadata"]["namespace"] == pod.namespace and direction in p["spec"]["policyTypes"]
                           and _selects(p["spec"]["podSelector"], dict(pod.labels)) for p in policies), \
                    f"{case}: {where} is not isolated for {direction}"
        # a rule without peers would let anyone in: every rule names its peers
        for policy in policies:
            for rule in policy["spec"].get("ingress") or []:
                assert rule.get("from"), f"{case}: {policy['metadata']['name']} lets anyone in"


def test_network_policies_follow_the_values(rendered: dict[str, list[dict[str, Any]]], helm: Path,
                                            tmp_path: Path) -> None:
    # several namespaces: the Jobs of each reach MinIO and the API in the release's namespace
    docs = rendered["cluster-wide-values.yaml"]
    pods = chart_pods(docs)
    assert sorted(d["metadata"]["namespace"] for d in by_kind(docs, "NetworkPolicy")
                  if d["metadata"]["name"] == "oraculum-jobs") == ["astro-team-a", "astro-team-b", NAMESPACE]
    team = job_pod("astro-team-b", "iterate")
    assert connects(docs, team, pods["minio"], 9000) and connects(docs, team, pods["api"], 8000)
    elsewhere = job_pod("not-watched", "iterate")
    assert not connects(docs, elsewhere, pods["minio"], 9000) and not connects(docs, elsewhere, pods["api"], 8000)
    assert not connects(docs, Endpoint.pod("astro-team-b", dict(pods["api"].labels)), pods["minio"], 9000)

    # fitted to a cluster (ci/network-policy-values.yaml)
    docs = rendered["network-policy-values.yaml"]
    pods = chart_pods(docs)
    controller = Endpoint.pod("ingress-system", {"app.kubernetes.io/name": "ingress-nginx"})
    for target, port in ((pods["dashboard"], 8050), (pods["api"], 8000)):  # the Ingress routes to both
        assert connects(docs, controller, target, port) and not connects(docs, INGRESS_NGINX, target, port)
    assert connects(docs, Endpoint(ip="198.51.100.7"), pods["api"], 8000)  # apiIngressFrom
    assert not connects(docs, Endpoint(ip="198.51.100.7"), pods["dashboard"], 8050)
    prometheus = Endpoint.pod("monitoring", {"app": "prometheus"})
    assert connects(docs, prometheus, pods["operator"], 9090) and not connects(docs, prometheus, pods["operator"], 8080)
    coredns = Endpoint.pod("kube-system", {"k8s-app": "coredns"})
    assert connects(docs, pods["api"], coredns, 53, "UDP") and not connects(docs, pods["api"], KUBE_DNS, 53, "UDP")
    assert connects(docs, pods["operator"], Endpoint(ip="169.254.20.10"), 53, "UDP")  # extraEgress
    assert connects(docs, pods["operator"], Endpoint(ip="172.20.0.10"), 6443)
    assert not connects(docs, pods["operator"], Endpoint(ip="172.20.0.11"), 6443)
    assert not connects(docs, pods["operator"], Endpoint(ip="172.20.0.10"), 443)
    # fetch.allow: the settings ConfigMap carries it, and its addresses are opened to the fetchers
    settings = one(docs, "ConfigMap", "-settings")["data"]
    assert settings["ORACULUM_FETCH_ALLOW"] == "10.20.0.0/16,192.0.2.10,archive.internal"
    for pod in (pods["api"], job_pod(NAMESPACE)):
        assert connects(docs, pod, Endpoint(ip="10.20.3.4"), 443) and connects(docs, pod, Endpoint(ip="192.0.2.10"), 80)
        assert not connects(docs, pod, Endpoint(ip="10.21.0.1"), 443) and not connects(docs, pod, METADATA, 80)
    assert not connects(docs, pods["operator"], Endpoint(ip="10.20.3.4"), 443)

    # an external store and Redis: their ports (from the endpoint's URL), on the addresses given
    docs = rendered["external-credentials-values.yaml"]  # http://minio.storage.svc:9000, redis://...:6379
    pods = chart_pods(docs)
    store, cache = Endpoint(ip="10.30.0.5"), Endpoint(ip="10.30.0.6")
    assert connects(docs, pods["api"], store, 9000) and connects(docs, job_pod(NAMESPACE), store, 9000)
    assert not connects(docs, pods["api"], store, 9001) and connects(docs, pods["api"], cache, 6379)
    assert not connects(docs, pods["operator"], cache, 6379) and not connects(docs, job_pod(NAMESPACE), cache, 6379)
    docs = rendered["external-storage-values.yaml"]  # https://s3.eu-central-1.amazonaws.com
    assert connects(docs, chart_pods(docs)["operator"], Endpoint(ip="52.219.1.1"), 443)
    narrowed = render(helm, CHART / "ci" / "external-storage-values.yaml", values_file(tmp_path, {"networkPolicy": {
        "objectStore": {"cidrs": ["52.219.0.0/16"], "port": 8443}, "redis": {"cidrs": ["10.40.0.0/24"]}}}))
    operator = chart_pods(narrowed)["operator"]
    assert connects(narrowed, operator, Endpoint(ip="52.219.1.1"), 8443)
    assert not connects(narrowed, operator, Endpoint(ip="52.220.1.1"), 8443)
    assert connects(narrowed, chart_pods(narrowed)["api"], Endpoint(ip="10.40.0.9"), 6379)
    assert not connects(narrowed, chart_pods(narrowed)["api"], Endpoint(ip="10.41.0.9"), 6379)

    # switched off: no policy at all; fetch.allow empty: no variable (the app's default)
    off = render(helm, values_file(tmp_path, {"networkPolicy": {"enabled": False}}))
    assert not by_kind(off, "NetworkPolicy")
    assert "ORACULUM_FETCH_ALLOW" not in one(off, "ConfigMap", "-settings")["data"]


def test_fetch_allow_reaches_the_fetch_policy_of_every_process(rendered: dict[str, list[dict[str, Any]]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from oraculum.settings import Settings

    for name, value in one(rendered["network-policy-values.yaml"], "ConfigMap", "-settings")["data"].items():
        monkeypatch.setenv(name, value)
    assert Settings().fetch_allow == "10.20.0.0/16,192.0.2.10,archive.internal"


def test_the_api_servers_pod_security_admission_admits_every_pod_the_chart_and_the_operator_make(
        control_plane: Any, rendered: dict[str, list[dict[str, Any]]], helm: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above, against the real thing: kube-apiserver's PodSecurity admission, on a
    namespace labelled as the chart labels it, admits (server-side dry run) every pod of every
    values case and the operator's Jobs, and refuses a pod that breaks the standard."""
    from tests.support.controlplane import ApiError as KubeError

    from oraculum.control.jobs import JobConfig, experiment_job, preprocess_job
    from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec

    (labelled,) = by_kind(render(helm, values_file(tmp_path, {"namespace": {"create": True}})), "Namespace")
    namespace = control_plane.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "generateName": "restricted-", "labels": labelled["metadata"]["labels"]}})["metadata"]["name"]

    def admit(where: str, metadata: dict[str, Any], spec: dict[str, Any]) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "check", "labels": metadata.get("labels") or {}, "annotations": metadata.get("annotations") or {}},
            # the accounts live in the release's namespace, not this one; Pod Security does not look at them
            "spec": {k: v for k, v in spec.items() if k != "serviceAccountName"}}
        try:
            control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod, params={"dryRun": "All"})
        except KubeError as error:
            pytest.fail(f"{where}: {error}")

    try:
        for case, docs in rendered.items():
            for where, metadata, spec in pod_templates(docs):
                admit(f"{case}: {where}", metadata, spec)
        for name, value in operator_env(rendered["gpu-values.yaml"]).items():
            monkeypatch.setenv(name, value)
        config = JobConfig()
        spec = ExperimentSpec.model_validate({"dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}],
                                              "resources": {"gpu": 1}})
        ppj = PreprocessingJobSpec.model_validate({"source": {"synthetic": {"count": 10}}, "dataset": "d"})
        for job in (experiment_job("e", namespace, "u", spec, "iterate", 1, config),
                    preprocess_job("p", namespace, "u", ppj, config)):
            admit(job["metadata"]["name"], job["spec"]["template"]["metadata"], job["spec"]["template"]["spec"])
        _, metadata, good = pod_templates(rendered["default-values.yaml"])[0]
        root = {**good, "securityContext": {**good["securityContext"], "runAsNonRoot": False, "runAsUser": 0}}
        with pytest.raises(pytest.fail.Exception, match="violates PodSecurity"):
            admit("a root pod", metadata, root)
    finally:
        control_plane.delete(f"/api/v1/namespaces/{namespace}")
