"""The CRDs are generated from the pydantic models, checked in, structural and self-describing;
every example validates against them and against the models; typical mistakes are refused by both.

:data:`INVALID` is the table of mistakes both the models and the API server must refuse, each
with the text of the models' error and of the server's; here it is checked against the models
and the generated schema (every CEL rule of the CRDs has a case), and
tests/control/test_crds_real_server.py sends every case to a real kube-apiserver.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from oraculum.cli.main import main
from oraculum.control.crds import CRD_KINDS, check_structural, crd, crd_file_name, render, validation_schema
from oraculum.manifests import (
    COMPOSITION_SHARES,
    QUANTITY_PATTERN,
    AcquisitionSpec,
    ManifestError,
    ResourcesSpec,
    load_manifests,
    parse_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def schema_of(kind: str) -> dict[str, Any]:
    found = next(k for k in CRD_KINDS if k.kind == kind)
    return crd(found)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(validation_schema(schema_of(document["kind"])))
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_checked_in_crds_are_what_the_models_generate() -> None:
    for kind in CRD_KINDS:
        path = CRDS / crd_file_name(kind)
        assert path.is_file(), f"{path} is missing: run `oraculum crds`"
        assert path.read_text(encoding="utf-8") == render(kind), f"{path} is stale: run `oraculum crds`"
    result = CliRunner().invoke(main, ["crds", "--check", "--out", str(CRDS)])
    assert result.exit_code == 0, result.output


def test_crds_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["crds", "--out", str(tmp_path)]).exit_code == 0
    stale = tmp_path / crd_file_name(CRD_KINDS[0])
    stale.write_text(stale.read_text().replace("Pods running at once", "Pods running"))
    result = runner.invoke(main, ["crds", "--check", "--out", str(tmp_path)])
    assert result.exit_code != 0 and crd_file_name(CRD_KINDS[0]) in result.output


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.kind)
def test_crd_shape(kind: Any) -> None:
    document = yaml.safe_load((CRDS / crd_file_name(kind)).read_text())
    spec = document["spec"]
    assert document["metadata"]["name"] == f"{kind.plural}.oraculum.dev"
    assert spec["group"] == "oraculum.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == list(kind.short_names) and spec["names"]["categories"] == ["oraculum"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert check_structural(version["schema"]["openAPIV3Schema"]) == []


def test_printer_columns_and_short_names() -> None:
    columns = {k.kind: [c["name"] for c in crd(k)["spec"]["versions"][0]["additionalPrinterColumns"]] for k in CRD_KINDS}
    assert columns["ActiveLearningExperiment"] == ["Phase", "Iteration", "Labelled", "Estimate", "Age"]
    assert columns["PreprocessingJob"][0] == "Phase" and columns["PreprocessingJob"][-1] == "Age"
    assert {k.kind: k.short_names for k in CRD_KINDS} == {"PreprocessingJob": ("ppj",), "ActiveLearningExperiment": ("ale",)}


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema with its dotted path ("" for the root; a list's items share the list's path)."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{name}".lstrip("."))
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], path)
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.kind)
def test_every_field_is_described_for_kubectl_explain(kind: Any) -> None:
    schema = schema_of(kind.kind)
    # metadata may carry nothing but its type (the server describes it as ObjectMeta)
    missing = [path for path, node in schema_nodes(schema) if path != "metadata" and not node.get("description")]
    assert missing == []
    if kind.kind == "ActiveLearningExperiment":
        composition = schema["properties"]["spec"]["properties"]["acquisition"]["properties"]["composition"]
        assert {name: sub["description"] for name, sub in composition["properties"].items()} == COMPOSITION_SHARES


def test_composition_keys_are_the_described_shares() -> None:
    keys = AcquisitionSpec.model_fields["composition"].annotation.__args__[0].__args__  # dict[Literal[...], ...]
    assert tuple(COMPOSITION_SHARES) == keys


def test_schema_carries_defaults_enums_bounds_and_required_fields() -> None:
    spec = schema_of("ActiveLearningExperiment")["properties"]["spec"]
    acquisition = spec["properties"]["acquisition"]["properties"]
    assert acquisition["batchSize"]["default"] == 100 and acquisition["batchSize"]["minimum"] == 1
    assert acquisition["strategy"]["enum"] == ["entropy", "margin", "least-confidence", "bald", "random"]
    assert spec["required"] == ["dataset", "classes"]
    assert spec["properties"]["classes"]["minItems"] == 2
    assert spec["properties"]["initial"]["nullable"] is True
    confidence = spec["properties"]["estimation"]["properties"]["confidence"]
    assert confidence["exclusiveMinimum"] is True and confidence["exclusiveMaximum"] is True
    template = spec["properties"]["resources"]["properties"]["podTemplate"]
    assert template["x-kubernetes-preserve-unknown-fields"] is True
    # the status is documented, but carries no defaults (only the controller writes it)
    status = schema_of("ActiveLearningExperiment")["properties"]["status"]
    assert status["properties"]["phase"]["enum"] == ["Pending", "Training", "AwaitingLabels", "Succeeded", "Failed", "Suspended"]
    assert "default" not in yaml.safe_dump(status)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crds_and_the_models(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        assert schema_errors(document) == [], f"{path.name}: {document['metadata']['name']}"
    assert len(load_manifests(path)) == len(documents)


def test_there_are_the_three_promised_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"preprocess-lamost-minio.yaml", "experiment-published.yaml",
                                          "experiment-simulated.yaml"}


@@TABLE@@


def test_preprocessing_needs_exactly_one_source() -> None:
    document = yaml.safe_load((ROOT / "examples" / "preprocess-lamost-minio.yaml").read_text())
    document["spec"]["source"]["synthetic"] = {"count": 100}
    with pytest.raises(ManifestError, match="exactly one of source.url"):
        parse_manifest(document, "two-sources.yaml")
    rules = schema_of("PreprocessingJob")["properties"]["spec"]["properties"]["source"]["x-kubernetes-validations"]
    assert rules == [{"message": "give exactly one of url, synthetic, votable, urls and httpIndex",
                      "rule": "(has(self.url) ? 1 : 0) + (has(self.synthetic) ? 1 : 0) + (has(self.votable) ? 1 : 0) + "
                              "(has(self.urls) ? 1 : 0) + (has(self.httpIndex) ? 1 : 0) == 1"}]
