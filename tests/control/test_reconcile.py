"""The pure state machines: every transition of both resources and every stopping criterion.

No mock anywhere: the functions under test take plain data (what a runtime observed) and return
plain data (what to do), so each case is a row of inputs and the expected decision.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from oraculum.control.jobs import JobConfig
from oraculum.manifests import HistoryEntry, StoppingSpec
from oraculum.control.reconcile import (
    DatasetObservation,
    Decision,
    ExperimentObservation,
    IterationObservation,
    ObjectRef,
    ObservedJob,
    labels_submitted_from_annotations,
    reconcile_experiment,
    reconcile_preprocessing,
    stopping_reason,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CONFIG = JobConfig(pending_timeout_seconds=600)
REF = ObjectRef(kind="ActiveLearningExperiment", name="exp", namespace="lab", uid="uid-1", generation=1)


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset": "pool",
        "classes": [{"name": "absorption"}, {"name": "emission", "target": True}],
        "acquisition": {"batchSize": 8},
        "estimation": {"size": 2},
        "stopping": {"maxIterations": 3},
        "oracle": {"type": "simulated", "labels": "truth.csv"},
    }
    for key, value in changes.items():
        base[key] = value
    return base


HUMAN = {"type": "human"}


def it(k: int = 0, **fields: Any) -> IterationObservation:
    return IterationObservation(iteration=k, **fields)


FINISHED = dict(finished=True, batch_size=10, labelled=0)
LABELLED = dict(finished=True, batch_size=10, labelled=10)
EVALUATED = dict(finished=True, batch_size=10, labelled=10, evaluated=True, estimate=0.8, low=0.6, high=0.9,
                 predicted_targets=40, labels_total=10)


def obs(current: IterationObservation | None = None, **fields: Any) -> ExperimentObservation:
    return ExperimentObservation(current=current or it(), **fields)


def running(name: str, **fields: Any) -> ObservedJob:
    return ObservedJob(name=name, active=1, ready=1, created=T0, started=T0, **fields)


def step(status: dict[str, Any] | None = None, jobs: dict[str, ObservedJob] | None = None,
         observation: ExperimentObservation | None = None, raw_spec: dict[str, Any] | None = None,
         now: datetime = T0, generation: int = 1) -> Decision:
    ref = ObjectRef(kind="ActiveLearningExperiment", name="exp", namespace="lab", uid="uid-1", generation=generation)
    return reconcile_experiment(ref, raw_spec or spec(), status, jobs or {}, observation or obs(), now, CONFIG)


def condition(decision: Decision, type_: str) -> dict[str, Any] | None:
    return next((c for c in decision.status.get("conditions", []) if c["type"] == type_), None)


def created(decision: Decision) -> list[str]:
    """``Kind/name`` of what a decision creates; a manifest ConfigMap's spec hash reads ``<spec>``."""
    return [f"{o['kind']}/{re.sub(r'-[0-9a-f]{10}$', '-<spec>', o['metadata']['name'])}" if o["kind"] == "ConfigMap"
            else f"{o['kind']}/{o['metadata']['name']}" for o in decision.create]


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def then(decision: Decision, **kwargs: Any) -> Decision:
    """Feed a decision's status back in (the next reconcile), with new observations."""
    return step(status=decision.status, **kwargs)


# --- ActiveLearningExperiment: one row per transition ---------------------------------------------


def test_dataset_missing_keeps_it_pending_with_a_reason() -> None:
    d = step(observation=obs(dataset_ready=False, dataset_message="dataset 'pool' is not in ./data: apply a PreprocessingJob"))
    assert d.phase == "Pending" and not d.create
    assert condition(d, "DatasetReady")["reason"] == "DatasetMissing"
    assert "apply a PreprocessingJob" in d.status["message"]
    assert d.requeue_after is not None


def test_first_reconcile_creates_the_manifest_and_the_iteration_job() -> None:
    d = step()
    assert created(d) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-iter-0"]
    assert d.phase == "Training" and d.status["iteration"] == 0
    assert d.status["jobs"] == [{"name": "exp-iter-0", "purpose": "iterate", "iteration": 0, "state": "Created", "failedPods": 0}]
    assert reasons(d) == ["JobCreated"]
    assert d.status["observedGeneration"] == 1
    assert condition(d, "Progressing")["status"] == "True"


def test_a_running_job_is_waited_on_and_nothing_is_created_twice() -> None:
    first = step()
    d = then(first, jobs={"exp-iter-0": running("exp-iter-0")})
    assert d.create == [] and d.phase == "Training" and d.events == []
    assert d.status["jobs"][0]["state"] == "Running"


def test_job_failure_fails_the_experiment_with_the_jobs_reason() -> None:
    first = step()
    failed = ObservedJob(name="exp-iter-0", failed=3, failed_reason="BackoffLimitExceeded",
                         failed_message="Job has reached the specified backoff limit", created=T0)
    d = then(first, jobs={"exp-iter-0": failed})
    assert d.phase == "Failed"
    c = condition(d, "Failed")
    assert c["status"] == "True" and c["reason"] == "JobFailed"
    assert "exp-iter-0" in c["message"] and "BackoffLimitExceeded" in c["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "JobFailed")]
    # Failed is terminal for this generation: no retry, no event again
    again = then(d, jobs={"exp-iter-0": failed})
    assert again.phase == "Failed" and again.create == [] and again.delete == [] and again.events == []


def test_a_spec_change_retries_a_failed_experiment() -> None:
    first = step()
    failed = ObservedJob(name="exp-iter-0", failed=3, failed_reason="DeadlineExceeded", created=T0)
    failed_status = then(first, jobs={"exp-iter-0": failed}).status
    retry = step(status=failed_status, jobs={"exp-iter-0": failed}, generation=2)
    assert retry.delete == ["exp-iter-0"] and retry.create == []
    assert retry.phase == "Pending" and condition(retry, "Failed")["status"] == "False"
    assert "Retrying" in reasons(retry)
    # while Kubernetes deletes it, the Job is not mistaken for a new failure
    deleting = ObservedJob(name="exp-iter-0", failed=3, failed_reason="DeadlineExceeded", deleting=True)
    waiting = step(status=retry.status, jobs={"exp-iter-0": deleting}, generation=2)
    assert waiting.phase != "Failed" and waiting.create == []
    recreated = step(status=waiting.status, generation=2)
    assert created(recreated) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-iter-0"] and recreated.phase == "Training"


def test_a_vanished_job_is_reported_and_created_again() -> None:
    first = step()
    seen = then(first, jobs={"exp-iter-0": running("exp-iter-0")})
    d = then(seen, jobs={})
    assert created(d) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-iter-0"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "JobVanished")]


def test_a_finished_job_removed_by_its_ttl_is_not_a_vanished_job() -> None:
    first = step()
    d = then(first, jobs={}, observation=obs(it(0, **FINISHED)))
    assert "JobVanished" not in reasons(d)
    assert d.status["jobs"][0]["state"] == "Succeeded"


def test_a_job_that_succeeded_without_results_fails_with_a_useful_message() -> None:
    first = step()
    done = ObservedJob(name="exp-iter-0", succeeded=1, complete=True, created=T0)
    d = then(first, jobs={"exp-iter-0": done})
    assert d.phase == "Failed" and condition(d, "Failed")["reason"] == "ResultsMissing"
    assert "ORACULUM_STORE" in d.status["message"]


def test_unschedulable_job_is_reported_after_the_timeout_not_waited_on_silently() -> None:
    first = step()
    pending = ObservedJob(name="exp-iter-0", active=1, ready=0, created=T0, started=T0,
                          pending_message="Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    early = then(first, jobs={"exp-iter-0": pending}, now=T0 + timedelta(seconds=60))
    assert condition(early, "Schedulable") is None
    assert early.requeue_after == pytest.approx(541)
    late = then(first, jobs={"exp-iter-0": pending}, now=T0 + timedelta(minutes=11))
    c = condition(late, "Schedulable")
    assert c["status"] == "False" and c["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in c["message"]
    assert [(e.type, e.reason) for e in late.events] == [("Warning", "Unschedulable")]
    still = then(late, jobs={"exp-iter-0": pending}, now=T0 + timedelta(minutes=12))
    assert still.events == []  # reported once, not on every look
    scheduled = then(still, jobs={"exp-iter-0": running("exp-iter-0")}, now=T0 + timedelta(minutes=13))
    assert condition(scheduled, "Schedulable")["status"] == "True"


def test_retrying_pods_are_reported_as_they_fail() -> None:
    first = then(step(), jobs={"exp-iter-0": running("exp-iter-0")})
    d = then(first, jobs={"exp-iter-0": running("exp-iter-0", failed=1)})
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "PodFailed")]
    assert d.phase == "Training" and d.status["jobs"][0]["failedPods"] == 1


def test_simulated_oracle_answers_with_its_own_job() -> None:
    first = step()
    d = then(first, observation=obs(it(0, **FINISHED)))
    assert created(d) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-answer-0"]
    assert d.phase == "AwaitingLabels" and d.status["batch"] == {"size": 10, "labelled": 0}


def test_simulated_oracle_then_evaluation_then_next_iteration() -> None:
    s = step(observation=obs(it(0, **FINISHED))).status
    d = step(status=s, observation=obs(it(0, **LABELLED)))
    assert created(d) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-eval-0"] and d.phase == "Training"
    assert condition(d, "Progressing")["reason"] == "Evaluating"
    d = then(d, observation=obs(it(0, **EVALUATED), labels_total=10))
    assert d.status["iteration"] == 1 and d.phase == "Training" and d.requeue_after == 0
    assert d.status["history"] == [{"iteration": 0, "labels": 10, "estimate": 0.8, "low": 0.6, "high": 0.9,
                                    "predictedTargets": 40, "durations": {}}]
    assert d.status["estimate"]["summary"] == "0.800 [0.600, 0.900]"
    assert "Evaluated" in reasons(d) and d.status["jobs"] == []
    nxt = then(d, observation=obs(it(1)))
    assert created(nxt) == ["ConfigMap/exp-iter-1-<spec>", "Job/exp-iter-1"]


def test_human_oracle_waits_for_labels_and_for_the_signal() -> None:
    human = spec(oracle=HUMAN)
    s = step(raw_spec=human, observation=obs(it(0, **FINISHED))).status
    d = step(status=s, raw_spec=human, observation=obs(it(0, finished=True, batch_size=10, labelled=4)))
    assert d.phase == "AwaitingLabels" and d.create == [] and "4/10 labelled" in d.status["message"]
    assert d.status["batch"] == {"size": 10, "labelled": 4}
    # a complete batch is not enough: the oracle must submit it
    d = step(status=d.status, raw_spec=human, observation=obs(it(0, **LABELLED)))
    assert d.phase == "AwaitingLabels" and d.create == [] and "submit" in d.status["message"]
    # and a submit signal for an incomplete batch is reported, not acted on
    partial = step(status=s, raw_spec=human, observation=obs(it(0, finished=True, batch_size=10, labelled=7), labels_submitted=0))
    assert partial.create == [] and condition(partial, "LabelsComplete")["reason"] == "LabelsIncomplete"
    assert ("Warning", "LabelsIncomplete") in [(e.type, e.reason) for e in partial.events]
    # a signal for an older iteration does not count
    old = step(status=d.status, raw_spec=human, observation=obs(it(0, **LABELLED), labels_submitted=-1))
    assert old.create == []
    # both: evaluate
    go = step(status=d.status, raw_spec=human, observation=obs(it(0, **LABELLED), labels_submitted=0))
    assert created(go) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-eval-0"]
    assert condition(go, "LabelsComplete") is None


def test_awaiting_labels_event_is_posted_once() -> None:
    human = spec(oracle=HUMAN)
    first = step(raw_spec=human, observation=obs(it(0, **FINISHED)))
    assert "AwaitingLabels" in reasons(first)
    again = step(status=first.status, raw_spec=human, observation=obs(it(0, finished=True, batch_size=10, labelled=3)))
    assert again.events == []


@pytest.mark.parametrize(
    ("stopping", "history_estimate", "expected"),
    [
        ({"maxIterations": 1}, 0.8, "MaxIterations"),
        ({"maxIterations": 5, "labelBudget": 15}, 0.8, "LabelBudget"),
        ({"maxIterations": 5, "targetPrecision": 0.55}, 0.8, "TargetReached"),
        ({"maxIterations": 5, "targetPrecision": 0.95}, 0.8, None),
    ],
)
def test_stopping_criteria_end_the_loop_with_their_reason(stopping: dict[str, Any], history_estimate: float,
                                                          expected: str | None) -> None:
    s = spec(stopping=stopping)
    d = step(raw_spec=s, observation=obs(it(0, **EVALUATED), labels_total=10))
    if expected is None:
        assert d.phase == "Training" and d.status["iteration"] == 1
    else:
        assert d.phase == "Succeeded" and condition(d, "Succeeded")["reason"] == expected
        assert [e.reason for e in d.events] == ["Evaluated", expected]
        assert d.create == [] and d.status["iteration"] == 0
        # terminal: nothing more happens, nothing is posted twice
        again = step(status=d.status, raw_spec=s, observation=obs(it(0, **EVALUATED), labels_total=10))
        assert again.phase == "Succeeded" and again.events == [] and again.create == []


def test_raising_max_iterations_continues_a_succeeded_experiment() -> None:
    done = step(raw_spec=spec(stopping={"maxIterations": 1}), observation=obs(it(0, **EVALUATED)))
    assert done.phase == "Succeeded"
    more = step(status=done.status, raw_spec=spec(stopping={"maxIterations": 4}), observation=obs(it(0, **EVALUATED)),
                generation=2)
    assert more.phase == "Training" and more.status["iteration"] == 1
    assert condition(more, "Succeeded")["status"] == "False"


def test_suspend_suspends_the_running_job_and_resume_resumes_it() -> None:
    first = then(step(), jobs={"exp-iter-0": running("exp-iter-0")})
    paused = step(status=first.status, raw_spec=spec(suspend=True), jobs={"exp-iter-0": running("exp-iter-0")}, generation=2)
    assert paused.suspend == {"exp-iter-0": True} and paused.phase == "Suspended"
    assert condition(paused, "Suspended")["status"] == "True" and "Suspended" in reasons(paused)
    suspended_job = ObservedJob(name="exp-iter-0", suspended=True, created=T0)
    still = step(status=paused.status, raw_spec=spec(suspend=True), jobs={"exp-iter-0": suspended_job}, generation=2)
    assert still.suspend == {} and still.events == [] and still.phase == "Suspended"
    resumed = step(status=still.status, raw_spec=spec(), jobs={"exp-iter-0": suspended_job}, generation=3)
    assert resumed.suspend == {"exp-iter-0": False} and "Resumed" in reasons(resumed)
    assert condition(resumed, "Suspended")["status"] == "False"


def test_suspend_starts_no_new_job_and_loses_no_progress() -> None:
    d = step(raw_spec=spec(suspend=True))
    assert d.create == [] and d.phase == "Suspended"
    evaluated = step(raw_spec=spec(suspend=True), observation=obs(it(0, **EVALUATED)))
    assert evaluated.create == [] and evaluated.phase == "Suspended" and evaluated.status["history"]
    human = step(raw_spec=spec(suspend=True, oracle=HUMAN), observation=obs(it(0, **FINISHED)))
    assert human.phase == "Suspended" and human.status["batch"]["size"] == 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"acquisition": {"batchSize": -5}}, "acquisition.batchSize"),
        ({"acquisition": {"strategy": "psychic"}}, "acquisition.strategy"),
        ({"acquisition": {"composition": {"uncertainty": 0.5}}}, "composition shares must sum to 1"),
        ({"classes": [{"name": "a"}, {"name": "b"}]}, "at least one class must have target: true"),
        ({"dataset": None}, "dataset"),
    ],
)
def test_an_invalid_spec_fails_with_a_message_naming_the_field(change: dict[str, Any], field: str) -> None:
    raw = spec(**change)
    if change.get("dataset", 0) is None:
        del raw["dataset"]
    d = step(raw_spec=raw)
    assert d.phase == "Failed" and d.create == []
    assert condition(d, "SpecValid")["reason"] == "InvalidSpec" and condition(d, "Failed")["reason"] == "InvalidSpec"
    assert field in d.status["message"]
    fixed = step(status=d.status, generation=2)
    assert fixed.phase == "Training" and condition(fixed, "SpecValid")["status"] == "True"


def test_an_unreachable_store_is_reported_and_retried() -> None:
    ref = ObjectRef(kind="ActiveLearningExperiment", name="exp", namespace="lab", uid="uid-1")
    d = reconcile_experiment(ref, spec(), None, {}, None, T0, CONFIG, store_error="ConnectionRefusedError: refused")
    assert d.create == [] and condition(d, "StoreReachable")["status"] == "False" and d.backoff
    assert "ConnectionRefusedError: refused" in condition(d, "StoreReachable")["message"]


@pytest.mark.parametrize(
    "scenario",
    ["new", "running", "awaiting", "evaluated", "failed", "suspended"],
)
def test_reconcile_is_idempotent(scenario: str) -> None:
    """The second look at an unchanged world changes nothing and posts nothing (restart safety)."""
    cases = {
        "new": (spec(), {}, obs()),
        "running": (spec(), {"exp-iter-0": running("exp-iter-0")}, obs()),
        "awaiting": (spec(oracle=HUMAN), {}, obs(it(0, **FINISHED))),
        "evaluated": (spec(stopping={"maxIterations": 1}), {}, obs(it(0, **EVALUATED))),
        "failed": (spec(), {"exp-iter-0": ObservedJob(name="exp-iter-0", failed_reason="BackoffLimitExceeded")}, obs()),
        "suspended": (spec(suspend=True), {}, obs()),
    }
    raw, jobs, observation = cases[scenario]
    first = step(raw_spec=raw, jobs=jobs, observation=observation)
    if scenario == "running":  # the job exists from the first look on
        first = step(status=first.status, raw_spec=raw, jobs=jobs, observation=observation)
    second = step(status=first.status, raw_spec=raw, jobs=jobs, observation=observation)
    if scenario == "new":
        # the Job was asked for but is not seen yet: asking again is the idempotent create (409)
        assert created(second) == created(first)
    else:
        assert second.create == []
    assert second.events == [] and second.status == first.status


def test_labels_submitted_annotation_is_parsed_leniently() -> None:
    assert labels_submitted_from_annotations({"oraculum.dev/labels-submitted": "3"}) == 3
    assert labels_submitted_from_annotations({"oraculum.dev/labels-submitted": "x"}) is None
    assert labels_submitted_from_annotations({}) is None


# --- stopping criteria ---------------------------------------------------------------------


def h(k: int, estimate: float | None, low: float | None = None, labels: int = 0) -> HistoryEntry:
    return HistoryEntry(iteration=k, estimate=estimate, low=low, high=None, labels=labels)


@pytest.mark.parametrize(
    ("stopping", "history", "labels", "next_batch", "reason"),
    [
        ({"maxIterations": 3}, [h(0, None), h(1, 0.5)], 20, 10, None),
        ({"maxIterations": 3}, [h(0, None), h(1, 0.5), h(2, 0.6)], 30, 10, "MaxIterations"),
        ({"maxIterations": 9, "labelBudget": 100}, [h(0, 0.5)], 90, 10, None),
        ({"maxIterations": 9, "labelBudget": 100}, [h(0, 0.5)], 91, 10, "LabelBudget"),
        ({"maxIterations": 9, "targetPrecision": 0.9}, [h(0, 0.95, 0.89)], 10, 10, None),
        ({"maxIterations": 9, "targetPrecision": 0.9}, [h(0, 0.95, 0.9)], 10, 10, "TargetReached"),
        ({"maxIterations": 9, "plateau": {"iterations": 2, "tolerance": 0.01}}, [h(0, 0.5), h(1, 0.7), h(2, 0.705)], 0, 10, None),
        ({"maxIterations": 9, "plateau": {"iterations": 2, "tolerance": 0.01}},
         [h(0, 0.5), h(1, 0.7), h(2, 0.705), h(3, 0.69)], 0, 10, "Plateau"),
        ({"maxIterations": 9, "plateau": {"iterations": 2, "tolerance": 0.01}},
         [h(0, 0.5), h(1, 0.7), h(2, 0.705), h(3, 0.75)], 0, 10, None),
        # iterations without an estimate (a cold start) neither count for nor against a plateau
        ({"maxIterations": 9, "plateau": {"iterations": 1, "tolerance": 0.0}}, [h(0, None), h(1, 0.5), h(2, None)], 0, 10, None),
        # several at once: the first in order names the reason, the message names all
        ({"maxIterations": 1, "targetPrecision": 0.5}, [h(0, 0.9, 0.8)], 0, 10, "TargetReached"),
    ],
)
def test_stopping_reason(stopping: dict[str, Any], history: list[HistoryEntry], labels: int, next_batch: int,
                         reason: str | None) -> None:
    found = stopping_reason(StoppingSpec.model_validate(stopping), history, labels, next_batch)
    assert (found.reason if found else None) == reason
    if found and len(stopping) > 1 and reason == "TargetReached" and stopping.get("maxIterations") == 1:
        assert "also 1 of 1 iterations ran" in found.message


# --- PreprocessingJob ------------------------------------------------------------------------

PPJ = ObjectRef(kind="PreprocessingJob", name="lamost", namespace="lab", uid="uid-2")
PPJ_SPEC = {"source": {"url": "s3://archive/dr2/"}, "dataset": "lamost-dr2", "shards": 4, "parallelism": 2}


def ppj(status: dict[str, Any] | None = None, jobs: dict[str, ObservedJob] | None = None,
        observation: DatasetObservation | None = None, raw: dict[str, Any] | None = None, generation: int = 1) -> Decision:
    ref = ObjectRef(kind="PreprocessingJob", name="lamost", namespace="lab", uid="uid-2", generation=generation)
    return reconcile_preprocessing(ref, raw or PPJ_SPEC, status, jobs or {}, observation or DatasetObservation(), T0, CONFIG)


def test_preprocessing_creates_one_indexed_job() -> None:
    d = ppj()
    assert created(d) == ["Job/lamost-preprocess"] and d.phase == "Pending"
    job = d.create[0]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4 and job["spec"]["parallelism"] == 2
    assert d.status["shards"] == 4 and d.status["dataset"] == "lamost-dr2"


def test_preprocessing_counts_progress_from_the_store_and_succeeds_on_the_index() -> None:
    first = ppj()
    job = ObservedJob(name="lamost-preprocess", active=2, ready=2, succeeded=1, completions=4, created=T0, started=T0)
    mid = ppj(first.status, {"lamost-preprocess": job}, DatasetObservation(shards_done=1, processed=900, rejected=12))
    assert mid.phase == "Running" and mid.status["shardsDone"] == 1 and mid.status["processed"] == 900
    assert mid.status["rejected"] == 12 and "1/4 shards" in mid.status["message"]
    done = ppj(mid.status, {}, DatasetObservation(complete=True, shards_done=4, processed=3600, rejected=40))
    assert done.phase == "Succeeded" and done.status["shardsDone"] == 4 and "Completed" in reasons(done)
    assert ppj(done.status, {}, DatasetObservation(complete=True, shards_done=4, processed=3600)).events == []


def test_preprocessing_failure_and_suspension() -> None:
    first = ppj()
    failed = ObservedJob(name="lamost-preprocess", failed=3, failed_reason="FailedIndexes",
                         failed_message="Job has failed indexes: 2")
    d = ppj(first.status, {"lamost-preprocess": failed})
    assert d.phase == "Failed" and "FailedIndexes" in d.status["message"]
    job = ObservedJob(name="lamost-preprocess", active=2, ready=2, created=T0, started=T0)
    paused = ppj(first.status, {"lamost-preprocess": job}, raw={**PPJ_SPEC, "suspend": True}, generation=2)
    assert paused.suspend == {"lamost-preprocess": True} and paused.phase == "Suspended"


def test_preprocessing_invalid_spec_names_the_problem() -> None:
    d = ppj(raw={"source": {}, "dataset": "x"})
    assert d.phase == "Failed" and "exactly one of source.url" in d.status["message"]


# --- issue 15: what a real cluster exposed ------------------------------------------------------


def mounted_configmap(job: dict[str, Any]) -> str:
    """The ConfigMap a Job's pods mount (the iteration's experiment manifest)."""
    return next(v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v)


def test_a_retry_after_a_spec_change_runs_with_the_new_spec() -> None:
    """Defect 1: the retried iteration's pods must read the NEW spec, not the ConfigMap of the failed
    attempt (which a create answered 409 used to keep for ever)."""
    first = step()
    old_configmap, old_job = first.create
    failed = ObservedJob(name="exp-iter-0", failed=3, failed_reason="BackoffLimitExceeded", created=T0)
    failed_status = then(first, jobs={"exp-iter-0": failed}).status
    changed = spec(model={"epochs": 20})
    retry = step(status=failed_status, jobs={"exp-iter-0": failed}, raw_spec=changed, generation=2)
    assert retry.delete == ["exp-iter-0"]
    recreated = step(status=retry.status, raw_spec=changed, generation=2)
    configmap, job = recreated.create
    assert (configmap["kind"], job["kind"]) == ("ConfigMap", "Job")
    assert mounted_configmap(job) == configmap["metadata"]["name"] != old_configmap["metadata"]["name"]
    assert mounted_configmap(old_job) == old_configmap["metadata"]["name"]
    manifest = yaml.safe_load(configmap["data"]["experiment.yaml"])
    assert manifest["spec"]["model"]["epochs"] == 20
    # the same spec asks for the same ConfigMap (creation stays idempotent: 409 = ours, same content)
    assert step(status=retry.status, raw_spec=changed, generation=2).create[0] == configmap


def test_a_recreated_resource_of_the_same_name_gets_its_own_manifest() -> None:
    """Defect 5, the ConfigMap side: a new resource with the old one's name and spec must not mount
    the old one's ConfigMap (the garbage collector deletes that one with its owner)."""
    mine = step().create[0]
    other = reconcile_experiment(ObjectRef(kind="ActiveLearningExperiment", name="exp", namespace="lab", uid="uid-0"),
                                 spec(), None, {}, obs(), T0, CONFIG).create[0]
    assert mine["metadata"]["name"] != other["metadata"]["name"]
    assert mine["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def job_manifest(name: str, owner_uid: str | None, **status: Any) -> dict[str, Any]:
    owners = [] if owner_uid is None else [{"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
                                            "name": "exp", "uid": owner_uid, "controller": True}]
    return {"metadata": {"name": name, "ownerReferences": owners, "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": {}, "status": status}


FAILED_JOB = {"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                           "message": "Job has reached the specified backoff limit"}]}


@pytest.mark.parametrize("owner", ["uid-0", None], ids=["owned-by-the-old-resource", "orphaned"])
def test_a_job_left_by_an_earlier_resource_of_the_same_name_is_not_adopted(owner: str | None) -> None:
    """Defect 5: a resource deleted and created again with the same name finds the old one's Jobs by
    their labels; owned by another uid (or orphaned), they are not its own: an old failed Job must
    not fail it. The stale Job is deleted (its name is needed) and the step starts afresh."""
    stale = ObservedJob.from_manifest(job_manifest("exp-iter-0", owner, **FAILED_JOB))
    d = step(jobs={"exp-iter-0": stale})
    assert d.phase != "Failed" and condition(d, "Failed") is None
    assert d.delete == ["exp-iter-0"] and d.create == []
    assert ("Normal", "StaleJob") in [(e.type, e.reason) for e in d.events]
    # while Kubernetes deletes it, it is waited for, not deleted again
    deleting = ObservedJob.from_manifest({**job_manifest("exp-iter-0", owner, **FAILED_JOB),
                                          "metadata": {**job_manifest("exp-iter-0", owner)["metadata"],
                                                       "deletionTimestamp": "2026-01-01T12:00:01Z"}})
    waiting = then(d, jobs={"exp-iter-0": deleting})
    assert waiting.phase != "Failed" and waiting.delete == [] and waiting.create == [] and waiting.events == []
    fresh = then(waiting, jobs={})
    assert created(fresh) == ["ConfigMap/exp-iter-0-<spec>", "Job/exp-iter-0"] and fresh.phase == "Training"
    # its own Job, failed, does fail it
    own = ObservedJob.from_manifest(job_manifest("exp-iter-0", "uid-1", **FAILED_JOB))
    assert then(fresh, jobs={"exp-iter-0": own}).phase == "Failed"


def _digest(raw: dict[str, Any]) -> str:
    from oraculum.control.jobs import spec_digest
    from oraculum.manifests import PreprocessingJobSpec

    return spec_digest(PreprocessingJobSpec.model_validate(raw))


DONE_JOB = ObservedJob(name="lamost-preprocess", succeeded=4, completions=4, complete=True, created=T0, started=T0,
                       spec_hash=_digest(PPJ_SPEC))
DONE_DATASET = DatasetObservation(complete=True, shards_done=4, processed=3600, rejected=40)


def succeeded_ppj() -> Decision:
    done = ppj(ppj().status, {"lamost-preprocess": DONE_JOB}, DONE_DATASET)
    assert done.phase == "Succeeded"
    return done


@pytest.mark.parametrize("job_still_there", [True, False], ids=["job-kept", "job-gone-after-its-ttl"])
@pytest.mark.parametrize("change", [{"dataset": "lamost-dr2-v2"}, {"grid": {"points": 2000}}, {"shards": 8}],
                         ids=["dataset", "grid", "shards"])
def test_editing_a_succeeded_preprocessing_job_is_reported_not_failed(change: dict[str, Any], job_still_there: bool) -> None:
    """Defect 4: a spec change after success used to give a terminal ResultsMissing failure (the old,
    complete Job against the new dataset's missing index). A finished PreprocessingJob is final:
    the change is reported (SpecApplied=False, a Warning once) and the status keeps describing the
    dataset that was written; docs/operator.md says to delete and re-apply."""
    done = succeeded_ppj()
    edited = {**PPJ_SPEC, **change}
    jobs = {"lamost-preprocess": DONE_JOB} if job_still_there else {}
    d = ppj(done.status, jobs, DatasetObservation(), raw=edited, generation=2)
    assert d.phase == "Succeeded" and condition(d, "Failed") is None
    assert d.create == [] and d.delete == []
    c = condition(d, "SpecApplied")
    assert c["status"] == "False" and c["reason"] == "SpecChangedAfterCompletion"
    assert "delete" in c["message"] and "apply it again" in c["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "SpecChangedAfterCompletion")]
    assert (d.status["dataset"], d.status["shards"], d.status["shardsDone"], d.status["processed"]) == (
        "lamost-dr2", 4, 4, 3600)
    # reported once, and it stays so (also once the Job is gone)
    again = ppj(d.status, {}, DatasetObservation(), raw=edited, generation=2)
    assert again.events == [] and again.status == d.status and again.create == []


def test_a_succeeded_preprocessing_job_edited_back_is_not_reported() -> None:
    done = succeeded_ppj()
    # suspend is no change to the work, and the same spec again (e.g. an edit reverted) is none either
    same = ppj(done.status, {"lamost-preprocess": DONE_JOB}, DONE_DATASET, raw={**PPJ_SPEC, "suspend": True}, generation=3)
    assert same.phase == "Succeeded" and condition(same, "SpecApplied") is None and same.events == []


def test_changing_shards_mid_run_is_reported_and_the_status_follows_the_running_job() -> None:
    """Defect 4: the running Indexed Job keeps the shard count it was made with; the status used to
    report the new count (and, at the end, "8/8 shards done" for a dataset of 4)."""
    first = ppj()
    job = ObservedJob(name="lamost-preprocess", active=2, ready=2, succeeded=1, completions=4, created=T0, started=T0)
    more = {**PPJ_SPEC, "shards": 8}
    mid = ppj(first.status, {"lamost-preprocess": job}, DatasetObservation(shards_done=1, processed=900), raw=more,
              generation=2)
    assert mid.phase == "Running" and mid.create == [] and mid.delete == []
    assert mid.status["shards"] == 4 and mid.status["shardsDone"] == 1 and "1/4 shards" in mid.status["message"]
    c = condition(mid, "SpecApplied")
    assert c["status"] == "False" and c["reason"] == "SpecChangedWhileRunning"
    assert "4" in c["message"] and "8" in c["message"] and "shards" in c["message"]
    assert [(e.type, e.reason) for e in mid.events] == [("Warning", "SpecChangedWhileRunning")]
    assert ppj(mid.status, {"lamost-preprocess": job}, DatasetObservation(shards_done=1, processed=900), raw=more,
               generation=2).events == []
    done = ppj(mid.status, {}, DatasetObservation(complete=True, shards_done=4, processed=3600), raw=more, generation=2)
    assert done.phase == "Succeeded"
    assert (done.status["shards"], done.status["shardsDone"]) == (4, 4)
    assert condition(done, "SpecApplied")["status"] == "False"  # the dataset has 4 shards, not the 8 asked for


def test_job_outcomes_are_told_once_for_the_operators_metrics() -> None:
    def told(d: Decision) -> list[tuple[str, str]]:
        return [(o.purpose, o.outcome) for o in d.outcomes]

    first = step()
    running_ = then(first, jobs={"exp-iter-0": running("exp-iter-0")})
    assert told(first) == told(running_) == []
    finished = then(running_, observation=obs(it(0, **FINISHED)))
    assert told(finished) == [("iterate", "succeeded")]
    assert told(then(finished, observation=obs(it(0, **FINISHED)))) == []
    # a Job that ran and finished between two looks (never seen running) counts too, once
    quick = then(first, jobs={"exp-iter-0": ObservedJob(name="exp-iter-0", succeeded=1, complete=True)},
                 observation=obs(it(0, **FINISHED)))
    assert told(quick) == [("iterate", "succeeded")]
    failed = then(running_, jobs={"exp-iter-0": ObservedJob(name="exp-iter-0", failed=3, failed_reason="BackoffLimitExceeded")})
    assert told(failed) == [("iterate", "failed")]
    assert told(then(failed, jobs={"exp-iter-0": ObservedJob(name="exp-iter-0", failed=3,
                                                             failed_reason="BackoffLimitExceeded")})) == []
    vanished = then(running_, jobs={})
    assert told(vanished) == [("iterate", "vanished")]
