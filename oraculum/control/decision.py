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
    "JobOutcome",
    "ObjectRef",
    "ObservedJob",
    "Refusal",
    "SPEC_HASH_ANNOTATION",
    "controller_uid",
    "labels_submitted_from_annotations",
    "parse_time",
]

#: Set by the API on an ActiveLearningExperiment once the oracle submits iteration K's labels.
LABELS_SUBMITTED_ANNOTATION = "oraculum.dev/labels-submitted"
#: On every child Job: the hash of the spec it was built from (:func:`oraculum.control.jobs.spec_digest`),
#: so a later look can tell whether the running Job still does what the spec asks.
SPEC_HASH_ANNOTATION = "oraculum.dev/spec-hash"


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


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time of the API (``...Z``) as an aware datetime; None when absent or unreadable."""
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
    #: uid of the Job's controlling owner: "" when it has none (orphaned), None when the runtime does not
    #: say (then the Job is taken as the resource's own). A Job owned by another uid is a leftover of an
    #: earlier resource of the same name, never this resource's (matching by label alone adopted it).
    owner_uid: str | None = None
    spec_hash: str = ""  # SPEC_HASH_ANNOTATION: the spec the Job was built from ("" if unknown)

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
            created=parse_time(meta.get("creationTimestamp")),
            started=parse_time(status.get("startTime")),
            pending_message=pending,
            deleting=bool(meta.get("deletionTimestamp")),
            owner_uid=controller_uid(meta.get("ownerReferences") or []),
            spec_hash=str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION) or ""),
        )

    def owned_by(self, uid: str) -> bool:
        """Whether this Job belongs to the resource with ``uid`` (unknown owners and uids count as yes)."""
        return self.owner_uid is None or not uid or self.owner_uid == uid


def controller_uid(owners: Sequence[Mapping[str, Any]]) -> str:
    """The uid of the controlling owner reference ("" if none): what ties a child to one resource,
    where its labels only name the resource (and a resource made again with that name is another)."""
    for owner in owners:
        if owner.get("controller"):
            return str(owner.get("uid") or "")
    return str(owners[0].get("uid") or "") if owners else ""


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

    dataset: str = ""  # the dataset looked at ("" = the spec's)
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


@dataclass(frozen=True)
class Refusal:
    """The runtime's world refused to create a child (on a cluster: the API server's 400, 403 or 422,
    e.g. an invalid Job, a quota, a namespace being deleted): asking again at once cannot help."""

    kind: str
    name: str
    message: str


@dataclass(frozen=True)
class JobOutcome:
    """A child Job's step that ended in this decision (counted by the operator's metrics)."""

    name: str
    purpose: str
    outcome: Literal["succeeded", "failed", "vanished", "rejected"]


@dataclass
class Decision:
    """What to do: carry out in order create, delete, suspend/resume, then write the status.

    ``requeue_after``: look again within this many seconds (sooner than the runtime's periodic
    look). ``backoff``: look again no sooner than this, unless the resource itself changes (a
    refused Job, an unreachable store: asking again at once only adds load).
    """

    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    suspend: dict[str, bool] = field(default_factory=dict)  # Job name -> spec.suspend
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    backoff: float | None = None
    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def phase(self) -> str:
        return str(self.status.get("phase"))
