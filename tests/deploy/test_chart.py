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
import json
import re
import shutil
import subprocess
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
