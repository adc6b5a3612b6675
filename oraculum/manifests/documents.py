"""Whole manifests: a document's apiVersion, kind, metadata and spec, validated, with errors that help.

:func:`parse_manifest` validates one document (a dict), :func:`load_manifests` every document of
a YAML file; both raise :class:`ManifestError` naming the file, the field and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oraculum.manifests.common import API_VERSION, NAME_MAX_LENGTH, NAME_PATTERN, NAME_TOO_LONG, cel_rule
from oraculum.manifests.experiment import ExperimentSpec
from oraculum.manifests.preprocessing_job import PreprocessingJobSpec
from oraculum.safe_parse import DocumentError, load_yaml_all

__all__ = [
    "KINDS",
    "METADATA_RULES",
    "ActiveLearningExperiment",
    "Manifest",
    "ManifestError",
    "Metadata",
    "PreprocessingJob",
    "describe_validation_error",
    "load_manifests",
    "parse_manifest",
]


class ManifestError(ValueError):
    """A manifest is invalid; the message names the file, the field and what to do."""


#: CEL rules on the whole object (the CRD's root schema, where ``self.metadata.name`` is visible):
#: the API server allows 253 characters for a custom resource's name, the models 63.
METADATA_RULES = [cel_rule(f"size(self.metadata.name) <= {NAME_MAX_LENGTH}", NAME_TOO_LONG)]


class Metadata(BaseModel):
    """The part of Kubernetes object metadata that oraculum reads."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME_PATTERN)
    namespace: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _short_enough(cls, value: object) -> object:
        # before the pattern (which also caps the length), for a message that says why
        if isinstance(value, str) and len(value) > NAME_MAX_LENGTH:
            raise ValueError(f"{NAME_TOO_LONG}; this one has {len(value)}")
        return value


class PreprocessingJob(BaseModel):
    model_config = ConfigDict(extra="allow")
    api_version: Literal["oraculum.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PreprocessingJob"]
    metadata: Metadata
    spec: PreprocessingJobSpec


class ActiveLearningExperiment(BaseModel):
    model_config = ConfigDict(extra="allow")
    api_version: Literal["oraculum.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ActiveLearningExperiment"]
    metadata: Metadata
    spec: ExperimentSpec


Manifest = PreprocessingJob | ActiveLearningExperiment
KINDS: dict[str, type[BaseModel]] = {
    "PreprocessingJob": PreprocessingJob,
    "ActiveLearningExperiment": ActiveLearningExperiment,
}


def _describe(error: ValidationError) -> str:
    parts = []
    for issue in error.errors():
        location = ".".join(str(part) for part in issue["loc"])
        parts.append(f"{location}: {issue['msg']}" + (f" (got {issue['input']!r})" if issue.get("type") != "missing" and not isinstance(issue.get("input"), dict) else ""))
    return "; ".join(parts)


def describe_validation_error(error: ValidationError) -> str:
    """A pydantic error as ``field.path: message (got value)``, joined by ``; ``."""
    return _describe(error)


def parse_manifest(document: dict[str, Any], origin: str = "<manifest>") -> Manifest:
    """A validated manifest; :class:`ManifestError` naming ``origin`` and the field otherwise."""
    if not isinstance(document, dict):
        raise ManifestError(f"{origin}: a manifest must be a mapping with apiVersion, kind, metadata, spec")
    kind = document.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{origin}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if document.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{origin}: apiVersion must be {API_VERSION}, got {document.get('apiVersion')!r}")
    try:
        return KINDS[kind].model_validate(document)  # type: ignore[return-value]
    except ValidationError as error:
        raise ManifestError(f"{origin}: invalid {kind}: {_describe(error)}") from None


def load_manifests(path: str | Path) -> list[Manifest]:
    """Every manifest in a YAML file (``---``-separated documents)."""
    path = Path(path)
    try:
        documents = load_yaml_all(path.read_bytes(), str(path))
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror}") from None
    except DocumentError as error:
        raise ManifestError(str(error)) from None
    if not documents:
        raise ManifestError(f"{path}: no manifest in the file")
    return [parse_manifest(doc, f"{path} (document {i + 1})" if len(documents) > 1 else str(path)) for i, doc in enumerate(documents)]
