"""Smoke test of the real control plane (tests/support/controlplane.py).

etcd, kube-apiserver and kube-controller-manager are the upstream programs, built from their Go
modules (scripts/controlplane-build). Pods run through the PROCESS KUBELET, which stands in for
kubelet (and binds pods in place of kube-scheduler): it runs each container's command as a local
process and reports real pod status; the real Job controller and garbage collector do the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def namespace(control_plane):
    name = control_plane.create_namespace("smoke-")
    yield name
    control_plane.delete(f"/api/v1/namespaces/{name}")


def job(name: str, script: str, **spec) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}},
    }


def finished(control_plane, namespace: str, name: str) -> dict | None:
    """The Job once it has a Complete or Failed condition."""
    obj = control_plane.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    for condition in obj.get("status", {}).get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return obj
    return None


def pods_of(control_plane, namespace: str, name: str) -> list[dict]:
    return control_plane.get(f"/api/v1/namespaces/{namespace}/pods",
                             labelSelector=f"batch.kubernetes.io/job-name={name}")["items"]


def test_api_server_is_ready_and_reports_its_release(control_plane):
    assert control_plane.get("/readyz") == "ok"
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.37."), version
    node = control_plane.get(f"/api/v1/nodes/{control_plane.node_name}")
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_crds_install_and_become_established(control_plane):
    names = [doc["metadata"]["name"] for path in sorted((REPO / "crds").glob("*.yaml"))
             for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert names
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          *[f"crd/{name}" for name in names])


def test_job_runs_to_completion_through_the_job_controller(control_plane, namespace):
    control_plane.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job("hello", "echo hi"))
    done = control_plane.wait_for(lambda: finished(control_plane, namespace, "hello"), 60, "job hello")
    assert done["status"].get("succeeded") == 1, done["status"]
    [pod] = pods_of(control_plane, namespace, "hello")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert control_plane.pod_logs(namespace, pod["metadata"]["name"])["main"] == "hi\n"


def test_indexed_job_gives_each_pod_its_completion_index(control_plane, namespace):
    control_plane.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job(
        "indexed", "echo index=$JOB_COMPLETION_INDEX", completions=3, parallelism=3, completionMode="Indexed"))
    done = control_plane.wait_for(lambda: finished(control_plane, namespace, "indexed"), 60, "job indexed")
    assert done["status"].get("succeeded") == 3, done["status"]
    pods = pods_of(control_plane, namespace, "indexed")
    assert len(pods) == 3
    seen = set()
    for pod in pods:
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert control_plane.pod_logs(namespace, pod["metadata"]["name"])["main"] == f"index={index}\n"
        seen.add(index)
    assert seen == {"0", "1", "2"}


def test_deleting_a_job_garbage_collects_its_running_pods(control_plane, namespace):
    control_plane.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job("sleeper", "exec sleep 300"))

    def running() -> dict | None:
        pods = pods_of(control_plane, namespace, "sleeper")
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    pod = control_plane.wait_for(running, 60, "the sleeper pod Running")
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("process://"))
    assert Path(f"/proc/{pid}").exists()
    # kubectl's default propagation is background: the garbage collector deletes the pods
    control_plane.kubectl("delete", "job", "sleeper", "-n", namespace, "--wait=false")
    control_plane.wait_for(lambda: not pods_of(control_plane, namespace, "sleeper"), 60,
                           "the garbage collector to delete the sleeper pod")
    assert not control_plane.exists(f"/apis/batch/v1/namespaces/{namespace}/jobs/sleeper")
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the pod's process still runs"
