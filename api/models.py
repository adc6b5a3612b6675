"""Request and response bodies of the API (pydantic): the OpenAPI schema at /docs comes from here.

Names in URLs and bodies are validated before anything touches the store: resource and dataset
names are DNS labels (so they can never be a path), iterations and spectrum indices are bounded
integers, comments and labels have length limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .uploads import MAX_CHUNK_BYTES, MAX_FILE_BYTES, MIN_CHUNK_BYTES, check_path, check_prefix, check_sha256

#: Kubernetes-style resource name (also a dataset name): never a path, never '.' or '..'.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
DATASET_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
JOB_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
MAX_ITERATION = 100_000
MAX_INDEX = 2**40


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(Out):
    detail: Any = Field(description="What was wrong and what to do.")


class Health(Out):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict, description="Each dependency: ok or why not.")


class WhoAmI(Out):
    name: str
    role: str


# --- custom resources -------------------------------------------------------------------------


class ResourceSummary(Out):
    kind: str
    name: str
    namespace: str | None = None
    phase: str = Field(description="status.phase (Pending until the controller looked at it).")
    iteration: int | None = Field(None, description="Current iteration (experiments).")
    message: str = ""
    created: str = ""
    suspended: bool = False


class JobProgress(Out):
    job: str
    step: str | None = None
    done: float | None = None
    total: float | None = None
    fraction: float | None = None
    message: str | None = None
    reporter: str = Field(description="Name of the worker token that reported it.")
    updated: str = Field(description="When it was reported (RFC 3339).")


class ResourceDetail(ResourceSummary):
    uid: str = ""
    generation: int = 1
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict, description="Phase, conditions, batch, history, jobs...")
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)
    progress: list[JobProgress] = Field(default_factory=list, description="Live progress reported by running Jobs.")
    backend: str = Field(description="kubernetes or local.")
    managed_by: str | None = Field(None, description="Local backend: which process runs its Jobs.")


class ManifestIn(BaseModel):
    """A manifest as JSON (YAML is accepted with Content-Type application/yaml)."""

    model_config = ConfigDict(extra="allow")
    apiVersion: str = Field(examples=["oraculum.dev/v1alpha1"])
    kind: str = Field(examples=["ActiveLearningExperiment"])
    metadata: dict[str, Any]
    spec: dict[str, Any]


# --- datasets and spectra -----------------------------------------------------------------------


class DatasetSummary(Out):
    name: str
    count: int
    rejected: int
    shards: int
    grid: dict[str, Any]
    source: str


class DatasetDetail(Out):
    name: str
    index: dict[str, Any] = Field(description="The dataset's index.json.")


class RejectedFile(Out):
    id: str | None = None
    key: str | None = None
    reason: str | None = None
    message: str | None = None


class RejectedPage(Out):
    dataset: str
    total: int
    offset: int
    items: list[RejectedFile]


class SpectrumMetaOut(Out):
    ra: float | None = None
    dec: float | None = None
    obsid: int | None = None
    snr: float | None = None
    mjd: float | None = None
    designation: str | None = None
    header_class: str | None = None
    subclass: str | None = None
    object_name: str | None = None
    source_key: str | None = None
    format: str | None = None


class SpectrumLinks(Out):
    archive: str | None = Field(None, description="The archive's page of the spectrum (by obsid).")
    simbad: str | None = Field(None, description="SIMBAD objects around the coordinates.")


class SpectrumInfo(Out):
    dataset: str
    index: int
    id: str
    meta: SpectrumMetaOut
    links: SpectrumLinks


class FluxOut(Out):
    dataset: str
    index: int
    id: str
    wavelength: list[float] = Field(description="Grid wavelengths (Å).")
    flux: list[float | None] = Field(description="Preprocessed flux on the grid.")
    medium: str
    normalisation: str


class RawSpectrumOut(Out):
    dataset: str
    index: int
    id: str
    source_key: str
    format: str
    medium: str
    points: int = Field(description="Points in the file.")
    decimated: bool = Field(description="Whether min/max decimation reduced the points for display.")
    wavelength: list[float | None]
    flux: list[float | None]


# --- batches, labels ----------------------------------------------------------------------------


class ClassOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    hotkey: str | None = None
    target: bool = False


class SetProgress(Out):
    labelled: int
    total: int


class ProgressOut(Out):
    experiment: str
    iteration: int
    oracle: SetProgress
    estimation: SetProgress
    labelled: int
    total: int
    complete: bool
    submitted: bool = Field(description="Whether the labels of this iteration were submitted.")
    text: str = Field(description='e.g. "37 / 100 oracle, 12 / 30 estimation"')


class CurrentLabelOut(Out):
    label: str
    who: str | None = None
    when: str | None = None
    comment: str | None = None
    bulk: bool = False


class BatchItemOut(Out):
    index: int
    id: str
    set: Literal["oracle", "estimation"]
    reason: str | None = None
    score: float | None = None
    predicted: str | None = None
    probabilities: dict[str, float] | None = None
    prediction_hidden: bool = Field(False, description="Blind estimation item: prediction shown only once labelled.")
    meta: dict[str, Any] = Field(default_factory=dict)
    label: CurrentLabelOut | None = None
    lock: str | None = Field(None, description="Who is labelling this item right now, if anyone.")


class BatchOut(Out):
    experiment: str
    iteration: int
    dataset: str
    strategy: str | None = None
    cold_start: bool = False
    blind: bool = True
    classes: list[ClassOut]
    labels: list[str] = Field(description="Labels the oracle may assign: the class names and 'unsure'.")
    size: int
    oracle_size: int
    estimation_size: int
    created: str | None = None
    items: list[BatchItemOut]
    progress: ProgressOut


class MapPoint(Out):
    index: int
    id: str
    set: str
    coordinates: dict[str, list[float | None]] = Field(description="method -> [x, y]")
    label: str | None = None


class MapOut(Out):
    experiment: str
    iteration: int
    embedding: str | None = None
    methods: list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    points: list[MapPoint]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=40, description="A class name of the experiment, or 'unsure'.")
    comment: str | None = Field(None, max_length=2000)


class BulkLabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    indices: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=10_000,
                                                      description="Global indices of batch items.")
    label: str | None = Field(None, min_length=1, max_length=40, description="Class name or 'unsure'; null clears.")
    comment: str | None = Field(None, max_length=2000)
    selection: Literal["lasso", "box", "list"] = Field("lasso", description="How the items were selected.")


class LabelAck(Out):
    experiment: str
    iteration: int
    indices: list[int]
    label: str | None
    action: Literal["set", "clear"]
    bulk: bool
    who: str
    when: str
    events: list[str] = Field(description="Keys of the label events written to the store.")
    progress: ProgressOut | None = None


class LabelsOut(Out):
    experiment: str
    iteration: int
    labels: dict[int, CurrentLabelOut]


class LabelEventOut(Out):
    key: str
    who: str
    when: str
    iteration: int
    action: str
    set: str
    bulk: bool
    comment: str | None = None
    items: list[dict[str, Any]]


class LabelEventsPage(Out):
    experiment: str
    iteration: int
    total: int
    offset: int
    events: list[LabelEventOut]


class LockOut(Out):
    experiment: str
    iteration: int
    index: int
    holder: str
    seconds_left: float | None = None


class LocksOut(Out):
    experiment: str
    iteration: int
    locks: list[LockOut]


class SubmitOut(Out):
    experiment: str
    iteration: int
    labelled: int
    size: int
    signal: str


# --- results ------------------------------------------------------------------------------------


class IterationSummary(Out):
    iteration: int
    size: int = 0
    labelled: int | None = None
    evaluated: bool = False
    submitted: bool = False
    estimate: float | None = None
    low: float | None = None
    high: float | None = None


class IterationsOut(Out):
    experiment: str
    current: int
    iterations: list[IterationSummary]


class MetricsOut(Out):
    experiment: str
    iteration: int
    metrics: dict[str, Any]


class CurvePoint(Out):
    iteration: int
    labels_total: int | None = None
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    predicted_targets: int | None = None
    estimated_targets: float | None = None
    estimated_targets_low: float | None = None
    estimated_targets_high: float | None = None


class CurvesOut(Out):
    experiment: str
    points: list[CurvePoint]


# --- progress -------------------------------------------------------------------------------------


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str = Field(min_length=1, max_length=253, pattern=JOB_PATTERN, description="The reporting Job's name.")
    step: str | None = Field(None, max_length=100, description="e.g. train, score, select.")
    done: float | None = Field(None, ge=0, le=1e15)
    total: float | None = Field(None, ge=0, le=1e15)
    message: str | None = Field(None, max_length=500)


class ProgressList(Out):
    kind: str
    name: str
    jobs: list[JobProgress]


# --- uploads (see api/uploads.py) -----------------------------------------------------------------


class UploadIn(BaseModel):
    """Declare a file to upload into ``archive/<prefix>/<path>`` of the store."""

    model_config = ConfigDict(extra="forbid")
    prefix: str = Field(min_length=1, max_length=256, examples=["lamost-dr2"],
                        description="Archive prefix: the file goes to archive/<prefix>/<path>.")
    path: str = Field(min_length=1, max_length=1024, examples=["B5591903/spec-55919-B5591903_sp01-001.fits"],
                      description="Path relative to the prefix: letters, digits and . _ + - separated by '/'.")
    size: int = Field(ge=0, le=MAX_FILE_BYTES, description="Size of the file in bytes.")
    sha256: str = Field(min_length=64, max_length=64, description="SHA-256 of the whole file (64 lowercase hex digits).")
    chunk_size: int | None = Field(None, ge=MIN_CHUNK_BYTES, le=MAX_CHUNK_BYTES,
                                   description="Chunk size wanted (bytes; default and maximum: the body limit). Fixed "
                                               "when the upload starts: a resumed upload keeps its own.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        return check_sha256(value)


class UploadOut(Out):
    id: str = Field(description="The upload's id: the same declaration (prefix, path, size, sha256) gives the same id.")
    status: Literal["uploading", "complete", "exists", "duplicate"] = Field(
        description="uploading: send chunks from `received`; complete: stored; exists: this path already holds "
                    "this content; duplicate: the prefix already holds this content at `duplicate_of`.")
    prefix: str
    path: str
    key: str = Field(description="The object's key in the store.")
    size: int
    sha256: str
    received: int = Field(description="Bytes the server holds: the offset of the next chunk.")
    fraction: float = Field(description="received / size (1 for an empty file).")
    duplicate_of: str | None = Field(None, description="Path under the prefix that holds the same content.")
    chunk_size: int = Field(description="Bytes per chunk of this upload: every chunk but the last has exactly this size.")
    source: str = Field(description="What to give `oraculum preprocess` to read the files of this prefix.")
    who: str = Field(description="Who started the upload.")
    created: str
    updated: str


class UploadList(Out):
    total: int
    uploads: list[UploadOut]
