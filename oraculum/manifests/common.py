"""What both custom resources share: the API group and version, the field conventions, pod resources.

Field names are camelCase in manifests (the Kubernetes convention) and snake_case in Python;
unknown fields are errors, so a typo in a manifest is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["API_VERSION", "GROUP", "NAME_PATTERN", "VERSION", "ResourcesSpec", "SpecModel"]

#: The API group and version of both custom resources (``apiVersion: oraculum.dev/v1alpha1``).
GROUP = "oraculum.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A Kubernetes object name (lower-case alphanumerics, '-' and '.', at most 63 characters); also
#: the rule for dataset names.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"


class SpecModel(BaseModel):
    """camelCase in manifests, snake_case in Python; unknown fields are errors, not ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ResourcesSpec(SpecModel):
    """Compute for the pods of a Job."""

    gpu: int = Field(0, ge=0, le=16, description="GPUs per pod (resources.limits nvidia.com/gpu).")
    cpu: str = Field("1", description="CPU request per pod, e.g. '2' or '500m'.")
    memory: str = Field("2Gi", description="Memory request and limit per pod, e.g. '4Gi'.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations, e.g. for tainted GPU nodes."
    )
    pod_template: dict[str, Any] = Field(
        default_factory=dict,
        description="A partial pod template merged over the generated one (strategic fields such as "
        "securityContext, priorityClassName, volumes).",
    )
