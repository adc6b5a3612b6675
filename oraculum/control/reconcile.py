"""The state machines of both custom resources, as pure functions.

``(spec, status, observed child Jobs, what the store holds, now) -> Decision``: which objects to
create, which Jobs to delete or (un)suspend, the whole new status, the Kubernetes Events to post,
and when to look again. Nothing here talks to Kubernetes, the store or the clock: the kopf
handlers in ``operator/`` and the local runner (:mod:`oraculum.control.runner`) gather the inputs, call
these functions and carry the decision out. So both runtimes follow one state machine, and every
transition is covered by table-driven tests with no cluster.

**ActiveLearningExperiment.** One iteration ``k`` is three steps, each a Job with a
deterministic name: ``iterate`` (train, score the pool, choose the batch; phase Training), then
the oracle labels the batch (phase AwaitingLabels: a person in the dashboard, or the ``answer``
Job of a simulated oracle), then ``evaluate`` (estimate precision from the estimation sample's
labels; phase Training). The stopping criteria (:func:`stopping_reason`) then end the loop
(Succeeded) or start iteration ``k + 1``. A step is *done* when its results are in the store
(``run.json``; every batch item labelled; ``metrics.json`` over the complete batch), not when a Job
says so: a Job deleted by its TTL after finishing is not work lost, a Job deleted before finishing
is *vanished* and is recreated (with a Warning event), and a Job that succeeded without writing
its results is a failure with a message saying so.

A person's batch advances only when both hold: the API has signalled "labels submitted" for the
iteration (an annotation on the resource, or a signal object in the store for ``oraculum run``)
*and* the store holds a label for every item of the batch. A signal for an incomplete batch is
reported (condition and event), never acted on.

**PreprocessingJob.** One Indexed Job; done when the dataset's ``index.json`` exists (the last
shard writes it); status counts shards, processed and rejected spectra from the shard manifests.

**Both.** An invalid spec gives Failed with reason InvalidSpec and the validation message; a failed
Job gives Failed with the Job's own reason; Failed stays until the spec changes (a new
``metadata.generation``), when the failed Job is deleted and the work retried. ``spec.suspend``
suspends running Jobs (Kubernetes' own Job suspension: pods stop, finished shards and iterations
stay in the store) and starts no new ones; clearing it resumes. A Job whose pods stay unscheduled
longer than the configured timeout is reported in a ``Schedulable`` condition with the scheduler's
message. Events are posted on transitions only (computed by comparing old and new status), so a
restarted operator posts nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import ValidationError

from oraculum.control.jobs import (
    JobConfig,
    experiment_job,
    experiment_job_name,
    manifest_configmap,
    preprocess_job,
    preprocess_job_name,
)
from oraculum.manifests import (
    BatchStatus,
    ChildJob,
    Condition,
    EstimateStatus,
    ExperimentSpec,
    ExperimentStatus,
    HistoryEntry,
    PreprocessingJobSpec,
    PreprocessingJobStatus,
    StoppingSpec,
    describe_validation_error,
)

__all__ = [
    "LABELS_SUBMITTED_ANNOTATION",
    "DatasetObservation",
    "Decision",
    "Event",
    "ExperimentObservation",
    "IterationObservation",
    "ObjectRef",
    "ObservedJob",
    "StopReason",
    "labels_submitted_from_annotations",
    "next_batch_labels",
    "reconcile_experiment",
    "reconcile_preprocessing",
    "stopping_reason",
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


@dataclass(frozen=True)
class StopReason:
    """Why the loop stops: a CamelCase reason and a sentence."""

    reason: str
    message: str


# --------------------------------------------------------------------------------------------
# Stopping criteria
# --------------------------------------------------------------------------------------------


def next_batch_labels(spec: ExperimentSpec) -> int:
    """Labels the next iteration asks for at most (oracle batch plus estimation samples)."""
    return spec.acquisition.batch_size + spec.estimation.size + spec.estimation.stratified_size


def stopping_reason(
    stopping: StoppingSpec, history: Sequence[HistoryEntry], labels_total: int, next_batch: int
) -> StopReason | None:
    """Whether the loop should stop after the last evaluated iteration in ``history``.

    Criteria, whichever holds first in this order (all that hold are named in the message):
    TargetReached (lower bound of the precision interval at least ``targetPrecision``), Plateau
    (no estimate in the last ``plateau.iterations`` iterations beat the best before them by more
    than ``plateau.tolerance``), LabelBudget (the next batch would exceed ``labelBudget``),
    MaxIterations (``maxIterations`` iterations ran).
    """
    found: list[StopReason] = []
    estimated = [entry for entry in history if entry.estimate is not None]
    if stopping.target_precision is not None and estimated:
        last = estimated[-1]
        if last.low is not None and last.low >= stopping.target_precision:
            found.append(StopReason(
                "TargetReached",
                f"precision lower bound {last.low:.3f} at iteration {last.iteration} reached the target "
                f"{stopping.target_precision:g}",
            ))
    if stopping.plateau is not None:
        window, tolerance = stopping.plateau.iterations, stopping.plateau.tolerance
        values = [float(entry.estimate) for entry in estimated]  # type: ignore[arg-type]
        if len(values) > window:
            best_before = max(values[:-window])
            recent = max(values[-window:])
            if recent < best_before + tolerance or math.isclose(recent, best_before + tolerance):
                found.append(StopReason(
                    "Plateau",
                    f"the precision estimate has not improved by more than {tolerance:g} in {window} "
                    f"iteration(s) (best before {best_before:.3f}, best since {recent:.3f})",
                ))
    if stopping.label_budget is not None and labels_total + next_batch > stopping.label_budget:
        found.append(StopReason(
            "LabelBudget",
            f"{labels_total} labels used; the next batch of up to {next_batch} would exceed the budget of "
            f"{stopping.label_budget}",
        ))
    iterations_run = (max(entry.iteration for entry in history) + 1) if history else 0
    if iterations_run >= stopping.max_iterations:
        found.append(StopReason("MaxIterations", f"{iterations_run} of {stopping.max_iterations} iterations ran"))
    if not found:
        return None
    message = found[0].message + "".join(f"; also {other.message}" for other in found[1:])
    return StopReason(found[0].reason, message)


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


def _now_text(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Status:
    """Builds the new status from the old one: conditions keep their transition time unless their
    status flips, and Events are produced for transitions only."""

    def __init__(self, old: Any, new: Any, now: datetime, generation: int) -> None:
        self.old = old
        self.new = new
        self.now = now
        self.generation = generation
        self.events: list[Event] = []
        self.requeue: list[float] = []
        self.new.observed_generation = generation

    def condition(self, type_: str, status: bool | None, reason: str, message: str = "") -> bool:
        """Set a condition; True when its status changed (a transition)."""
        value = {True: "True", False: "False", None: "Unknown"}[status]
        previous = next((c for c in self.old.conditions if c.type == type_), None)
        changed = previous is None or previous.status != value
        when = _now_text(self.now) if changed or previous is None else previous.last_transition_time
        condition = Condition(type=type_, status=value, reason=reason, message=message, last_transition_time=when,
                              observed_generation=self.generation)
        existing = [i for i, c in enumerate(self.new.conditions) if c.type == type_]
        if existing:  # in place: a status that did not change must serialise the same
            self.new.conditions[existing[0]] = condition
        else:
            self.new.conditions.append(condition)
        return changed

    def drop_condition(self, type_: str) -> None:
        self.new.conditions = [c for c in self.new.conditions if c.type != type_]

    def old_condition(self, type_: str) -> Condition | None:
        return next((c for c in self.old.conditions if c.type == type_), None)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def old_job(self, name: str) -> ChildJob | None:
        return next((job for job in self.old.jobs if job.name == name), None)

    def set_job(self, job: ChildJob) -> None:
        positions = [i for i, j in enumerate(self.new.jobs) if j.name == job.name]
        if positions:
            self.new.jobs[positions[0]] = job
        else:
            self.new.jobs.append(job)


@dataclass
class _Step:
    """The outcome of looking at one step's Job."""

    state: Literal["done", "created", "running", "failed", "suspended"]
    reason: str = ""
    message: str = ""


def _job_step(
    s: _Status, decision: Decision, name: str, purpose: str, iteration: int | None, done: bool,
    observed: ObservedJob | None, build: Callable[[], list[dict[str, Any]]], suspend: bool, config: JobConfig,
    describe: str, artifacts: str,
) -> _Step:
    """Drive one Job: create it, notice it vanished, failed, is stuck or retrying, or is done.

    ``done`` says the step's results are in the store, which beats anything the Job says.
    """
    previous = s.old_job(name)
    record = lambda state, failed=0: s.set_job(  # noqa: E731
        ChildJob(name=name, purpose=purpose, iteration=iteration, state=state, failed_pods=failed))
    if done:
        record("Succeeded", observed.failed if observed else (previous.failed_pods if previous else 0))
        if (c := s.old_condition("Schedulable")) is not None and c.status == "False":
            s.condition("Schedulable", True, "Scheduled", f"Job {name} ran")
        if observed is not None and observed.suspended:
            decision.suspend[name] = False  # finished anyway: nothing to keep suspended
        return _Step("done")
    if observed is None:
        if suspend:
            record("Suspended")
            return _Step("suspended", "Suspended", f"{describe} will start when spec.suspend is cleared")
        if previous is not None and previous.state in ("Pending", "Running", "Suspended"):
            s.event("Warning", "JobVanished", f"Job {name} ({describe}) disappeared before it finished "
                    "(deleted by someone?); creating it again")
        elif previous is None:
            s.event("Normal", "JobCreated", f"created Job {name}: {describe}")
        # previous state Created: asked for but not seen yet; asking again is harmless (409)
        decision.create.extend(build())
        record("Created")
        return _Step("created")
    if observed.deleting:
        record("Pending", observed.failed)
        s.requeue.append(2)
        return _Step("running")  # being deleted (a retry): create it again once it is gone
    if observed.failed_reason is not None:
        record("Failed", observed.failed)
        message = f"Job {name} ({describe}) failed: {observed.failed_reason}" + (
            f": {observed.failed_message}" if observed.failed_message else "")
        return _Step("failed", "JobFailed", message)
    if observed.complete:
        record("Failed", observed.failed)
        return _Step("failed", "ResultsMissing",
                     f"Job {name} ({describe}) succeeded but {artifacts} is not in the store: do the Job and the "
                     "controller use the same ORACULUM_STORE?")
    # still running (or waiting for a node)
    if suspend and not observed.suspended:
        decision.suspend[name] = True
    elif not suspend and observed.suspended:
        decision.suspend[name] = False
        s.event("Normal", "Resumed", f"resumed Job {name} ({describe})")
    if suspend:
        record("Suspended", observed.failed)
        return _Step("suspended", "Suspended", f"Job {name} ({describe}) is suspended")
    if previous is not None and observed.failed > previous.failed_pods:
        s.event("Warning", "PodFailed", f"a pod of Job {name} ({describe}) failed ({observed.failed} so far, "
                f"backoffLimit {config.backoff_limit}); Kubernetes retries it")
    waiting = observed.active > 0 and not observed.ready
    since = observed.started or observed.created
    state = "Pending" if (waiting or observed.active == 0) else "Running"
    record(state, observed.failed)
    if waiting and since is not None:
        age = (s.now - since).total_seconds()
        if age >= config.pending_timeout_seconds:
            why = observed.pending_message or "its pods are not running yet"
            # the message names the timeout, not the age, so that it stays the same from look to look
            waited = f"more than {config.pending_timeout_seconds / 60:g} min"
            if s.condition("Schedulable", False, "Unschedulable", f"Job {name} has waited {waited} for a node: {why}"):
                s.event("Warning", "Unschedulable", f"Job {name} ({describe}) has waited {waited}: {why}")
        else:
            s.requeue.append(config.pending_timeout_seconds - age + 1)
    elif not waiting and (c := s.old_condition("Schedulable")) is not None and c.status == "False":
        s.condition("Schedulable", True, "Scheduled", f"the pods of Job {name} are running")
    return _Step("running")


def _finish(s: _Status, decision: Decision) -> Decision:
    decision.status = s.new.model_dump(mode="json", by_alias=True, exclude_none=True)
    decision.events = s.events
    if s.requeue:
        decision.requeue_after = max(0.0, min(s.requeue))
    return decision


def _failed_retry(s: _Status, decision: Decision) -> Literal["terminal", "retry", "not-failed"]:
    """A Failed resource stays Failed until its spec changes (or it failed only for an invalid
    spec, now valid): then its failed Jobs are deleted and the work is tried again."""
    failed = s.old_condition("Failed")
    if s.old.phase != "Failed":
        return "not-failed"
    if failed is not None and failed.reason != "InvalidSpec" and (failed.observed_generation or 0) >= s.generation:
        return "terminal"
    for job in s.old.jobs:
        if job.state == "Failed":
            decision.delete.append(job.name)
    s.new.jobs = [job for job in s.new.jobs if job.state != "Failed"]
    s.condition("Failed", False, "Retrying", "the spec changed since the failure: trying again")
    s.event("Normal", "Retrying", "the spec changed since the failure: trying again"
            + (f" (deleting the failed Job(s) {', '.join(decision.delete)})" if decision.delete else ""))
    if decision.delete:
        s.new.phase = "Pending"
        s.new.message = f"retrying: deleting the failed Job(s) {', '.join(decision.delete)}"
        s.condition("Progressing", True, "Retrying", s.new.message)
        s.requeue.append(1)
    return "retry"


def _fail(s: _Status, reason: str, message: str) -> None:
    s.new.phase = "Failed"
    s.new.message = message
    if s.condition("Failed", True, reason, message) or s.old.phase != "Failed":
        s.event("Warning", reason, message)
    s.condition("Progressing", False, reason, message)


def _invalid_spec(s: _Status, error: ValidationError) -> str:
    message = f"invalid spec: {describe_validation_error(error)}"
    s.condition("SpecValid", False, "InvalidSpec", message)
    _fail(s, "InvalidSpec", message)
    return message


def _begin(
    spec_type: type[Any],
    status_type: type[Any],
    ref: "ObjectRef",
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    now: datetime,
    store_unreadable: bool,
) -> tuple[_Status, Decision, Any]:
    """What every reconcile does first, for both resources: parse the status and the spec (an
    invalid spec fails the resource with a condition that says why), keep a Failed resource
    Failed until its spec changes, and wait while the store cannot be read. Returns the spec, or
    None when the reconcile should end here with ``_finish``."""
    old = status_type.model_validate(status or {})
    s = _Status(old, old.model_copy(deep=True), now, ref.generation)
    decision = Decision(status={})
    try:
        spec = spec_type.model_validate(raw_spec)
    except ValidationError as error:
        _invalid_spec(s, error)
        return s, decision, None
    s.condition("SpecValid", True, "Valid", "the spec is valid")
    retry = _failed_retry(s, decision)
    if retry == "terminal" or decision.delete:
        return s, decision, None  # Failed until the spec changes; or wait for the deletions
    if store_unreadable:
        s.condition("StoreReachable", False, "StoreUnavailable", "cannot read the object store; retrying")
        s.requeue.append(30)
        return s, decision, None
    s.drop_condition("StoreReachable")
    return s, decision, spec


# --------------------------------------------------------------------------------------------
# ActiveLearningExperiment
# --------------------------------------------------------------------------------------------


def _history_entry(current: IterationObservation, labels_total: int) -> HistoryEntry:
    return HistoryEntry(
        iteration=current.iteration,
        labels=current.labels_total if current.labels_total is not None else labels_total,
        estimate=current.estimate, low=current.low, high=current.high,
        predicted_targets=current.predicted_targets, durations=dict(current.durations),
    )


def _estimate_status(entry: HistoryEntry) -> EstimateStatus:
    if entry.estimate is None:
        return EstimateStatus(iteration=entry.iteration, summary="n/a")
    summary = f"{entry.estimate:.3f}"
    if entry.low is not None and entry.high is not None:
        summary += f" [{entry.low:.3f}, {entry.high:.3f}]"
    return EstimateStatus(iteration=entry.iteration, value=entry.estimate, low=entry.low, high=entry.high, summary=summary)


def reconcile_experiment(
    ref: ObjectRef,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    jobs: Mapping[str, ObservedJob],
    observation: ExperimentObservation | None,
    now: datetime,
    config: JobConfig | None = None,
) -> Decision:
    """One reconcile of an ActiveLearningExperiment (see the module docstring).

    ``observation`` describes ``status.iteration`` (None when the store could not be read: the
    decision then only reports that). ``jobs`` maps Job names to what is seen of them.
    """
    config = config or JobConfig()
    s, decision, spec = _begin(ExperimentSpec, ExperimentStatus, ref, raw_spec, status, now, observation is None)
    if spec is None:
        return _finish(s, decision)
    old = s.old

    k = old.iteration
    current = observation.current
    suspend = spec.suspend
    s.new.labels = observation.labels_total

    def phase(name: str, reason: str, message: str) -> None:
        s.new.phase = name  # type: ignore[assignment]
        s.new.message = message
        s.condition("Progressing", name not in ("Suspended",), reason, message)

    def set_suspended(step: _Step) -> None:
        s.new.phase = "Suspended"
        s.new.message = f"iteration {k}: suspended; {step.message}"
        if s.condition("Suspended", True, "Suspended", s.new.message):
            s.event("Normal", "Suspended", f"suspended at iteration {k}: no new Jobs until spec.suspend is cleared")
        s.condition("Progressing", False, "Suspended", s.new.message)

    if not suspend and (c := s.old_condition("Suspended")) is not None and c.status == "True":
        s.condition("Suspended", False, "Resumed", "spec.suspend was cleared")
        s.event("Normal", "Resumed", f"resumed at iteration {k}")

    # the pool must exist before anything can run
    if not observation.dataset_ready:
        s.condition("DatasetReady", False, "DatasetMissing", observation.dataset_message)
        if suspend:
            set_suspended(_Step("suspended", message="waiting for the dataset"))
        else:
            phase("Pending", "DatasetMissing", observation.dataset_message)
        s.requeue.append(30)
        return _finish(s, decision)
    s.condition("DatasetReady", True, "DatasetFound", f"dataset {spec.dataset!r} is complete")

    def step(purpose: str, done: bool, describe: str, artifacts: str) -> _Step:
        name = experiment_job_name(ref.name, purpose, k)

        def build() -> list[dict[str, Any]]:
            # the manifest every step of iteration k mounts: made with the first step, and asked for
            # again by later ones (409 = already there) so a lost ConfigMap cannot stall the loop
            return [manifest_configmap(ref.name, ref.namespace, ref.uid, spec, k),
                    experiment_job(ref.name, ref.namespace, ref.uid, spec, purpose, k, config)]

        return _job_step(s, decision, name, purpose, k, done, jobs.get(name), build, suspend, config, describe, artifacts)

    # 1. iterate: train, score, choose the batch
    outcome = step("iterate", current.finished, f"iteration {k}: train, score the pool and choose the batch",
                   f"experiments/{ref.name}/iterations/{k}/run.json")
    if outcome.state == "failed":
        _fail(s, outcome.reason, outcome.message)
        return _finish(s, decision)
    if outcome.state == "suspended":
        set_suspended(outcome)
        return _finish(s, decision)
    if outcome.state in ("created", "running"):
        s.new.batch = None
        phase("Training", "Iterating", f"iteration {k}: training the network, scoring the pool, choosing the batch")
        return _finish(s, decision)

    # 2. the oracle labels the batch
    s.new.batch = BatchStatus(size=current.batch_size, labelled=min(current.labelled, current.batch_size))
    progress = f"{s.new.batch.labelled}/{current.batch_size} labelled"
    submitted = observation.labels_submitted is not None and observation.labels_submitted >= k
    if spec.oracle.type == "simulated":
        outcome = step("answer", current.labels_complete, f"iteration {k}: the simulated oracle labels the batch",
                       f"a label for every item of iterations/{k}/batch.json")
        if outcome.state == "failed":
            _fail(s, outcome.reason, outcome.message)
            return _finish(s, decision)
        if outcome.state == "suspended":
            set_suspended(outcome)
            return _finish(s, decision)
        if outcome.state != "done":
            phase("AwaitingLabels", "SimulatedOracle", f"iteration {k}: the simulated oracle is labelling ({progress})")
            return _finish(s, decision)
    elif not (current.labels_complete and submitted):
        if submitted and not current.labels_complete:
            message = (f"iteration {k}: labels were submitted but the batch is incomplete ({progress}); "
                       "waiting for the missing labels")
            if s.condition("LabelsComplete", False, "LabelsIncomplete", message):
                s.event("Warning", "LabelsIncomplete", message)
        else:
            s.drop_condition("LabelsComplete")
            message = (f"iteration {k}: batch fully labelled; waiting for the oracle to submit it"
                       if current.labels_complete else f"iteration {k}: waiting for the oracle ({progress})")
        if suspend:
            set_suspended(_Step("suspended", message=message))
        else:
            if old.phase != "AwaitingLabels" and old.phase != "Suspended":
                s.event("Normal", "AwaitingLabels", f"iteration {k}: a batch of {current.batch_size} spectra is "
                        "ready for the oracle")
            phase("AwaitingLabels", "AwaitingLabels", message)
        s.requeue.append(15)
        return _finish(s, decision)
    s.drop_condition("LabelsComplete")

    # 3. evaluate: estimate performance from the complete batch
    outcome = step("evaluate", current.evaluated, f"iteration {k}: estimate performance from the labels",
                   f"experiments/{ref.name}/iterations/{k}/metrics.json over the complete batch")
    if outcome.state == "failed":
        _fail(s, outcome.reason, outcome.message)
        return _finish(s, decision)
    if outcome.state == "suspended":
        set_suspended(outcome)
        return _finish(s, decision)
    if outcome.state != "done":
        phase("Training", "Evaluating", f"iteration {k}: estimating performance from the {current.batch_size} labels")
        return _finish(s, decision)

    # 4. record the iteration, then stop or go on
    entry = _history_entry(current, observation.labels_total)
    known = next((h for h in old.history if h.iteration == k), None)
    s.new.history = sorted([h for h in old.history if h.iteration != k] + [entry], key=lambda h: h.iteration)
    s.new.estimate = _estimate_status(entry)
    if known is None:
        s.event("Normal", "Evaluated", f"iteration {k}: precision {s.new.estimate.summary}, "
                f"{entry.predicted_targets if entry.predicted_targets is not None else 'n/a'} predicted targets, "
                f"{entry.labels} labels")
    stop = stopping_reason(spec.stopping, s.new.history, entry.labels, next_batch_labels(spec))
    if stop is not None:
        s.new.phase = "Succeeded"
        s.new.message = f"stopped after iteration {k}: {stop.message}"
        s.condition("Progressing", False, stop.reason, s.new.message)
        if s.condition("Succeeded", True, stop.reason, s.new.message) or old.phase != "Succeeded":
            s.event("Normal", stop.reason, s.new.message)
        return _finish(s, decision)
    if (c := s.old_condition("Succeeded")) is not None and c.status == "True":
        s.condition("Succeeded", False, "Continuing", "the stopping criteria changed: continuing")
    if suspend:
        set_suspended(_Step("suspended", message=f"iteration {k + 1} will start when spec.suspend is cleared"))
        return _finish(s, decision)
    # advance: the next reconcile observes iteration k + 1 and creates its Job
    s.new.iteration = k + 1
    s.new.batch = None
    s.new.jobs = []
    s.drop_condition("Schedulable")
    phase("Training", "NextIteration", f"iteration {k + 1}: starting")
    s.requeue.append(0)
    return _finish(s, decision)


# --------------------------------------------------------------------------------------------
# PreprocessingJob
# --------------------------------------------------------------------------------------------


def reconcile_preprocessing(
    ref: ObjectRef,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    jobs: Mapping[str, ObservedJob],
    observation: DatasetObservation | None,
    now: datetime,
    config: JobConfig | None = None,
) -> Decision:
    """One reconcile of a PreprocessingJob (see the module docstring)."""
    config = config or JobConfig()
    s, decision, spec = _begin(PreprocessingJobSpec, PreprocessingJobStatus, ref, raw_spec, status, now, observation is None)
    if spec is None:
        return _finish(s, decision)
    old = s.old

    s.new.dataset = spec.dataset
    s.new.shards = spec.shards
    s.new.shards_done = min(observation.shards_done, spec.shards)
    s.new.processed = observation.processed
    s.new.rejected = observation.rejected
    name = preprocess_job_name(ref.name)
    describe = f"preprocess {spec.source.location()} into dataset {spec.dataset!r} ({spec.shards} shard(s))"
    if not spec.suspend and (c := s.old_condition("Suspended")) is not None and c.status == "True":
        s.condition("Suspended", False, "Resumed", "spec.suspend was cleared")
        s.event("Normal", "Resumed", "resumed")
    outcome = _job_step(
        s, decision, name, "preprocess", None, observation.complete, jobs.get(name),
        lambda: [preprocess_job(ref.name, ref.namespace, ref.uid, spec, config)], spec.suspend, config, describe,
        f"datasets/{spec.dataset}/index.json",
    )
    if outcome.state == "failed":
        _fail(s, outcome.reason, outcome.message)
    elif outcome.state == "suspended":
        s.new.phase = "Suspended"
        s.new.message = f"suspended with {s.new.shards_done}/{spec.shards} shards done; {outcome.message}"
        if s.condition("Suspended", True, "Suspended", s.new.message):
            s.event("Normal", "Suspended", s.new.message)
        s.condition("Progressing", False, "Suspended", s.new.message)
    elif outcome.state == "done":
        s.new.phase = "Succeeded"
        s.new.shards_done = spec.shards
        s.new.message = (f"dataset {spec.dataset!r} is complete: {observation.processed} spectra, "
                         f"{observation.rejected} files rejected")
        s.condition("Progressing", False, "Completed", s.new.message)
        if s.condition("Succeeded", True, "Completed", s.new.message) or old.phase != "Succeeded":
            s.event("Normal", "Completed", s.new.message)
    else:
        s.new.phase = "Pending" if outcome.state == "created" else "Running"
        s.new.message = (f"{s.new.shards_done}/{spec.shards} shards done, {observation.processed} spectra stored, "
                         f"{observation.rejected} rejected")
        s.condition("Progressing", True, "Preprocessing", s.new.message)
        s.requeue.append(30)
    return _finish(s, decision)
