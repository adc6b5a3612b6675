"""CustomResourceDefinitions generated from the pydantic models: one source of truth.

``oraculum crds`` writes ``crds/<plural>.oraculum.dev.yaml``; a test fails when the checked-in
files differ from what the models generate, so a field added to a spec model is in the CRD (with
its description for ``kubectl explain``, its default, enum and bounds) or the build is red.

Kubernetes accepts only *structural* schemas: every node has a ``type`` (or preserves unknown
fields), no ``$ref``, no ``anyOf`` of types, ``properties`` never mixed with
``additionalProperties``, booleans for ``exclusiveMinimum``. :func:`structural` converts what
pydantic emits (JSON Schema 2020-12) into that dialect; :func:`check_structural` verifies the
result, so a model change that cannot be expressed fails loudly here rather than at
``kubectl apply`` time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from oraculum.manifests import (
    GROUP,
    METADATA_RULES,
    VERSION,
    ExperimentSpec,
    ExperimentStatus,
    PreprocessingJobSpec,
    PreprocessingJobStatus,
)

__all__ = ["CRD_KINDS", "validation_schema", "CrdKind", "check_structural", "crd", "crd_file_name", "open_api_schema", "render", "structural", "write_crds"]

#: Keywords of a structural schema that are kept as they are.
_KEPT = ("description", "type", "format", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
         "minItems", "maxItems", "nullable", "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields")


@dataclass(frozen=True)
class CrdKind:
    """Names and printing of one custom resource."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    columns: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

CRD_KINDS: tuple[CrdKind, ...] = (
    CrdKind(
        kind="PreprocessingJob",
        plural="preprocessingjobs",
        singular="preprocessingjob",
        short_names=("ppj",),
        spec_model=PreprocessingJobSpec,
        status_model=PreprocessingJobStatus,
        description="Turn raw archive spectra (FITS in a folder or bucket, or synthetic ones) into a sharded, "
        "gridded dataset, as one Indexed Job whose pod i processes shard i.",
        columns=(
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the job is."},
            {"name": "Dataset", "type": "string", "jsonPath": ".spec.dataset", "description": "Dataset written."},
            {"name": "Shards", "type": "integer", "jsonPath": ".status.shardsDone", "description": "Shards done."},
            {"name": "Processed", "type": "integer", "jsonPath": ".status.processed", "description": "Spectra stored."},
            {"name": "Rejected", "type": "integer", "jsonPath": ".status.rejected", "description": "Files rejected."},
            _AGE,
        ),
    ),
    CrdKind(
        kind="ActiveLearningExperiment",
        plural="activelearningexperiments",
        singular="activelearningexperiment",
        short_names=("ale",),
        spec_model=ExperimentSpec,
        status_model=ExperimentStatus,
        description="A human-in-the-loop active-learning campaign over a pool dataset: each iteration trains a "
        "network, scores the pool, and asks the oracle to label the spectra it is least sure about, until a "
        "stopping criterion is met.",
        columns=(
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the loop is."},
            {"name": "Iteration", "type": "integer", "jsonPath": ".status.iteration", "description": "Current iteration."},
            {"name": "Labelled", "type": "integer", "jsonPath": ".status.batch.labelled",
             "description": "Spectra of the current batch labelled so far (of .status.batch.size)."},
            {"name": "Estimate", "type": "string", "jsonPath": ".status.estimate.summary",
             "description": "Latest precision estimate of the predicted targets with its interval."},
            _AGE,
        ),
    ),
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every ``$ref`` (pydantic puts nested models under ``$defs``)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target.update(siblings)  # a field's own description/default win over the model's
        return _resolve(target, defs)
    return {key: _resolve(value, defs) for key, value in node.items() if key != "$defs"}


def structural(node: dict[str, Any]) -> dict[str, Any]:
    """One schema node (already ``$ref``-free) in the Kubernetes structural dialect."""
    node = dict(node)
    nullable = False
    for key in ("anyOf", "oneOf"):
        if key in node:
            given = node.pop(key)
            options = [option for option in given if option.get("type") != "null"]
            nullable = len(options) < len(given)
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
            merged = dict(options[0])
            merged.update({k: v for k, v in node.items() if k in ("description", "default")})
            node = merged
    if node.get("default", ...) is None:
        node.pop("default")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if isinstance(node.get("exclusiveMaximum"), (int, float)) and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    out: dict[str, Any] = {key: node[key] for key in _KEPT if key in node}
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if node.get(key) is True:
            out[key] = True
    if "default" in node:
        out["default"] = node["default"]
    if nullable:
        out["nullable"] = True
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    kind = out.get("type")
    if kind == "object" or "properties" in node or "additionalProperties" in node:
        out["type"] = "object"
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        names = node.get("propertyNames", {}).get("enum")
        if properties:
            out["properties"] = {name: structural(sub) for name, sub in properties.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif names and isinstance(extra, dict):
            # dict[Literal[...], X]: every allowed key becomes a named property (kubectl explain lists
            # them), described by the field's x-key-descriptions when it has them
            described = node.get("x-key-descriptions", {})
            out["properties"] = {
                name: structural({**extra, **({"description": described[name]} if name in described else {})})
                for name in names}
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra)
        else:  # a free-form mapping (dict[str, Any]) such as a pod template: kept as given
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        items = node.get("items", {})
        out["items"] = structural(items) if items else {"x-kubernetes-preserve-unknown-fields": True}
    elif "type" not in out:  # Any
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_defaults(value) for key, value in node.items() if key != "default"}
    if isinstance(node, list):
        return [_without_defaults(item) for item in node]
    return node


def open_api_schema(model: type[BaseModel], defaults: bool = True) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model (camelCase field names).

    ``defaults=False`` drops every default: the API server applies schema defaults, which is
    right for a spec (``kubectl get -o yaml`` shows what will be used) but would make a status
    look written before any controller wrote it.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    schema = structural(resolved)
    return schema if defaults else _without_defaults(schema)


def check_structural(node: Any, path: str = "") -> list[str]:
    """Problems that would make Kubernetes reject the schema as non-structural (empty: fine)."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{path or '/'}: not a schema object"]
    for key in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "uniqueItems", "propertyNames", "const", "title"):
        if key in node:
            problems.append(f"{path or '/'}: {key} is not allowed in a structural schema")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields") and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path or '/'}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path or '/'}: properties and additionalProperties are mutually exclusive")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path or '/'}: {key} must be a boolean in OpenAPI v3.0")
    for name, sub in (node.get("properties") or {}).items():
        problems += check_structural(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += check_structural(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += check_structural(node["items"], f"{path}[]")
    return problems


def crd(kind: CrdKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a plain dict."""
    spec_schema = open_api_schema(kind.spec_model)
    status_schema = open_api_schema(kind.status_model, defaults=False)
    status_schema["description"] = status_schema.get("description") or "Written by the controller."
    schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "x-kubernetes-validations": [dict(rule) for rule in METADATA_RULES],
        "properties": {
            "apiVersion": {"type": "string", "description": "oraculum.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind.kind},
            # the API server allows nothing else here (kubectl explain shows ObjectMeta's own description);
            # the length of metadata.name is checked by the root's rule
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    problems = check_structural(schema)
    if problems:
        raise ValueError(f"{kind.kind}: the generated schema is not structural: " + "; ".join(problems))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.name,
            "labels": {"app.kubernetes.io/name": "oraculum", "app.kubernetes.io/part-of": "oraculum"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["oraculum"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in kind.columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_file_name(kind: CrdKind) -> str:
    return f"{kind.name}.yaml"


_HEADER = "# Generated by `oraculum crds` from the pydantic models in oraculum/manifests/: do not edit.\n"


def render(kind: CrdKind) -> str:
    """The YAML text of a CRD file, stable from run to run."""
    return _HEADER + yaml.safe_dump(crd(kind), sort_keys=False, allow_unicode=True, width=100)


def write_crds(folder: str | Path) -> list[Path]:
    """Write every CRD to ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in CRD_KINDS:
        path = folder / crd_file_name(kind)
        path.write_text(render(kind), encoding="utf-8")
        paths.append(path)
    return paths


def validation_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3.0 structural schema as JSON Schema draft 4 (what ``jsonschema`` checks).

    OpenAPI 3.0 is draft 4/5 semantics (boolean ``exclusiveMinimum``) plus ``nullable``, which
    becomes a ``null`` alternative; the ``x-kubernetes-*`` extensions are left to the API server
    (CEL rules need a CEL engine; the pydantic models check the same constraints).
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes") or key in ("nullable", "default"):
            continue
        if key == "properties":
            out[key] = {name: validation_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = validation_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out
