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


def schema_nodes(node: dict[str, Any], path: str = "", field: bool = False) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every node of a schema: its dotted path ("" for the root; a list's items share the list's
    path), the node, and whether it is a named field (a property) rather than the root, a list's
    items or a map's values."""
    yield path, node, field
    for name, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{name}".lstrip("."), True)
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], path)
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.kind)
def test_every_field_is_described_for_kubectl_explain(kind: Any) -> None:
    schema = schema_of(kind.kind)
    # metadata may carry nothing but its type (the server describes it as ObjectMeta); kubectl explain
    # shows a list's or a map's description for its items
    missing = [path for path, node, field in schema_nodes(schema)
               if field and path != "metadata" and not node.get("description")]
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


def example(name: str, kind: str) -> dict[str, Any]:
    """The first document of kind ``kind`` in examples/<name>."""
    return next(d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d and d["kind"] == kind)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted ``path`` (``spec.resources.cpu``) to ``value``."""
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _classes(change: Callable[[list[dict[str, Any]]], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda document: change(document["spec"]["classes"])


PUBLISHED, SIMULATED = "experiment-published.yaml", "experiment-simulated.yaml"
LAMOST, VOTABLE = "preprocess-lamost-minio.yaml", "preprocess-votable.yaml"
SUPPORTED = "Unsupported value"  # the server's answer to a value outside an enum


@dataclass(frozen=True)
class Invalid:
    """One mistake in an example that both the models and the API server refuse.

    ``model``: text in the models' :class:`ManifestError`; ``server``: text in the server's answer
    (what ``kubectl apply`` prints). ``crd`` says how the CRD refuses it: ``schema`` (type,
    pattern, range, enum, required, items: the structural schema, which ``jsonschema`` checks
    here too), ``cel:<path>`` (an ``x-kubernetes-validations`` rule at that schema path, ""
    for the root, whose message contains ``server``), or ``strict`` (an unknown field: the server
    prunes it and kubectl's default strict field validation refuses it).
    """

    id: str
    example: str
    change: Callable[[dict[str, Any]], Any]
    model: str
    server: str
    crd: str

    @property
    def kind(self) -> str:
        return "PreprocessingJob" if self.example.startswith("preprocess") else "ActiveLearningExperiment"

    def document(self) -> dict[str, Any]:
        document = copy.deepcopy(example(self.example, self.kind))
        self.change(document)
        return document


INVALID: list[Invalid] = [
    # the name becomes a label value of the resource's Jobs and pods
    Invalid("ale-name-over-63", PUBLISHED, _set("metadata.name", "e" * 64),
            "metadata.name must be at most 63 characters", "metadata.name must be at most 63 characters", "cel:"),
    Invalid("ppj-name-over-63", LAMOST, _set("metadata.name", "p" * 64),
            "metadata.name must be at most 63 characters", "metadata.name must be at most 63 characters", "cel:"),
    # resource quantities a Job cannot carry
    Invalid("cpu-two", PUBLISHED, _set("spec.resources.cpu", "two"),
            "spec.resources.cpu: String should match pattern", "spec.resources.cpu in body should match", "schema"),
    Invalid("memory-4-GB", LAMOST, _set("spec.resources.memory", "4 GB"),
            "spec.resources.memory: String should match pattern", "spec.resources.memory in body should match",
            "schema"),
    Invalid("memory-negative", SIMULATED, _set("spec.resources.memory", "-1Gi"),
            "spec.resources.memory: String should match pattern", "spec.resources.memory in body should match",
            "schema"),
    # checks that were only in the models
    Invalid("duplicate-class-names", PUBLISHED, _classes(lambda c: c.append({"name": "emission"})),
            "class names must be unique", "spec.classes: Invalid value: class names must be unique",
            "cel:spec.classes"),
    Invalid("duplicate-hotkeys", PUBLISHED, _classes(lambda c: c[1].update(hotkey="1")),
            "class hotkeys must be unique", "spec.classes: Invalid value: class hotkeys must be unique",
            "cel:spec.classes"),
    Invalid("no-target-class", PUBLISHED, _classes(lambda c: [x.update(target=False) for x in c]),
            "at least one class must have target: true", "at least one class must have target: true",
            "cel:spec.classes"),
    Invalid("composition-sum-0.9", PUBLISHED, _set("spec.acquisition.composition", {"uncertainty": 0.8, "random": 0.1}),
            "composition shares must sum to 1, they sum to 0.9",
            "spec.acquisition.composition: Invalid value: composition shares must sum to 1",
            "cel:spec.acquisition.composition"),
    Invalid("composition-empty", PUBLISHED, _set("spec.acquisition.composition", {}),
            "composition shares must sum to 1", "composition shares must sum to 1", "cel:spec.acquisition.composition"),
    Invalid("composition-negative-share", PUBLISHED,
            _set("spec.acquisition.composition", {"uncertainty": 1.25, "random": -0.25}),
            "composition.random: Input should be greater than or equal to 0",
            "spec.acquisition.composition.random in body should be greater than or equal to 0", "schema"),
    Invalid("composition-unknown-reason", PUBLISHED,
            _set("spec.acquisition.composition", {"uncertainty": 0.5, "novelty": 0.5}),
            "composition.novelty", 'unknown field "spec.acquisition.composition.novelty"', "strict"),
    Invalid("simulated-oracle-labels-empty", SIMULATED, _set("spec.oracle.labels", ""),
            "oracle.labels is required when oracle.type is simulated",
            "spec.oracle: Invalid value: oracle.labels is required when oracle.type is simulated", "cel:spec.oracle"),
    Invalid("simulated-oracle-without-labels", SIMULATED, _drop("spec.oracle.labels"),
            "oracle.labels is required when oracle.type is simulated",
            "oracle.labels is required when oracle.type is simulated", "cel:spec.oracle"),
    Invalid("two-sources", LAMOST, _set("spec.source.synthetic", {"count": 100}),
            "give exactly one of source.url", "give exactly one of url, synthetic, votable, urls and httpIndex",
            "cel:spec.source"),
    Invalid("no-source", LAMOST, _set("spec.source", {"patterns": ["*.fits"]}),
            "give exactly one of source.url", "give exactly one of url, synthetic, votable, urls and httpIndex",
            "cel:spec.source"),
    Invalid("fetch-with-an-archive-url", LAMOST, _set("spec.source.fetch", {"concurrency": 2}),
            "source.fetch applies to votable, urls and httpIndex sources only",
            "spec.source.fetch: Invalid value: source.fetch applies to votable, urls and httpIndex sources only",
            "cel:spec"),
    Invalid("votable-url-and-key", VOTABLE, _set("spec.source.votable.url", "https://archive.example/ssap?POS=1,2"),
            "give exactly one of votable.url", "give exactly one of votable.url and votable.key",
            "cel:spec.source.votable"),
    Invalid("urls-neither-url-nor-key", LAMOST, lambda d: d["spec"].update(source={"urls": {}}),
            "give exactly one of urls.url", "give exactly one of urls.url and urls.key", "cel:spec.source.urls"),
    Invalid("grid-end-before-start", LAMOST, _set("spec.grid.end", 6000.0),
            "must be greater than start", "spec.grid: Invalid value: grid end must be greater than start",
            "cel:spec.grid"),
    # out-of-range numbers
    Invalid("negative-batch-size", PUBLISHED, _set("spec.acquisition.batchSize", -5),
            "acquisition.batchSize: Input should be greater than or equal to 1",
            "spec.acquisition.batchSize in body should be greater than or equal to 1", "schema"),
    Invalid("gpu-17", PUBLISHED, _set("spec.resources.gpu", 17),
            "resources.gpu: Input should be less than or equal to 16",
            "spec.resources.gpu in body should be less than or equal to 16", "schema"),
    Invalid("confidence-1", PUBLISHED, _set("spec.estimation.confidence", 1.0),
            "estimation.confidence: Input should be less than 1",
            "spec.estimation.confidence in body should be less than 1",
            "schema"),
    Invalid("zero-shards", LAMOST, _set("spec.shards", 0),
            "shards: Input should be greater than or equal to 1",
            "spec.shards in body should be greater than or equal to 1",
            "schema"),
    Invalid("share-over-1", PUBLISHED, _set("spec.acquisition.composition", {"uncertainty": 2.0}),
            "composition.uncertainty: Input should be less than or equal to 1",
            "spec.acquisition.composition.uncertainty in body should be less than or equal to 1", "schema"),
    # unknown enum values
    Invalid("unknown-strategy", PUBLISHED, _set("spec.acquisition.strategy", "psychic"),
            "acquisition.strategy: Input should be", f'{SUPPORTED}: "psychic"', "schema"),
    Invalid("unknown-oracle-type", PUBLISHED, _set("spec.oracle.type", "crowd"),
            "oracle.type: Input should be", f'{SUPPORTED}: "crowd"', "schema"),
    Invalid("unknown-normalisation", LAMOST, _set("spec.normalisation", "zscore"),
            "normalisation: Input should be", f'{SUPPORTED}: "zscore"', "schema"),
    Invalid("unknown-medium", LAMOST, _set("spec.grid.medium", "space"),
            "grid.medium: Input should be", f'{SUPPORTED}: "space"', "schema"),
    # the rest of the schema
    Invalid("one-class-only", PUBLISHED, _set("spec.classes", [{"name": "emission", "target": True}]),
            "classes: List should have at least 2 items", "spec.classes in body should have at least 2 items",
            "schema"),
    Invalid("reserved-hotkey", PUBLISHED, _classes(lambda c: c[0].update(hotkey="u")),
            "hotkey: String should match pattern", "spec.classes[0].hotkey in body should match", "schema"),
    Invalid("missing-dataset", PUBLISHED, _drop("spec.dataset"),
            "dataset: Field required", "spec.dataset: Required value", "schema"),
    Invalid("dataset-not-a-name", LAMOST, _set("spec.dataset", "LAMOST_DR2"),
            "dataset: String should match pattern", "spec.dataset in body should match", "schema"),
    Invalid("cpu-as-a-number", PUBLISHED, _set("spec.resources.cpu", 2),
            "resources.cpu: Input should be a valid string", 'spec.resources.cpu: Invalid value: "integer"', "schema"),
    Invalid("a-typo-in-a-field-name", PUBLISHED, _set("spec.acquisition.batchsize", 10),
            "acquisition.batchsize", 'unknown field "spec.acquisition.batchsize"', "strict"),
]

#: Near misses that both must ACCEPT (the other side of each rule's boundary).
VALID: list[Invalid] = [
    Invalid("name-of-63", PUBLISHED, _set("metadata.name", "e" * 63), "", "", "cel:"),
    Invalid("shares-with-rounding", PUBLISHED,
            _set("spec.acquisition.composition", {"uncertainty": 0.7, "diversity": 0.2, "random": 0.1}), "", "",
            "cel:spec.acquisition.composition"),
    Invalid("integer-share", PUBLISHED, _set("spec.acquisition.composition", {"random": 1}), "", "",
            "cel:spec.acquisition.composition"),
    Invalid("human-oracle-empty-labels", PUBLISHED, _set("spec.oracle", {"type": "human", "labels": ""}), "", "",
            "cel:spec.oracle"),
    Invalid("targets-by-default-false", PUBLISHED, _classes(lambda c: c[1].pop("target", None)), "", "",
            "cel:spec.classes"),
    Invalid("no-hotkeys", PUBLISHED, _classes(lambda c: [x.pop("hotkey", None) for x in c]), "", "",
            "cel:spec.classes"),
    Invalid("quantities", PUBLISHED, lambda d: d["spec"]["resources"].update(cpu="500m", memory="1.5Gi"), "", "",
            "schema"),
    Invalid("fetch-with-an-index", LAMOST, lambda d: d["spec"].update(source={
        "httpIndex": "https://archive.example/dr2/", "fetch": {"concurrency": 2}}), "", "", "cel:spec"),
]

#: Quantities the models (and so the CRDs) accept for cpu and memory, and some they refuse.
QUANTITIES_ACCEPTED = ["1", "2", "500m", "0.5", ".5", "2.", "100k", "4Gi", "512Mi", "1.5Gi", "1e3", "1E3", "1E",
                       "250u", "2Ti"]
QUANTITIES_REFUSED = ["two", "4 GB", "4GB", "4gi", "1.2.3", "", "-1", "+1", "1e", "1e1.5", "Gi", "1 ", " 1"]


def _rules(kind: str) -> list[tuple[str, dict[str, str]]]:
    """(schema path, rule) of every CEL rule of a kind's CRD."""
    return [(path, rule) for path, node, _ in schema_nodes(schema_of(kind))
            for rule in node.get("x-kubernetes-validations", [])]


def _says(rule: dict[str, str], server: str) -> bool:
    """Whether the server's answer ``server`` (or the part a case expects of it) is this rule's message."""
    return rule["message"] in server or server in rule["message"]


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifests_are_refused_by_the_models_and_the_crd(case: Invalid) -> None:
    document = case.document()
    with pytest.raises(ManifestError) as refused:
        parse_manifest(document, "mistake.yaml")
    message = str(refused.value)
    assert "mistake.yaml" in message and case.model in message
    errors = schema_errors(document)
    if case.crd == "schema":
        assert errors, "the CRD's structural schema accepts it"
    elif case.crd == "strict":
        # a structural schema cannot forbid unknown fields: the server prunes them, and kubectl's
        # default (strict) field validation refuses them
        assert errors == []
    else:
        # a CEL rule, which jsonschema cannot run: the rule at that path says what the models say
        assert errors == []
        path = case.crd.removeprefix("cel:")
        rules = [rule for at, rule in _rules(document["kind"]) if at == path]
        assert any(_says(rule, case.server) for rule in rules), rules


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_near_misses_are_accepted_by_the_models_and_the_crd(case: Invalid) -> None:
    document = case.document()
    parse_manifest(document, "fine.yaml")
    assert schema_errors(document) == []


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.kind)
def test_every_cel_rule_of_the_crds_has_an_invalid_case(kind: Any) -> None:
    """A rule added to a model without a case here is a rule no test has seen the server apply."""
    cases = [c for c in INVALID if c.kind == kind.kind and c.crd.startswith("cel:")]
    for path, rule in _rules(kind.kind):
        assert rule.get("message"), f"{path}: a rule without a message: {rule}"
        assert any(c.crd == f"cel:{path}" and _says(rule, c.server) for c in cases), \
            f"no case in INVALID refuses {path}: {rule['message']}"


def test_the_crds_carry_the_rules_of_the_models() -> None:
    experiment = dict(_rules("ActiveLearningExperiment"))  # the last rule of each path
    messages = {(path, rule["message"]) for path, rule in _rules("ActiveLearningExperiment")}
    assert {
        ("", "metadata.name must be at most 63 characters (it becomes a label value on the resource's Jobs and pods)"),
        ("spec.classes", "class names must be unique"),
        ("spec.classes", "class hotkeys must be unique"),
        ("spec.classes", "at least one class must have target: true (what the campaign looks for)"),
        ("spec.acquisition.composition", "composition shares must sum to 1"),
        ("spec.oracle", "oracle.labels is required when oracle.type is simulated"),
    } <= messages
    assert experiment["spec.oracle"]["rule"] == \
        "self.type != 'simulated' || (has(self.labels) && size(self.labels) > 0)"
    total = experiment["spec.acquisition.composition"]["rule"]
    assert ">= 0.999999" in total and "<= 1.000001" in total
    assert all(f"has(self.{key})" in total for key in COMPOSITION_SHARES)
    preprocessing = {(path, rule["message"]) for path, rule in _rules("PreprocessingJob")}
    assert ("spec", "source.fetch applies to votable, urls and httpIndex sources only") in preprocessing
    assert ("", "metadata.name must be at most 63 characters (it becomes a label value on the resource's Jobs and "
                "pods)") in preprocessing
    (fetch_rule,) = [rule for path, rule in _rules("PreprocessingJob") if path == "spec"]
    assert fetch_rule["fieldPath"] == ".source.fetch"
    for kind in ("ActiveLearningExperiment", "PreprocessingJob"):
        resources = schema_of(kind)["properties"]["spec"]["properties"]["resources"]["properties"]
        assert resources["cpu"]["pattern"] == resources["memory"]["pattern"] == QUANTITY_PATTERN


@pytest.mark.parametrize("quantity", QUANTITIES_ACCEPTED)
def test_kubernetes_quantities_are_accepted(quantity: str) -> None:
    assert re.fullmatch(QUANTITY_PATTERN, quantity)
    assert ResourcesSpec(cpu=quantity, memory=quantity).cpu == quantity


@pytest.mark.parametrize("quantity", QUANTITIES_REFUSED)
def test_what_is_not_a_quantity_is_refused(quantity: str) -> None:
    assert not re.fullmatch(QUANTITY_PATTERN, quantity)
    with pytest.raises(ValueError, match="should match pattern"):
        ResourcesSpec(cpu=quantity)


def test_preprocessing_needs_exactly_one_source() -> None:
    document = yaml.safe_load((ROOT / "examples" / "preprocess-lamost-minio.yaml").read_text())
    document["spec"]["source"]["synthetic"] = {"count": 100}
    with pytest.raises(ManifestError, match="exactly one of source.url"):
        parse_manifest(document, "two-sources.yaml")
    rules = schema_of("PreprocessingJob")["properties"]["spec"]["properties"]["source"]["x-kubernetes-validations"]
    assert rules == [{"message": "give exactly one of url, synthetic, votable, urls and httpIndex",
                      "rule": "(has(self.url) ? 1 : 0) + (has(self.synthetic) ? 1 : 0) + (has(self.votable) ? 1 : 0) + "
                              "(has(self.urls) ? 1 : 0) + (has(self.httpIndex) ? 1 : 0) == 1"}]
