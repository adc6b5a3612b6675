"""The two custom resources' specs as pydantic models: the single source of truth.

``PreprocessingJob`` and ``ActiveLearningExperiment`` (group ``oraculum.dev``, version
``v1alpha1``). Field names are camelCase in manifests (Kubernetes convention) and snake_case in
Python. The CRDs' OpenAPI schemas are generated from these models (descriptions, defaults, enums,
bounds, required fields), so ``kubectl explain`` and ``oraculum run`` agree on what a valid
manifest is. Everything here is plain data: no Kubernetes client import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from oraculum.spectra.preprocessing import Normalisation, PreprocessingParameters, WavelengthGrid

GROUP = "oraculum.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_NAME = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"


class SpecModel(BaseModel):
    """camelCase in manifests, snake_case in Python; unknown fields are errors, not ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ManifestError(ValueError):
    """A manifest is invalid; the message names the file, the field and what to do."""


# --- PreprocessingJob -------------------------------------------------------------------------


class SyntheticSourceSpec(SpecModel):
    """Synthetic LAMOST-format spectra with known labels (oraculum.spectra.synth), made on first use.

    For demos, end-to-end tests and backtests: a pool that needs no archive. The files are
    written once to ``archive/synthetic-<count>-s<seed>/`` in the store, with ``labels.csv``
    beside them (the simulated oracle's answers); figures from them come from synthetic data.
    """

    count: int = Field(ge=10, le=10_000_000, description="Number of synthetic spectrum files.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed: the same seed gives the same files.")


class _DocumentSpec(SpecModel):
    """A document oraculum reads first (a VOTable, a URL list): over HTTP, or from the store."""

    #: The field name in SourceSpec, for messages.
    field_name: ClassVar[str] = "document"

    url: str | None = Field(
        None, pattern=r"^https?://", min_length=8,
        description="Where to GET it, e.g. an SSAP query URL (...?REQUEST=queryData&POS=...) for a VOTable.",
    )
    key: str | None = Field(
        None, min_length=1, pattern=r"^[^/]",
        description="Object-store key of an uploaded copy (e.g. a VOTable saved from TOPCAT).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "_DocumentSpec":
        if (self.url is None) == (self.key is None):
            raise ValueError(f"give exactly one of {self.field_name}.url (fetched over HTTP) and "
                             f"{self.field_name}.key (in the store)")
        return self

    def location(self) -> str:
        """The LOCATION of a ``votable:``/``urls:`` source string."""
        return self.url if self.url is not None else f"store:{self.key}"


def _url_or_key_rule(name: str) -> ConfigDict:
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.url) != has(self.key)", "message": f"give exactly one of {name}.url and {name}.key"}]})


class VOTableSourceSpec(_DocumentSpec):
    """A VOTable whose rows point at spectra: an SSAP/TAP query URL, or a table in the store.

    The access-reference column is found by UCD meta.ref.url, utype ssa:Access.Reference or name
    access_url/accref. When the table declares a DataLink service, each row is resolved through it.
    """

    model_config = _url_or_key_rule("votable")
    field_name: ClassVar[str] = "votable"

    datalink: Literal["auto", "this", "cutout", "none"] = Field(
        "auto",
        description="auto: through the table's DataLink service when it declares one, taking a SODA cutout "
        "around the grid when offered, else #this; this: always the #this product; cutout: require a SODA "
        "cutout; none: ignore DataLink, download the access references.",
    )
    cutout_margin: float = Field(
        50.0, ge=0, le=5000,
        description="Å added on both sides of the grid for SODA cutouts (covers air/vacuum and blur wings).",
    )


class UrlListSourceSpec(_DocumentSpec):
    """A text file with one spectrum URL per line (# starts a comment)."""

    model_config = _url_or_key_rule("urls")
    field_name: ClassVar[str] = "urls"


class FetchSpec(SpecModel):
    """How files are downloaded for votable, urls and httpIndex sources (per pod)."""

    concurrency: int = Field(8, ge=1, le=256, description="Downloads at once per pod.")
    retries: int = Field(
        4, ge=0, le=20,
        description="Extra attempts after a 5xx answer, timeout or dropped connection (exponential backoff); "
        "other 4xx answers are final.",
    )
    timeout_seconds: float = Field(60.0, ge=1, le=3600, description="Connect/read timeout per request, seconds.")


_SOURCES = ("url", "synthetic", "votable", "urls", "httpIndex")


class SourceSpec(SpecModel):
    """Where the raw files are: an archive folder or bucket (url), synthetic spectra, or files
    fetched over HTTP first (votable, urls, httpIndex) into archive/vo/ in the store."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in _SOURCES) + " == 1",
                 "message": "give exactly one of url, synthetic, votable, urls and httpIndex"}
            ]
        }
    )

    url: str | None = Field(
        None,
        description="A folder, or s3://bucket/prefix on the cluster's object store (searched recursively).",
        min_length=1,
    )
    synthetic: SyntheticSourceSpec | None = Field(
        None, description="Generate synthetic LAMOST-format spectra instead of reading an archive."
    )
    votable: VOTableSourceSpec | None = Field(
        None, description="Download the spectra a VOTable points at (SSAP/TAP answer, TOPCAT table, DataLink)."
    )
    urls: UrlListSourceSpec | None = Field(None, description="Download the spectra of a URL list.")
    http_index: str | None = Field(
        None, pattern=r"^https?://", min_length=8,
        description="Download every file matching patterns below this HTML index page, recursively.",
    )
    fetch: FetchSpec | None = Field(
        None, description="Download concurrency, retries and timeout (votable, urls, httpIndex only)."
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*.fits", "*.fit", "*.fts", "*.fits.gz", "*.fit.gz", "*.fts.gz"],
        description="File name patterns to include (shell globs on the file name; for httpIndex, the links followed).",
    )
    format: Literal["auto"] = Field(
        "auto", description="File format; detected per file (LAMOST LRS/MRS, Ondřejov CCD700, generic)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "SourceSpec":
        given = [self.url, self.synthetic, self.votable, self.urls, self.http_index]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give exactly one of source.url (an archive), source.synthetic (generated spectra), "
                "source.votable, source.urls or source.httpIndex (fetched over HTTP first)"
            )
        if self.fetch is not None and (self.url is not None or self.synthetic is not None):
            raise ValueError("source.fetch applies to votable, urls and httpIndex sources only")
        return self

    def location(self, grid: "GridSpec | None" = None) -> str:
        """The SOURCE argument of ``oraculum preprocess``: the url, ``synthetic:COUNT?seed=S``, or a
        ``votable:``/``urls:``/``index:`` string (see :mod:`oraculum.vo.sources`) that carries the
        fetch settings and, for SODA cutouts, the band of ``grid`` plus the margin."""
        if self.synthetic is not None:
            return f"synthetic:{self.synthetic.count}?seed={self.synthetic.seed}"
        if self.url is not None:
            return self.url
        from oraculum.vo.spec import fetch_spec_string

        fetch = self.fetch or FetchSpec()
        if self.votable is not None:
            return fetch_spec_string(
                "votable", self.votable.location(), fetch.concurrency, fetch.retries, fetch.timeout_seconds,
                datalink=self.votable.datalink, grid=grid, margin_A=self.votable.cutout_margin,
            )
        if self.urls is not None:
            return fetch_spec_string("urls", self.urls.location(), fetch.concurrency, fetch.retries, fetch.timeout_seconds)
        assert self.http_index is not None
        return fetch_spec_string("index", self.http_index, fetch.concurrency, fetch.retries, fetch.timeout_seconds,
                                 patterns=tuple(self.patterns))


class GridSpec(SpecModel):
    """The common wavelength grid (defaults: Škoda et al. 2020)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self.end > self.start", "message": "grid end must be greater than start"}]}
    )

    start: float = Field(6519.0, gt=0, description="First grid wavelength in Å.")
    end: float = Field(6732.0, gt=0, description="Last grid wavelength in Å.")
    points: int = Field(140, ge=2, le=100_000, description="Number of grid points.")
    spacing: Literal["linear", "log"] = Field("linear", description="Equal steps in wavelength or in log wavelength.")
    medium: Literal["vacuum", "air"] = Field("vacuum", description="Grid wavelengths in vacuum or air.")

    @model_validator(mode="after")
    def _start_before_end(self) -> "GridSpec":
        if self.end <= self.start:
            raise ValueError(f"grid end ({self.end} Å) must be greater than start ({self.start} Å)")
        return self


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


class PreprocessingJobSpec(SpecModel):
    """Turn raw archive files into a sharded, gridded dataset."""

    source: SourceSpec = Field(description="Where the raw files are.")
    grid: GridSpec = Field(default_factory=GridSpec, description="Wavelength grid to resample onto.")
    blur_sigma_px: float | None = Field(
        None, ge=0, le=1000,
        description="Gaussian blur sigma in native pixels before resampling (7 matches Ondřejov CCD700 to LAMOST).",
    )
    normalisation: Normalisation = Field(
        "minmax", description="minmax to [-1, 1] (published method), continuum, or none."
    )
    continuum_degree: int = Field(2, ge=0, le=10, description="Continuum polynomial degree.")
    dataset: str = Field(pattern=_NAME, description="Name of the dataset to write.")
    shards: int = Field(1, ge=1, le=100_000, description="Shards: pods of the Indexed Job, and HDF5 parts of the dataset.")
    parallelism: int = Field(1, ge=1, le=10_000, description="Pods running at once.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute per pod.")
    suspend: bool = Field(False, description="Pause: running pods stop, finished shards stay; clear to resume.")

    def parameters(self) -> PreprocessingParameters:
        """The core's preprocessing parameters for this spec."""
        return PreprocessingParameters(
            grid=WavelengthGrid(**self.grid.model_dump()),
            blur_sigma_px=self.blur_sigma_px,
            normalisation=self.normalisation,
            continuum_degree=self.continuum_degree,
        )


# --- ActiveLearningExperiment ------------------------------------------------------------------


class ClassSpec(SpecModel):
    """One class the oracle can assign."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$", description="Class name.")
    hotkey: str | None = Field(
        None, pattern=r"^[0-9a-tv-y]$",
        description="Dashboard key for this class (a digit or letter; u and z are reserved for unsure and undo).",
    )
    target: bool = Field(False, description="Whether this is a class the campaign is looking for (e.g. emission).")


class InitialLabelsSpec(SpecModel):
    """A labelled set to start from, instead of random labels in iteration 0."""

    labels: str = Field(
        min_length=1,
        description="CSV with columns id,label (label = class name) in the object store (key) or a local path.",
    )
    dataset: str | None = Field(
        None, pattern=_NAME,
        description="Dataset holding the labelled spectra, when not the pool (e.g. a high-resolution archive).",
    )


class ModelSpec(SpecModel):
    """The network and how it is trained."""

    preset: Literal["podsztavek2020", "tiny"] = Field(
        "podsztavek2020",
        description="podsztavek2020: the published 1-D CNN (Conv 64-64/128-128/256-256, dense 512-512, dropout 0.5); "
        "tiny: a narrow version for demos and tests.",
    )
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum training epochs (early stopping may end sooner).")
    batch_size: int = Field(64, ge=1, le=65_536, description="Training mini-batch size.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    patience: int = Field(5, ge=1, le=1000, description="Early-stopping patience in epochs, on validation loss.")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="Weight classes by inverse frequency (handles rare targets) or not."
    )
    seed: int = Field(0, ge=0, description="Seed for weights, data order, sampling: same seed, same iteration.")


class AcquisitionSpec(SpecModel):
    """How the oracle batch is chosen."""

    strategy: Literal["entropy", "margin", "least-confidence", "bald", "random"] = Field(
        "entropy", description="Uncertainty measure (entropy is the published method; bald uses MC dropout)."
    )
    batch_size: int = Field(100, ge=1, le=100_000, description="Spectra the oracle labels per iteration.")
    composition: dict[Literal["uncertainty", "diversity", "random"], float] = Field(
        default_factory=lambda: {"uncertainty": 1.0},
        description="Shares of the batch by reason, summing to 1, e.g. {uncertainty: 0.8, random: 0.2}; "
        "diversity = k-means over the network's embedding of the top candidates.",
    )
    mc_samples: int = Field(20, ge=2, le=1000, description="Monte-Carlo dropout passes (strategy bald).")
    initial_batch_size: int | None = Field(
        None, ge=1, le=100_000,
        description="Random spectra labelled in iteration 0 when there is no initial labelled set (default batchSize).",
    )

    @field_validator("composition")
    @classmethod
    def _shares_sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if any(share < 0 for share in value.values()):
            raise ValueError("composition shares must not be negative")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"composition shares must sum to 1, they sum to {sum(value.values()):g}")
        return value


class EstimationSpec(SpecModel):
    """The performance-estimation sample labelled alongside the oracle batch."""

    size: int = Field(30, ge=0, le=100_000, description="Random spectra predicted as targets to label (estimates precision).")
    stratified_size: int = Field(
        0, ge=0, le=100_000, description="Extra stratified sample over all predicted classes (accuracy, recall)."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    method: Literal["wilson", "clopper-pearson"] = Field("wilson", description="Binomial interval method.")
    blind: bool = Field(True, description="Hide the network's prediction from the oracle for estimation items.")
    use_for_training: bool = Field(
        False, description="Also train on estimation labels (biases later estimates; off by default)."
    )


class PlateauSpec(SpecModel):
    """Stop when the estimate stops improving."""

    iterations: int = Field(3, ge=1, le=1000, description="Consecutive iterations without improvement.")
    tolerance: float = Field(0.01, ge=0, le=1, description="Smallest change of the estimate that counts as improvement.")


class StoppingSpec(SpecModel):
    """When the loop ends (whichever comes first)."""

    max_iterations: int = Field(10, ge=1, le=10_000, description="Iterations to run at most.")
    label_budget: int | None = Field(None, ge=1, description="Total labels at most (oracle plus estimation).")
    plateau: PlateauSpec | None = Field(None, description="Stop when the precision estimate plateaus.")
    target_precision: float | None = Field(
        None, gt=0, le=1, description="Stop when the lower bound of the precision interval reaches this."
    )


class OracleSpec(SpecModel):
    """Who answers: a person in the dashboard, or a label file (backtests, tests)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.type != 'simulated' || has(self.labels)",
                 "message": "oracle.labels is required when oracle.type is simulated"}
            ]
        }
    )

    type: Literal["human", "simulated"] = Field("human", description="human: labels come from the dashboard/API.")
    labels: str | None = Field(
        None, description="For simulated: CSV with true labels (columns id,label or filename,label), store key or path."
    )

    @model_validator(mode="after")
    def _simulated_needs_labels(self) -> "OracleSpec":
        if self.type == "simulated" and not self.labels:
            raise ValueError("oracle.labels is required when oracle.type is simulated")
        return self


class ExperimentSpec(SpecModel):
    """One active-learning campaign over a pool dataset."""

    dataset: str = Field(pattern=_NAME, description="The pool: a dataset written by a PreprocessingJob.")
    classes: list[ClassSpec] = Field(min_length=2, max_length=50, description="Classes the oracle assigns; at least one target.")
    initial: InitialLabelsSpec | None = Field(None, description="Optional labelled set to start from.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Network and training.")
    acquisition: AcquisitionSpec = Field(default_factory=AcquisitionSpec, description="Oracle batch selection.")
    estimation: EstimationSpec = Field(default_factory=EstimationSpec, description="Performance estimation sample.")
    stopping: StoppingSpec = Field(default_factory=StoppingSpec, description="Stopping criteria.")
    oracle: OracleSpec = Field(default_factory=OracleSpec, description="Who labels.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute for iteration Jobs.")
    suspend: bool = Field(False, description="Pause the loop (no new Jobs) without losing anything.")

    @model_validator(mode="after")
    def _classes_consistent(self) -> "ExperimentSpec":
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        keys = [c.hotkey for c in self.classes if c.hotkey]
        if len(set(keys)) != len(keys):
            raise ValueError(f"class hotkeys must be unique, got {keys}")
        if not any(c.target for c in self.classes):
            raise ValueError("at least one class must have target: true (what the campaign looks for)")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def target_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.classes) if c.target]


# --- Status (written by the operator and by ``oraculum run``) ----------------------------------


class StatusModel(BaseModel):
    """camelCase like the specs, but tolerant: a status written by a newer operator still parses."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


ExperimentPhase = Literal["Pending", "Training", "AwaitingLabels", "Succeeded", "Failed", "Suspended"]
PreprocessingPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class Condition(StatusModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Kind of condition, e.g. Progressing, Succeeded, Failed, Schedulable, SpecValid.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition, for machines.")
    message: str = Field("", description="What happened and what to do, for people.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="metadata.generation the condition was set from.")


class ChildJob(StatusModel):
    """A Kubernetes Job the resource started (named deterministically, so never duplicated)."""

    name: str = Field(description="Job name.")
    purpose: Literal["iterate", "answer", "evaluate", "preprocess"] = Field(
        description="iterate: train and choose a batch; answer: the simulated oracle labels it; evaluate: "
        "estimate performance from the labels; preprocess: the Indexed Job of a PreprocessingJob."
    )
    iteration: int | None = Field(None, description="Iteration the Job belongs to (experiments only).")
    state: Literal["Created", "Pending", "Running", "Succeeded", "Failed", "Suspended"] = Field(
        description="Created (asked for, not seen yet), Pending (waiting for a node), Running, Succeeded, Failed "
        "or Suspended."
    )
    failed_pods: int = Field(0, description="Pods of the Job that failed so far (retried up to backoffLimit).")


class BatchStatus(StatusModel):
    """The current oracle batch (oracle items plus estimation items)."""

    size: int = Field(0, description="Spectra to label in this iteration.")
    labelled: int = Field(0, description="Spectra of the batch labelled so far (any label, unsure included).")


class EstimateStatus(StatusModel):
    """The latest precision estimate of the predicted targets."""

    iteration: int = Field(description="Iteration the estimate belongs to.")
    value: float | None = Field(None, description="Estimated precision of the predicted targets.")
    low: float | None = Field(None, description="Lower bound of the confidence interval.")
    high: float | None = Field(None, description="Upper bound of the confidence interval.")
    summary: str = Field("", description="The estimate and interval as text (the Estimate column).")


class HistoryEntry(StatusModel):
    """What one finished iteration achieved."""

    iteration: int = Field(description="Iteration number (0 = the first).")
    labels: int = Field(0, description="Labels in the store after this iteration (oracle plus estimation).")
    estimate: float | None = Field(None, description="Estimated precision of the predicted targets.")
    low: float | None = Field(None, description="Lower bound of its confidence interval.")
    high: float | None = Field(None, description="Upper bound of its confidence interval.")
    predicted_targets: int | None = Field(None, description="Spectra the network predicts as targets.")
    durations: dict[str, float] = Field(default_factory=dict, description="Seconds per step of the iteration Job.")


class ExperimentStatus(StatusModel):
    """Where an ActiveLearningExperiment is; written only by its controller."""

    phase: ExperimentPhase = Field("Pending", description="Pending, Training, AwaitingLabels, Succeeded, Failed or Suspended.")
    iteration: int = Field(0, description="Current iteration (0 = the first).")
    observed_generation: int | None = Field(None, description="metadata.generation this status was computed from.")
    message: str = Field("", description="One line about what happens now.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    batch: BatchStatus | None = Field(None, description="The current batch, once the iteration chose it.")
    labels: int = Field(0, description="Labels in the store so far (oracle plus estimation).")
    estimate: EstimateStatus | None = Field(None, description="The latest estimate.")
    history: list[HistoryEntry] = Field(default_factory=list, description="One entry per evaluated iteration.")
    jobs: list[ChildJob] = Field(default_factory=list, description="Child Jobs of the current iteration.")


class PreprocessingJobStatus(StatusModel):
    """Where a PreprocessingJob is; written only by its controller."""

    phase: PreprocessingPhase = Field("Pending", description="Pending, Running, Succeeded, Failed or Suspended.")
    observed_generation: int | None = Field(None, description="metadata.generation this status was computed from.")
    message: str = Field("", description="One line about what happens now.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    shards: int = Field(0, description="Shards (pods of the Indexed Job) in total.")
    shards_done: int = Field(0, description="Shards written to the store.")
    processed: int = Field(0, description="Spectra stored in the dataset so far.")
    rejected: int = Field(0, description="Files rejected so far (see the dataset's rejected.jsonl).")
    dataset: str = Field("", description="The dataset being written.")
    jobs: list[ChildJob] = Field(default_factory=list, description="The Indexed Job.")


class Metadata(BaseModel):
    """The part of Kubernetes object metadata that oraculum reads."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=_NAME)
    namespace: str | None = None


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
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{path}: not valid YAML: {error}") from None
    if not documents:
        raise ManifestError(f"{path}: no manifest in the file")
    return [parse_manifest(doc, f"{path} (document {i + 1})" if len(documents) > 1 else str(path)) for i, doc in enumerate(documents)]
