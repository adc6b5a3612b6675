"""The two custom resources' specs as pydantic models: the single source of truth.

``PreprocessingJob`` and ``ActiveLearningExperiment`` (group ``oraculum.dev``, version
``v1alpha1``). Field names are camelCase in manifests (Kubernetes convention) and snake_case in
Python. The CRDs' OpenAPI schemas are generated from these models (descriptions, defaults, enums,
bounds, required fields), so ``kubectl explain`` and ``oraculum run`` agree on what a valid
manifest is. Everything here is plain data: no Kubernetes client import.

- :mod:`~oraculum.manifests.common`: the API group and version, :class:`SpecModel` (the field
  conventions), :class:`ResourcesSpec` (pod compute, shared by both kinds), the name and
  quantity rules, and :func:`cel_rule`/:func:`cel_rules`, which give a model's validator its
  ``x-kubernetes-validations`` twin in the CRD (so the API server refuses what the models refuse);
- :mod:`~oraculum.manifests.preprocessing_job`: :class:`PreprocessingJobSpec` and its source and
  grid specs;
- :mod:`~oraculum.manifests.experiment`: :class:`ExperimentSpec` and its classes, model,
  acquisition, estimation, stopping and oracle specs;
- :mod:`~oraculum.manifests.status`: the status both kinds report (phases, conditions, child Jobs,
  the estimate and its history);
- :mod:`~oraculum.manifests.documents`: whole manifests, :func:`parse_manifest`,
  :func:`load_manifests` and :class:`ManifestError`.

Every public name is re-exported here, so ``from oraculum.manifests import ExperimentSpec`` is the
way the rest of oraculum (and the adapters above it) imports them.
"""

from oraculum.manifests.common import (
    API_VERSION,
    GROUP,
    NAME_MAX_LENGTH,
    QUANTITY_PATTERN,
    VERSION,
    ResourcesSpec,
    SpecModel,
    cel_rule,
    cel_rules,
)
from oraculum.manifests.documents import (
    KINDS,
    METADATA_RULES,
    ActiveLearningExperiment,
    Manifest,
    ManifestError,
    Metadata,
    PreprocessingJob,
    describe_validation_error,
    load_manifests,
    parse_manifest,
)
from oraculum.manifests.experiment import (
    COMPOSITION_SHARES,
    AcquisitionSpec,
    ClassSpec,
    EstimationSpec,
    ExperimentSpec,
    InitialLabelsSpec,
    ModelSpec,
    OracleSpec,
    PlateauSpec,
    StoppingSpec,
)
from oraculum.manifests.preprocessing_job import (
    FetchSpec,
    GridSpec,
    PreprocessingJobSpec,
    SourceSpec,
    SyntheticSourceSpec,
    UrlListSourceSpec,
    VOTableSourceSpec,
)
from oraculum.manifests.status import (
    BatchStatus,
    ChildJob,
    Condition,
    EstimateStatus,
    ExperimentPhase,
    ExperimentStatus,
    HistoryEntry,
    PreprocessingJobStatus,
    PreprocessingPhase,
    StatusModel,
)

__all__ = [
    "API_VERSION",
    "COMPOSITION_SHARES",
    "GROUP",
    "KINDS",
    "METADATA_RULES",
    "NAME_MAX_LENGTH",
    "QUANTITY_PATTERN",
    "VERSION",
    "AcquisitionSpec",
    "ActiveLearningExperiment",
    "BatchStatus",
    "ChildJob",
    "ClassSpec",
    "Condition",
    "EstimateStatus",
    "EstimationSpec",
    "ExperimentPhase",
    "ExperimentSpec",
    "ExperimentStatus",
    "FetchSpec",
    "GridSpec",
    "HistoryEntry",
    "InitialLabelsSpec",
    "Manifest",
    "ManifestError",
    "Metadata",
    "ModelSpec",
    "OracleSpec",
    "PlateauSpec",
    "PreprocessingJob",
    "PreprocessingJobSpec",
    "PreprocessingJobStatus",
    "PreprocessingPhase",
    "ResourcesSpec",
    "SourceSpec",
    "SpecModel",
    "StatusModel",
    "StoppingSpec",
    "SyntheticSourceSpec",
    "UrlListSourceSpec",
    "VOTableSourceSpec",
    "cel_rule",
    "cel_rules",
    "describe_validation_error",
    "load_manifests",
    "parse_manifest",
]
