"""What the state machines read and what they decide: plain data, no behaviour.

A runtime (the operator, the local runner) fills in the inputs from what it sees (the resource, its
child Jobs, the store) and carries out the :class:`Decision`; the functions of
:mod:`oraculum.control.reconcile` map one to the other. Keeping the data apart from the machines
lets the observers (:mod:`oraculum.control.observe`) and the driver (:mod:`oraculum.control.driver`)
depend on these types without depending on the decisions themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = [
    "LABELS_SUBMITTED_ANNOTATION",
    "DatasetObservation",
    "Decision",
    "Event",
    "ExperimentObservation",
    "IterationObservation",
    "ObjectRef",
    "ObservedJob",
    "labels_submitted_from_annotations",
]

#: Set by the API on an ActiveLearningExperiment once the oracle submits iteration K's labels.
LABELS_SUBMITTED_ANNOTATION = "oraculum.dev/labels-submitted"


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """The identity of the resource being reconciled."""

    kind: Literal["ActiveLearningExperiment", "PreprocessingJob"]
    name: str
    namespace: str | None = None
    uid: str = ""
    generation: int = 1
    annotations: Mapping[str, str] = field(default_factory=dict)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ObservedJob:
    """What a runtime sees of one child Job (parsed from a Kubernetes Job, or a local process)."""

    name: str
    active: int = 0
    ready: int | None = None
    succeeded: int = 0
    failed: int = 0
    completions: int = 1
    complete: bool = False
    failed_reason: str | None = None
    failed_message: str = ""
    suspended: bool = False
    created: datetime | None = None
    started: datetime | None = None
    pending_message: str = ""
    deleting: bool = False

    @classmethod
    def from_manifest(cls, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> "ObservedJob":
        """Parse a ``batch/v1`` Job (and, optionally, its pods for the scheduler's message)."""
        meta, spec, status = job.get("metadata", {}), job.get("spec", {}), job.get("status") or {}
        complete = failed = None
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                complete = condition
            elif condition.get("type") == "Failed":
                failed = condition
        pending = ""
        for pod in pods:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                    pending = f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".strip(": ")
        return cls(
            name=meta.get("name", ""),
            active=int(status.get("active") or 0),
            ready=None if status.get("ready") is None else int(status["ready"]),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            completions=int(spec.get("completions") or 1),
            complete=complete is not None,
            failed_reason=(failed.get("reason") or "Failed") if failed is not None else None,
            failed_message=(failed.get("message") or "") if failed is not None else "",
            suspended=bool(spec.get("suspend")),
            created=_parse_time(meta.get("creationTimestamp")),
            started=_parse_time(status.get("startTime")),
            pending_message=pending,
            deleting=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class IterationObservation:
    """What the store holds for one iteration of an experiment."""

    iteration: int
    finished: bool = False  # run.json: the iterate step is done
    batch_size: int = 0
    labelled: int = 0  # batch items with a current label (unsure counts: the oracle answered)
    evaluated: bool = False  # metrics.json computed over the complete batch
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    predicted_targets: int | None = None
    labels_total: int | None = None  # labels in the store after this iteration (from metrics.json)
    durations: Mapping[str, float] = field(default_factory=dict)

    @property
    def labels_complete(self) -> bool:
        return self.finished and self.labelled >= self.batch_size


@dataclass(frozen=True)
class ExperimentObservation:
    """The store's side of an experiment, for its current iteration."""

    current: IterationObservation
    dataset_ready: bool = True
    dataset_message: str = ""
    labels_total: int = 0  # all current labels so far
    labels_submitted: int | None = None  # the highest iteration the oracle submitted


@dataclass(frozen=True)
class DatasetObservation:
    """The store's side of a PreprocessingJob: its dataset's shards and index."""

    complete: bool = False
    shards_done: int = 0
    processed: int = 0
    rejected: int = 0


def labels_submitted_from_annotations(annotations: Mapping[str, str]) -> int | None:
    """The iteration in the labels-submitted annotation, or None (absent or not a number)."""
    value = (annotations or {}).get(LABELS_SUBMITTED_ANNOTATION)
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the resource (``oraculum run`` prints it)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """What to do: carry out in order create, delete, suspend/resume, then write the status."""

    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    suspend: dict[str, bool] = field(default_factory=dict)  # Job name -> spec.suspend
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def phase(self) -> str:
        return str(self.status.get("phase"))
