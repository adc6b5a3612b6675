"""The state machines of both custom resources, as pure functions.

``(spec, status, observed child Jobs, what the store holds, now) -> Decision``: which objects to
create, which Jobs to delete or (un)suspend, the whole new status, the Kubernetes Events to post,
and when to look again. Nothing here talks to Kubernetes, the store or the clock: one driver
(:mod:`oraculum.control.driver`) gathers the inputs, calls these functions and carries the decision
out, for the kopf handlers in ``operator/`` and for the local runner (:mod:`oraculum.control.runner`)
alike. So both runtimes follow one state machine, and every transition is covered by table-driven
tests with no cluster.

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
It runs the spec its Job was made with: an edit while the Job runs, or after it Succeeded, is
reported (``SpecApplied=False``), not applied, and the status keeps describing the dataset written.

**Both.** An invalid spec gives Failed with reason InvalidSpec and the validation message; a failed
Job gives Failed with the Job's own reason; Failed stays until the spec changes (a new
``metadata.generation``), when the failed Job is deleted and the work retried with the new spec
(an experiment's manifest ConfigMap is named for its spec). A Job of the right name but owned by
another resource (an earlier one of the same name) is deleted, never adopted. A child the cluster
refuses to create is reported (``JobCreated=False``, reason JobRejected) and asked for again
after a back-off; so is a store that cannot be read (``StoreReachable=False``). ``spec.suspend``
suspends running Jobs (Kubernetes' own Job suspension: pods stop, finished shards and iterations
stay in the store) and starts no new ones; clearing it resumes. A Job whose pods stay unscheduled
longer than the configured timeout is reported in a ``Schedulable`` condition with the scheduler's
message. Events are posted on transitions only (computed by comparing old and new status), so a
restarted operator posts nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from oraculum.control import decision as _decision
from oraculum.control import stopping as _stopping
from oraculum.control.decision import (
    LABELS_SUBMITTED_ANNOTATION,
    DatasetObservation,
    Decision,
    Event,
    ExperimentObservation,
    IterationObservation,
    ObjectRef,
    ObservedJob,
    Refusal,
    labels_submitted_from_annotations,
)
from oraculum.control.jobs import (
    JobConfig,
    experiment_job,
    experiment_job_name,
    manifest_configmap,
    preprocess_job,
    preprocess_job_name,
    spec_digest,
)
from oraculum.control.stopping import StopReason, next_batch_labels, stopping_reason
from oraculum.control.transitions import StatusDraft, StepOutcome, begin, fail, finish, job_step
from oraculum.manifests import (
    BatchStatus,
    EstimateStatus,
    ExperimentSpec,
    ExperimentStatus,
    HistoryEntry,
    PreprocessingJobSpec,
    PreprocessingJobStatus,
)

# The inputs, outputs and stopping criteria live in their own modules (decision, stopping) and
# are named here too (imported above): this module is where runtimes and tests meet the machines.
__all__ = ["reconcile_experiment", "reconcile_preprocessing"]
__all__ += _decision.__all__
__all__ += _stopping.__all__


def _unreadable(observation: object | None, store_error: str | None) -> str | None:
    """Why the store could not be read (None: it could)."""
    return None if observation is not None else (store_error or "no observation of the store")


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
    *,
    store_error: str | None = None,
    refused: Refusal | None = None,
) -> Decision:
    """One reconcile of an ActiveLearningExperiment (see the module docstring).

    ``observation`` describes ``status.iteration`` (None when the store could not be read, and
    ``store_error`` says why: the decision then only reports that). ``jobs`` maps Job names to what
    is seen of them. ``refused``: a child the runtime's world refused to create in this look.
    """
    config = config or JobConfig()
    s, decision, spec = begin(ExperimentSpec, ExperimentStatus, ref, raw_spec, status, now,
                              _unreadable(observation, store_error), refused)
    if spec is None:
        return finish(s, decision)
    old = s.old

    k = old.iteration
    current = observation.current
    suspend = spec.suspend
    s.new.labels = observation.labels_total

    def phase(name: str, reason: str, message: str) -> None:
        s.new.phase = name  # type: ignore[assignment]
        s.new.message = message
        s.condition("Progressing", name not in ("Suspended",), reason, message)

    def set_suspended(step: StepOutcome) -> None:
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
            set_suspended(StepOutcome("suspended", message="waiting for the dataset"))
        else:
            phase("Pending", "DatasetMissing", observation.dataset_message)
        s.requeue.append(30)
        return finish(s, decision)
    s.condition("DatasetReady", True, "DatasetFound", f"dataset {spec.dataset!r} is complete")

    def step(purpose: str, done: bool, describe: str, artifacts: str) -> StepOutcome:
        name = experiment_job_name(ref.name, purpose, k)

        def build() -> list[dict[str, Any]]:
            # the manifest every step of iteration k mounts: made with the first step, and asked for
            # again by later ones (409 = already there) so a lost ConfigMap cannot stall the loop
            return [manifest_configmap(ref.name, ref.namespace, ref.uid, spec, k),
                    experiment_job(ref.name, ref.namespace, ref.uid, spec, purpose, k, config)]

        return job_step(s, decision, name, purpose, k, done, jobs.get(name), build, suspend, config, describe, artifacts)

    # 1. iterate: train, score, choose the batch
    outcome = step("iterate", current.finished, f"iteration {k}: train, score the pool and choose the batch",
                   f"experiments/{ref.name}/iterations/{k}/run.json")
    if outcome.state == "failed":
        fail(s, outcome.reason, outcome.message)
        return finish(s, decision)
    if outcome.state == "suspended":
        set_suspended(outcome)
        return finish(s, decision)
    if outcome.state in ("created", "running"):
        s.new.batch = None
        phase("Training", "Iterating", f"iteration {k}: training the network, scoring the pool, choosing the batch")
        return finish(s, decision)

    # 2. the oracle labels the batch
    s.new.batch = BatchStatus(size=current.batch_size, labelled=min(current.labelled, current.batch_size))
    progress = f"{s.new.batch.labelled}/{current.batch_size} labelled"
    submitted = observation.labels_submitted is not None and observation.labels_submitted >= k
    if spec.oracle.type == "simulated":
        outcome = step("answer", current.labels_complete, f"iteration {k}: the simulated oracle labels the batch",
                       f"a label for every item of iterations/{k}/batch.json")
        if outcome.state == "failed":
            fail(s, outcome.reason, outcome.message)
            return finish(s, decision)
        if outcome.state == "suspended":
            set_suspended(outcome)
            return finish(s, decision)
        if outcome.state != "done":
            phase("AwaitingLabels", "SimulatedOracle", f"iteration {k}: the simulated oracle is labelling ({progress})")
            return finish(s, decision)
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
            set_suspended(StepOutcome("suspended", message=message))
        else:
            if old.phase != "AwaitingLabels" and old.phase != "Suspended":
                s.event("Normal", "AwaitingLabels", f"iteration {k}: a batch of {current.batch_size} spectra is "
                        "ready for the oracle")
            phase("AwaitingLabels", "AwaitingLabels", message)
        s.requeue.append(15)
        return finish(s, decision)
    s.drop_condition("LabelsComplete")

    # 3. evaluate: estimate performance from the complete batch
    outcome = step("evaluate", current.evaluated, f"iteration {k}: estimate performance from the labels",
                   f"experiments/{ref.name}/iterations/{k}/metrics.json over the complete batch")
    if outcome.state == "failed":
        fail(s, outcome.reason, outcome.message)
        return finish(s, decision)
    if outcome.state == "suspended":
        set_suspended(outcome)
        return finish(s, decision)
    if outcome.state != "done":
        phase("Training", "Evaluating", f"iteration {k}: estimating performance from the {current.batch_size} labels")
        return finish(s, decision)

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
        return finish(s, decision)
    if (c := s.old_condition("Succeeded")) is not None and c.status == "True":
        s.condition("Succeeded", False, "Continuing", "the stopping criteria changed: continuing")
    if suspend:
        set_suspended(StepOutcome("suspended", message=f"iteration {k + 1} will start when spec.suspend is cleared"))
        return finish(s, decision)
    # advance: the next reconcile observes iteration k + 1 and creates its Job
    s.new.iteration = k + 1
    s.new.batch = None
    s.new.jobs = []
    s.drop_condition("Schedulable")
    phase("Training", "NextIteration", f"iteration {k + 1}: starting")
    s.requeue.append(0)
    return finish(s, decision)


# --------------------------------------------------------------------------------------------
# PreprocessingJob
# --------------------------------------------------------------------------------------------


def _changes(old: PreprocessingJobStatus, spec: PreprocessingJobSpec, job_shards: int) -> str:
    """What is known to differ between the dataset being (or already) written and the spec."""
    found = []
    if old.dataset and old.dataset != spec.dataset:
        found.append(f"dataset {old.dataset!r} -> {spec.dataset!r}")
    if job_shards and job_shards != spec.shards:
        found.append(f"shards {job_shards} -> {spec.shards}")
    return ", ".join(found) or "e.g. its source, grid, normalisation or parallelism"


def _changed_after_completion(s: StatusDraft, ref: ObjectRef, spec: PreprocessingJobSpec, job: ObservedJob | None,
                              wanted: str) -> bool:
    """Whether a Succeeded PreprocessingJob's spec is no longer the one its dataset was written with.

    The finished Job says so while it exists (its spec hash); once its TTL removed it, a spec
    generation newer than the success, or a change already reported, does (the status has no
    room for the hash, so an edit reverted after the Job is gone still counts as a change).
    """
    if job is not None and not job.deleting and job.spec_hash:
        return job.spec_hash != wanted
    if job is not None and not job.deleting and job.completions != spec.shards:
        return True
    if s.old.dataset and s.old.dataset != spec.dataset:
        return True
    applied = s.old_condition("SpecApplied")
    if applied is not None and applied.status == "False":
        return True
    succeeded = s.old_condition("Succeeded")
    return succeeded is not None and (succeeded.observed_generation or 0) < ref.generation


def reconcile_preprocessing(
    ref: ObjectRef,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    jobs: Mapping[str, ObservedJob],
    observation: DatasetObservation | None,
    now: datetime,
    config: JobConfig | None = None,
    *,
    store_error: str | None = None,
    refused: Refusal | None = None,
) -> Decision:
    """One reconcile of a PreprocessingJob (see the module docstring).

    A PreprocessingJob runs the spec it had when its Job was made: an Indexed Job cannot change
    its shards, source or grid while it runs, and a finished dataset is final (experiments may be
    reading it). A spec changed while the Job runs, or after it finished, is therefore reported
    (condition ``SpecApplied=False``, one Warning event), never silently ignored; the status keeps
    describing the dataset really being written (its name and shard count are the Job's). To apply
    such a change the resource is deleted and applied again (docs/operator.md). A Failed one is
    retried with the new spec like an experiment.
    """
    config = config or JobConfig()
    s, decision, spec = begin(PreprocessingJobSpec, PreprocessingJobStatus, ref, raw_spec, status, now,
                              _unreadable(observation, store_error), refused)
    if spec is None:
        return finish(s, decision)
    old = s.old
    name = preprocess_job_name(ref.name)
    observed = jobs.get(name)
    own = observed if observed is not None and observed.owned_by(ref.uid) else None
    wanted = spec_digest(spec)

    if not spec.suspend and (c := s.old_condition("Suspended")) is not None and c.status == "True":
        s.condition("Suspended", False, "Resumed", "spec.suspend was cleared")
        s.event("Normal", "Resumed", "resumed")

    # a finished PreprocessingJob is final: a later edit is reported, the status stays that of the dataset
    if old.phase == "Succeeded" and _changed_after_completion(s, ref, spec, own, wanted):
        note = (f"the spec changed after dataset {old.dataset!r} was complete ({_changes(old, spec, old.shards)}); "
                "a finished PreprocessingJob does not run again, so the change is not applied: to rebuild, "
                "delete this PreprocessingJob and apply it again (under a new dataset name to keep the old dataset)")
        if s.condition("SpecApplied", False, "SpecChangedAfterCompletion", note):
            s.event("Warning", "SpecChangedAfterCompletion", note)
        return finish(s, decision)

    # the Job that runs (or ran) may have been made from an earlier spec: the status follows the Job
    live = own if own is not None and not own.deleting else None
    other = live is not None and (live.spec_hash != wanted if live.spec_hash else (  # a Job of an older operator
        live.completions != spec.shards or bool(old.dataset) and old.dataset != spec.dataset))
    dataset = (old.dataset or spec.dataset) if other else spec.dataset
    shards = live.completions if live is not None and other else spec.shards
    seen = observation.dataset in ("", dataset)  # the store was read for this dataset (else: nothing of it yet)
    s.new.dataset = dataset
    s.new.shards = shards
    s.new.shards_done = min(observation.shards_done, shards) if seen else 0
    s.new.processed = observation.processed if seen else 0
    s.new.rejected = observation.rejected if seen else 0
    if other:
        note = (f"the spec changed while Job {name} runs ({_changes(old, spec, shards)}): a running Job keeps the "
                f"spec it was made with, so dataset {dataset!r} gets {shards} shard(s) as first asked; to apply the "
                "change, delete this PreprocessingJob and apply it again once it has finished")
        if s.condition("SpecApplied", False, "SpecChangedWhileRunning", note):
            s.event("Warning", "SpecChangedWhileRunning", note)
    elif live is not None:
        s.drop_condition("SpecApplied")  # the Job does what the spec asks (e.g. an edit undone)
    describe = f"preprocess {spec.source.location()} into dataset {dataset!r} ({shards} shard(s))"
    outcome = job_step(
        s, decision, name, "preprocess", None, observation.complete and seen, observed,
        lambda: [preprocess_job(ref.name, ref.namespace, ref.uid, spec, config)], spec.suspend, config, describe,
        f"datasets/{dataset}/index.json",
    )
    if decision.create:  # a new Job, made from this spec
        s.drop_condition("SpecApplied")
    if outcome.state == "failed":
        fail(s, outcome.reason, outcome.message)
    elif outcome.state == "suspended":
        s.new.phase = "Suspended"
        s.new.message = f"suspended with {s.new.shards_done}/{shards} shards done; {outcome.message}"
        if s.condition("Suspended", True, "Suspended", s.new.message):
            s.event("Normal", "Suspended", s.new.message)
        s.condition("Progressing", False, "Suspended", s.new.message)
    elif outcome.state == "done":
        s.new.phase = "Succeeded"
        s.new.shards = s.new.shards_done = observation.shards_done or shards  # what the dataset's index lists
        s.new.message = (f"dataset {dataset!r} is complete: {observation.processed} spectra, "
                         f"{observation.rejected} files rejected")
        s.condition("Progressing", False, "Completed", s.new.message)
        if s.condition("Succeeded", True, "Completed", s.new.message) or old.phase != "Succeeded":
            s.event("Normal", "Completed", s.new.message)
    else:
        s.new.phase = "Pending" if outcome.state == "created" else "Running"
        s.new.message = (f"{s.new.shards_done}/{shards} shards done, {s.new.processed} spectra stored, "
                         f"{s.new.rejected} rejected")
        s.condition("Progressing", True, "Preprocessing", s.new.message)
        s.requeue.append(30)
    return finish(s, decision)
