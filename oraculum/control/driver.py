"""One reconcile step for both runtimes: observe, decide, apply.

The state machines (:mod:`oraculum.control.reconcile`) are pure; something has to read their
inputs and carry out their :class:`~oraculum.control.decision.Decision`. That something used to
be written once per runtime (the operator, ``oraculum run``, the API's ``--run-jobs``), so a fix to
what is read, or to the order things are done in, had to be made in each and could drift. Here it
is written once, against :class:`Runtime`: the few verbs that differ between a cluster and one
machine (list the child Jobs, create and delete children, suspend a Job, write the status, post an
Event, read the store). The operator implements them with the Kubernetes API
(``operator/controller.py``), the local runner with subprocesses and files
(:mod:`oraculum.control.runner`). What stays in each runtime is only what is truly its own: when
to look again, how to read the resource afresh, and (on a cluster) retrying a status write that
lost a race with a newer version of the object.

The step is a coroutine because the operator lives in kopf's event loop and must not block it.
The local runner has no event loop: its runtime's verbs never wait, so :func:`drive_now` runs the
same coroutine to its end in one go, without one.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from oraculum.control.decision import (
    DatasetObservation,
    Decision,
    Event,
    ExperimentObservation,
    ObjectRef,
    ObservedJob,
    Refusal,
    labels_submitted_from_annotations,
)
from oraculum.control.jobs import LABEL_EXPERIMENT, LABEL_PPJ, JobConfig
from oraculum.control.observe import observe_dataset, observe_experiment
from oraculum.control.reconcile import reconcile_experiment, reconcile_preprocessing
from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec
from oraculum.store import ObjectStore, unreachable_errors

__all__ = [
    "CHILD_LABELS",
    "Observed",
    "Refused",
    "Resource",
    "Runtime",
    "apply",
    "decide",
    "drive",
    "drive_now",
    "observe",
    "owner_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The label each kind puts on its child Jobs, with the resource's name as value: how a runtime
#: finds a resource's Jobs, and a Job's resource.
CHILD_LABELS: dict[str, str] = {"ActiveLearningExperiment": LABEL_EXPERIMENT, "PreprocessingJob": LABEL_PPJ}


def owner_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """``(kind, name)`` of the resource a Job with these labels belongs to, or None."""
    for kind, label in CHILD_LABELS.items():
        if label in labels:
            return kind, labels[label]
    return None


@dataclass(frozen=True)
class Resource:
    """One custom resource as a runtime has just read it.

    ``spec`` is the raw spec, not validated: an invalid one is the state machine's to report.
    ``version`` is the runtime's token for this version of the object (Kubernetes'
    ``resourceVersion``; on one machine the hash of the spec), handed back to
    :meth:`Runtime.write_status` so a status is stored with the version it was computed from.
    """

    ref: ObjectRef
    spec: Mapping[str, Any]
    status: Mapping[str, Any] = field(default_factory=dict)
    version: str = ""

    @property
    def selector(self) -> tuple[str, str]:
        """``(label, value)`` that every child Job of this resource carries."""
        return CHILD_LABELS[self.ref.kind], self.ref.name


class Refused(Exception):
    """Raised by :meth:`Runtime.create` when the runtime's world refuses the object for good (on a
    cluster: the API server's 400, 403 or 422 -- an invalid Job, a quota, RBAC, a namespace being
    deleted). The message is the refusal as the server put it; the driver reports it on the
    resource and asks again only after a back-off (:class:`~oraculum.control.decision.Refusal`)."""


class Runtime(ABC):
    """The runtime's side of a reconcile: where child objects live and where status goes.

    Implementations translate, they do not decide: every verb does exactly one thing to the
    runtime's world, so that what is done, and in which order, is :func:`apply`'s alone.
    """

    #: How child Jobs are built (image, resources, the API that pods report progress to).
    config: JobConfig

    @property
    @abstractmethod
    def store(self) -> ObjectStore:
        """The object store the Jobs write to (opened on first use where that may fail)."""

    @abstractmethod
    def now(self) -> datetime:
        """The clock of the decision (a runtime's, so tests can set it)."""

    @abstractmethod
    async def read_store(self, read: Callable[[], T]) -> T:
        """Run a blocking store read: off the event loop where there is one."""

    @abstractmethod
    async def child_jobs(self, resource: Resource) -> dict[str, ObservedJob]:
        """The resource's Jobs (those labelled :attr:`Resource.selector`), by name."""

    @abstractmethod
    async def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        """Create a child (a Job or a ConfigMap); False when it exists already, which is not an
        error: names are deterministic, so it is this step's own object from an earlier look.
        Raises :class:`Refused` when the world refuses it for a reason asking again cannot fix."""

    @abstractmethod
    async def delete_job(self, resource: Resource, name: str) -> None:
        """Delete a child Job and its pods; a Job already gone is fine."""

    @abstractmethod
    async def suspend_job(self, resource: Resource, name: str, suspended: bool) -> None:
        """Set a child Job's ``spec.suspend``; a Job already gone is fine."""

    @abstractmethod
    async def write_status(self, resource: Resource, status: dict[str, Any]) -> None:
        """Store the whole new status (at :attr:`Resource.version` where the runtime has versions;
        a runtime may raise its own conflict error for its caller to read afresh and retry)."""

    @abstractmethod
    async def post_event(self, resource: Resource, event: Event) -> None:
        """Tell people what happened (a Kubernetes Event, a printed line)."""


@dataclass(frozen=True)
class Observed:
    """The inputs of one decision besides the resource itself."""

    jobs: dict[str, ObservedJob]
    store: ExperimentObservation | DatasetObservation | None  # None: invalid spec, or store unreadable
    store_error: str | None = None  # why the store could not be read
    refused: Refusal | None = None  # a child refused in this look (set by drive)


def describe_error(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an error, the same from one look to the next (no object addresses)."""
    text = re.sub(r" object at 0x[0-9a-fA-F]+", "", f"{type(error).__name__}: {error}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def observed_dataset(resource: Resource, spec: PreprocessingJobSpec) -> str:
    """The dataset a PreprocessingJob's work writes: the status's while it has Jobs (a running Job
    keeps the spec it was made with, see :func:`~oraculum.control.reconcile.reconcile_preprocessing`),
    the spec's otherwise."""
    status = resource.status or {}
    return str(status.get("dataset") or spec.dataset) if status.get("jobs") else spec.dataset


async def observe(resource: Resource, runtime: Runtime) -> Observed:
    """Read what the decision needs: the child Jobs, and what the store holds for the resource.

    An invalid spec is not looked up in the store (the decision reports it before anything
    else), and a store that cannot be read gives None and the reason, which the decision reports
    as a condition and retries: a store outage (the S3 client's connection and timeout errors
    included) is a state of the world, not a crash of the runtime. Any other error is a bug and
    is raised.
    """
    jobs = await runtime.child_jobs(resource)
    read: Callable[[], ExperimentObservation | DatasetObservation] | None = None
    if resource.ref.kind == "ActiveLearningExperiment":
        try:
            spec = ExperimentSpec.model_validate(resource.spec)
        except ValidationError:
            return Observed(jobs, None)
        iteration = int(resource.status.get("iteration") or 0)
        submitted = labels_submitted_from_annotations(resource.ref.annotations)
        read = lambda: observe_experiment(runtime.store, resource.ref.name, spec, iteration, submitted)  # noqa: E731
    else:
        try:
            dataset = observed_dataset(resource, PreprocessingJobSpec.model_validate(resource.spec))
        except ValidationError:
            return Observed(jobs, None)
        read = lambda: observe_dataset(runtime.store, dataset)  # noqa: E731
    try:
        return Observed(jobs, await runtime.read_store(read))
    except unreachable_errors() as error:
        log.warning("%s %s: cannot read the store: %s", resource.ref.kind, resource.ref.name, error)
        return Observed(jobs, None, store_error=describe_error(error))


def decide(resource: Resource, observed: Observed, now: datetime, config: JobConfig) -> Decision:
    """The state machine of the resource's kind, on what was observed (pure)."""
    ref, spec, status = resource.ref, resource.spec, resource.status
    extra: dict[str, Any] = {"store_error": observed.store_error, "refused": observed.refused}
    if ref.kind == "ActiveLearningExperiment":
        assert observed.store is None or isinstance(observed.store, ExperimentObservation)
        return reconcile_experiment(ref, spec, status, observed.jobs, observed.store, now, config, **extra)
    assert observed.store is None or isinstance(observed.store, DatasetObservation)
    return reconcile_preprocessing(ref, spec, status, observed.jobs, observed.store, now, config, **extra)


async def apply(resource: Resource, decision: Decision, runtime: Runtime) -> Refusal | None:
    """Carry the decision out, in the one order both runtimes rely on.

    Children first (create, then delete, then suspend or resume), so the status written next
    describes objects that exist. The status only when it changed (an unchanged look writes
    nothing, and on a cluster wakes no watcher). Events last, once the status is stored: a runtime
    that fails or retries before that posts nothing, so no Event is ever told twice.

    A child the runtime refuses (:class:`Refused`) stops the decision there, before anything else
    is done, and is returned: the decision was made believing it would exist (:func:`drive`
    decides again knowing it does not).
    """
    for obj in decision.create:
        try:
            await runtime.create(resource, obj)
        except Refused as error:
            meta = obj.get("metadata") or {}
            return Refusal(kind=str(obj.get("kind")), name=str(meta.get("name")), message=str(error))
    for name in decision.delete:
        await runtime.delete_job(resource, name)
    for name, suspended in decision.suspend.items():
        await runtime.suspend_job(resource, name, suspended)
    if decision.status != resource.status:
        await runtime.write_status(resource, decision.status)
    for event in decision.events:
        await runtime.post_event(resource, event)
    return None


async def drive(resource: Resource, runtime: Runtime) -> Decision:
    """One reconcile of ``resource``: observe, decide, apply; returns the decision carried out
    (its ``requeue_after`` and ``backoff`` say when the runtime should look again).

    When a child is refused, the same observation is decided again with the refusal in it: the
    state machine then reports it (a condition, a Warning) and asks for nothing of that step, and
    that decision is carried out instead. Objects created before the refusal (e.g. an iteration's
    ConfigMap) stay: they are asked for again with the step, and 409 finds them.
    """
    observed = await observe(resource, runtime)
    now = runtime.now()
    decision = decide(resource, observed, now, runtime.config)
    refusal = await apply(resource, decision, runtime)
    if refusal is not None:
        decision = decide(resource, replace(observed, refused=refusal), now, runtime.config)
        again = await apply(resource, decision, runtime)
        if again is not None:  # a child the first decision did not ask for: report it at the next look
            log.warning("%s %s: %s %s refused as well: %s", resource.ref.kind, resource.ref.name, again.kind,
                        again.name, again.message)
    return decision


def drive_now(resource: Resource, runtime: Runtime) -> Decision:
    """:func:`drive` for a runtime whose verbs never wait (the local runner), with no event loop.

    Such a coroutine finishes at its first step, so it is stepped once by hand: this works from
    any thread, including one beside a running loop (the API gateway runs the local runner in a
    thread), where ``asyncio.run`` would not.
    """
    return _run_to_end(drive(resource, runtime))


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("drive_now() needs a runtime whose verbs never wait; await drive() in an event loop instead")
