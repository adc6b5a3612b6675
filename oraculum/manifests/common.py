"""What both custom resources share: the API group and version, the field conventions, pod resources.

Field names are camelCase in manifests (the Kubernetes convention) and snake_case in Python;
unknown fields are errors, so a typo in a manifest is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["API_VERSION", "GROUP", "NAME_MAX_LENGTH", "NAME_PATTERN", "NAME_TOO_LONG", "QUANTITY_PATTERN", "VERSION",
           "ResourcesSpec", "SpecModel", "cel_rule", "cel_rules"]

#: The API group and version of both custom resources (``apiVersion: oraculum.dev/v1alpha1``).
GROUP = "oraculum.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A Kubernetes object name (lower-case alphanumerics, '-' and '.', at most 63 characters); also
#: the rule for dataset names.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"

#: A resource's name becomes a label value of its Jobs and pods, which Kubernetes caps at 63
#: characters (the API server itself allows 253 for a custom resource's name).
NAME_MAX_LENGTH = 63
NAME_TOO_LONG = (f"metadata.name must be at most {NAME_MAX_LENGTH} characters "
                 "(it becomes a label value on the resource's Jobs and pods)")

#: A Kubernetes resource quantity that is not negative (the grammar of
#: k8s.io/apimachinery/pkg/api/resource: digits with an optional fraction, then a binary suffix
#: Ki..Ei, a decimal suffix n u m k M G T P E, or an integer exponent e3/E-2), e.g. '2', '500m',
#: '1.5', '4Gi', '1e3'. The CRD carries it as the field's pattern, so the API server refuses
#: 'two' or '4 GB' as the models do.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CRD validation rule (``x-kubernetes-validations``): a CEL expression over ``self``
    that must hold, and the message ``kubectl apply`` shows when it does not. ``field_path``
    (e.g. ``.classes``) names the field the error is reported on."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules: on a model (``ConfigDict(json_schema_extra=...)``)
    or on a field (``Field(json_schema_extra=...)``), ``oraculum crds`` puts them in the CRD.

    Each rule mirrors a validator of the model, with the same message, so the API server refuses
    what the models refuse (tests/control/test_crds_real_server.py checks it on a real one)."""
    return {"x-kubernetes-validations": list(rules)}


class SpecModel(BaseModel):
    """camelCase in manifests, snake_case in Python; unknown fields are errors, not ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ResourcesSpec(SpecModel):
    """Compute for the pods of a Job."""

    gpu: int = Field(0, ge=0, le=16, description="GPUs per pod (resources.limits nvidia.com/gpu).")
    cpu: str = Field("1", pattern=QUANTITY_PATTERN,
                     description="CPU request per pod, a Kubernetes quantity as a string, e.g. '2' or '500m'.")
    memory: str = Field("2Gi", pattern=QUANTITY_PATTERN,
                        description="Memory request and limit per pod, a Kubernetes quantity, e.g. '4Gi' or '512Mi'.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations, e.g. for tainted GPU nodes."
    )
    pod_template: dict[str, Any] = Field(
        default_factory=dict,
        description="A partial pod template merged over the generated one (strategic fields such as "
        "securityContext, priorityClassName, volumes).",
    )
