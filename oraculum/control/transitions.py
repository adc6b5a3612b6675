"""The machinery both state machines share: how a status changes, and one child Job's step.

:class:`StatusDraft` builds the new status from the old one (conditions keep their transition time
unless their status flips; Events are produced for transitions only, so a restarted runtime posts
nothing twice). :func:`job_step` drives one child Job through created, running, suspended, vanished,
failed and done. :func:`begin` and :func:`finish` are what every reconcile does first and last.
Kept apart from :mod:`oraculum.control.reconcile` so that module reads as the two state machines
alone, step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import ValidationError

from oraculum.control.decision import Decision, Event, JobOutcome, ObjectRef, ObservedJob, Refusal, parse_time
from oraculum.control.jobs import JobConfig
from oraculum.manifests import ChildJob, Condition, describe_validation_error

__all__ = ["REFUSED_BACKOFF", "STORE_BACKOFF", "StatusDraft", "StepOutcome", "begin", "fail", "finish", "job_step"]

#: (first, longest) wait in seconds before a refused child is asked for again, and before an
#: unreachable store is read again: the wait is the time the trouble has lasted so far, within
#: these bounds, so it doubles from look to look and survives a restart (it is read off the
#: condition's lastTransitionTime, not kept in memory).
REFUSED_BACKOFF = (30.0, 300.0)
STORE_BACKOFF = (15.0, 120.0)


def _now_text(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusDraft:
    """Builds the new status from the old one: conditions keep their transition time unless their
    status flips, and Events are produced for transitions only."""

    def __init__(self, old: Any, new: Any, now: datetime, generation: int, ref: ObjectRef | None = None,
                 refused: Refusal | None = None) -> None:
        self.old = old
        self.new = new
        self.now = now
        self.generation = generation
        self.ref = ref
        self.refused = refused  # a child the runtime's world refused to create in this very look
        self.rejected: str | None = None  # set when a step's child was refused: the message
        self.events: list[Event] = []
        self.requeue: list[float] = []
        self.backoff: list[float] = []
        self.outcomes: list[JobOutcome] = []
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

    def wait_longer(self, type_: str, bounds: tuple[float, float]) -> None:
        """Back off while condition ``type_`` is False: as long as it has been so, within ``bounds``."""
        c = self.old_condition(type_)
        since = parse_time(c.last_transition_time) if c is not None and c.status == "False" else None
        lasted = (self.now - since).total_seconds() if since is not None else 0.0
        self.backoff.append(min(bounds[1], max(bounds[0], lasted)))

    def old_job(self, name: str) -> ChildJob | None:
        return next((job for job in self.old.jobs if job.name == name), None)

    def set_job(self, job: ChildJob) -> None:
        positions = [i for i, j in enumerate(self.new.jobs) if j.name == job.name]
        if positions:
            self.new.jobs[positions[0]] = job
        else:
            self.new.jobs.append(job)


@dataclass
class StepOutcome:
    """The outcome of looking at one step's Job."""

    state: Literal["done", "created", "running", "failed", "suspended"]
    reason: str = ""
    message: str = ""


def job_step(
    s: StatusDraft, decision: Decision, name: str, purpose: str, iteration: int | None, done: bool,
    observed: ObservedJob | None, build: Callable[[], list[dict[str, Any]]], suspend: bool, config: JobConfig,
    describe: str, artifacts: str,
) -> StepOutcome:
    """Drive one Job: create it, notice it vanished, failed, is stuck or retrying, or is done.

    ``done`` says the step's results are in the store, which beats anything the Job says. A Job
    of that name owned by another resource (an earlier one of the same name, deleted and made
    again) is not this step's: it is deleted, and this step's Job is made once it is gone. A child
    the runtime's world refused to create (:attr:`StatusDraft.refused`) is reported and asked for
    again after a back-off.
    """
    previous = s.old_job(name)
    record = lambda state, failed=0: s.set_job(  # noqa: E731
        ChildJob(name=name, purpose=purpose, iteration=iteration, state=state, failed_pods=failed))
    outcome = lambda what: s.outcomes.append(JobOutcome(name, purpose, what))  # noqa: E731
    if observed is not None and s.ref is not None and not observed.owned_by(s.ref.uid):
        stale, observed = observed, None
    else:
        stale = None
    if done:
        if (previous.state not in ("Succeeded", "Failed") if previous is not None
                else observed is not None and observed.complete):  # ran and finished between two looks
            outcome("succeeded")
        record("Succeeded", observed.failed if observed else (previous.failed_pods if previous else 0))
        if (c := s.old_condition("Schedulable")) is not None and c.status == "False":
            s.condition("Schedulable", True, "Scheduled", f"Job {name} ran")
        if observed is not None and observed.suspended:
            decision.suspend[name] = False  # finished anyway: nothing to keep suspended
        return StepOutcome("done")
    if stale is not None:
        if not stale.deleting:
            decision.delete.append(name)
            whose = f"resource uid {stale.owner_uid}" if stale.owner_uid else "no owner (orphaned)"
            s.event("Normal", "StaleJob", f"Job {name} is left from an earlier {s.ref.kind if s.ref else 'resource'} "
                    f"of this name ({whose}): deleting it to make this one's")
        s.requeue.append(2)
        return StepOutcome("created")  # this step's Job is made once the old one is gone
    if observed is None:
        if suspend:
            record("Suspended")
            return StepOutcome("suspended", "Suspended", f"{describe} will start when spec.suspend is cleared")
        objects = build()
        refused = s.refused
        if refused is not None and any((o["kind"], o["metadata"]["name"]) == (refused.kind, refused.name) for o in objects):
            message = f"the API server refused {refused.kind} {refused.name} ({describe}): {refused.message}"
            if s.condition("JobCreated", False, "JobRejected", message):
                s.event("Warning", "JobRejected", message)
                outcome("rejected")
            s.wait_longer("JobCreated", REFUSED_BACKOFF)
            s.rejected = message
            return StepOutcome("created")  # nothing was made: finish() says so in the phase
        if previous is not None and previous.state in ("Pending", "Running", "Suspended"):
            s.event("Warning", "JobVanished", f"Job {name} ({describe}) disappeared before it finished "
                    "(deleted by someone?); creating it again")
            outcome("vanished")
        elif previous is None:
            s.event("Normal", "JobCreated", f"created Job {name}: {describe}")
        # previous state Created: asked for but not seen yet; asking again is harmless (409)
        decision.create.extend(objects)
        s.drop_condition("JobCreated")
        record("Created")
        return StepOutcome("created")
    s.drop_condition("JobCreated")
    if observed.deleting:
        record("Pending", observed.failed)
        s.requeue.append(2)
        return StepOutcome("running")  # being deleted (a retry): create it again once it is gone
    if observed.failed_reason is not None:
        if previous is None or previous.state != "Failed":
            outcome("failed")
        record("Failed", observed.failed)
        message = f"Job {name} ({describe}) failed: {observed.failed_reason}" + (
            f": {observed.failed_message}" if observed.failed_message else "")
        return StepOutcome("failed", "JobFailed", message)
    if observed.complete:
        if previous is None or previous.state != "Failed":
            outcome("failed")
        record("Failed", observed.failed)
        return StepOutcome("failed", "ResultsMissing",
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
        return StepOutcome("suspended", "Suspended", f"Job {name} ({describe}) is suspended")
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
    return StepOutcome("running")


def finish(s: StatusDraft, decision: Decision) -> Decision:
    if s.rejected is not None:  # a step's child was refused: nothing runs, whatever the step's phase said
        s.new.phase = "Pending"
        s.new.message = f"{s.rejected}; asking again with a back-off"
        s.condition("Progressing", False, "JobRejected", s.new.message)
    decision.status = s.new.model_dump(mode="json", by_alias=True, exclude_none=True)
    decision.events = s.events
    decision.outcomes = s.outcomes
    if s.requeue:
        decision.requeue_after = max(0.0, min(s.requeue))
    if s.backoff:
        decision.backoff = max(s.backoff)
    return decision


def _failed_retry(s: StatusDraft, decision: Decision) -> Literal["terminal", "retry", "not-failed"]:
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


def fail(s: StatusDraft, reason: str, message: str) -> None:
    s.new.phase = "Failed"
    s.new.message = message
    if s.condition("Failed", True, reason, message) or s.old.phase != "Failed":
        s.event("Warning", reason, message)
    s.condition("Progressing", False, reason, message)


def _invalid_spec(s: StatusDraft, error: ValidationError) -> str:
    message = f"invalid spec: {describe_validation_error(error)}"
    s.condition("SpecValid", False, "InvalidSpec", message)
    fail(s, "InvalidSpec", message)
    return message


def begin(
    spec_type: type[Any],
    status_type: type[Any],
    ref: ObjectRef,
    raw_spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    now: datetime,
    store_error: str | None,
    refused: Refusal | None = None,
) -> tuple[StatusDraft, Decision, Any]:
    """What every reconcile does first, for both resources: parse the status and the spec (an
    invalid spec fails the resource with a condition that says why), keep a Failed resource
    Failed until its spec changes, and wait while the store cannot be read (``store_error``: why
    not, None when it could be). Returns the spec, or None when the reconcile should end here
    with ``finish``."""
    old = status_type.model_validate(status or {})
    s = StatusDraft(old, old.model_copy(deep=True), now, ref.generation, ref, refused)
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
    if store_error is not None:
        s.condition("StoreReachable", False, "StoreUnavailable",
                    f"cannot read the object store ({store_error}); trying again with a back-off")
        s.wait_longer("StoreReachable", STORE_BACKOFF)
        return s, decision, None
    s.drop_condition("StoreReachable")
    return s, decision, spec
