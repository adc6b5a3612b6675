"""The one driver of both runtimes: "observe, decide, apply", and that a change to it reaches both.

The first tests run the driver against a runtime that records what it is asked to do, so the
order of the verbs and what is (not) read are rows of plain data. The last ones change the
driver in one place (its ``decide``) and run the same resource through the real operator (kopf
and the emulated API server of ``tests/support``) and through the local runner of ``oraculum
run``: both must show the same status and Events, with the change and without it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from oraculum.control import driver
from oraculum.control.decision import Decision, Event, ObjectRef, ObservedJob
from oraculum.control.driver import CHILD_LABELS, Observed, Resource, Runtime, drive, drive_now, owner_of
from oraculum.control.jobs import JobConfig
from oraculum.control.runner import LocalRunner
from oraculum.manifests import parse_manifest
from oraculum.settings import Settings
from oraculum.store import LocalStore, ObjectStore, StoreError
from tests.support.operator_harness import ALE, CONFIGMAPS, NS, cluster

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SPEC: dict[str, Any] = {
    "dataset": "pool",  # never made: the experiment waits for it, and no Job runs anywhere
    "classes": [{"name": "absorption"}, {"name": "emission", "target": True}],
    "model": {"preset": "tiny"},
    "acquisition": {"batchSize": 8},
    "estimation": {"size": 2},
    "stopping": {"maxIterations": 3},
    "oracle": {"type": "simulated", "labels": "truth.csv"},
}


# --- the driver against a recording runtime -----------------------------------------------------


class Recorder(Runtime):
    """A runtime that keeps a log of the verbs it is asked for, in order."""

    def __init__(self, store: ObjectStore, jobs: dict[str, ObservedJob] | None = None,
                 store_error: Exception | None = None) -> None:
        self._store = store
        self.jobs = jobs or {}
        self.store_error = store_error
        self.config = JobConfig()
        self.calls: list[tuple[Any, ...]] = []

    @property
    def store(self) -> ObjectStore:
        return self._store

    def now(self) -> datetime:
        return T0

    async def read_store(self, read: Callable[[], Any]) -> Any:
        self.calls.append(("read_store",))
        if self.store_error is not None:
            raise self.store_error
        return read()

    async def child_jobs(self, resource: Resource) -> dict[str, ObservedJob]:
        self.calls.append(("child_jobs", resource.selector))
        return dict(self.jobs)

    async def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        return True

    async def delete_job(self, resource: Resource, name: str) -> None:
        self.calls.append(("delete_job", name))

    async def suspend_job(self, resource: Resource, name: str, suspended: bool) -> None:
        self.calls.append(("suspend_job", name, suspended))

    async def write_status(self, resource: Resource, status: dict[str, Any]) -> None:
        self.calls.append(("write_status", status.get("phase")))

    async def post_event(self, resource: Resource, event: Event) -> None:
        self.calls.append(("post_event", event.reason))


def experiment(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Resource:
    ref = ObjectRef(kind="ActiveLearningExperiment", name="exp", namespace="lab", uid="uid-1")
    return Resource(ref=ref, spec=SPEC if spec is None else spec, status=status or {})


def verbs(recorder: Recorder) -> list[str]:
    return [call[0] for call in recorder.calls]


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_apply_carries_a_decision_out_children_first_then_status_then_events(store: LocalStore,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    decision = Decision(status={"phase": "Training"}, create=[{"kind": "Job", "metadata": {"name": "exp-iter-0"}}],
                        delete=["exp-eval-0"], suspend={"exp-answer-0": True},
                        events=[Event("Normal", "JobCreated", "created"), Event("Warning", "JobVanished", "gone")])
    monkeypatch.setattr(driver, "decide", lambda *_: copy.deepcopy(decision))
    recorder = Recorder(store)
    assert drive_now(experiment(), recorder) == decision
    assert recorder.calls[2:] == [("create", "Job", "exp-iter-0"), ("delete_job", "exp-eval-0"),
                                  ("suspend_job", "exp-answer-0", True), ("write_status", "Training"),
                                  ("post_event", "JobCreated"), ("post_event", "JobVanished")]


@pytest.mark.parametrize(("row", "spec", "store_error", "expected_verbs", "condition"), [
    # a valid spec: the Jobs and the store are read, the dataset is missing, the status written
    ("waits for its dataset", SPEC, None,
     ["child_jobs", "read_store", "write_status"], ("DatasetReady", "False", "DatasetMissing")),
    # an invalid spec is reported before the store is asked anything
    ("invalid spec", {**SPEC, "acquisition": {"batchSize": -1}}, None,
     ["child_jobs", "write_status", "post_event"], ("SpecValid", "False", "InvalidSpec")),
    # a store that cannot be read is a condition to report and retry, not a crash
    ("store unreadable", SPEC, StoreError("connection refused"),
     ["child_jobs", "read_store", "write_status"], ("StoreReachable", "False", "StoreUnavailable")),
    ("store folder unreadable", SPEC, OSError("permission denied"),
     ["child_jobs", "read_store", "write_status"], ("StoreReachable", "False", "StoreUnavailable")),
])
def test_observe_reads_what_the_decision_needs(store: LocalStore, row: str, spec: dict[str, Any],
                                               store_error: Exception | None, expected_verbs: list[str],
                                               condition: tuple[str, str, str]) -> None:
    recorder = Recorder(store, store_error=store_error)
    decision = drive_now(experiment(spec), recorder)
    assert verbs(recorder) == expected_verbs, row
    assert recorder.calls[0] == ("child_jobs", ("oraculum.dev/experiment", "exp"))
    found = {(c["type"], c["status"], c["reason"]) for c in decision.status["conditions"]}
    assert condition in found, row


def test_an_unchanged_status_is_not_written_again(store: LocalStore) -> None:
    first = drive_now(experiment(), Recorder(store))
    recorder = Recorder(store)
    again = drive_now(experiment(status=first.status), recorder)
    assert again.status == first.status and "write_status" not in verbs(recorder)


def test_the_driver_dispatches_preprocessing_jobs_to_their_own_machine(store: LocalStore) -> None:
    ref = ObjectRef(kind="PreprocessingJob", name="lamost", namespace="lab", uid="uid-2")
    resource = Resource(ref=ref, spec={"source": {"url": "s3://archive/dr2/"}, "dataset": "dr2", "shards": 2})
    recorder = Recorder(store)
    decision = drive_now(resource, recorder)
    assert recorder.calls[0] == ("child_jobs", ("oraculum.dev/preprocessingjob", "lamost"))
    assert ("create", "Job", "lamost-preprocess") in recorder.calls and decision.phase == "Pending"


def test_child_labels_name_the_owner_back() -> None:
    for kind, label in CHILD_LABELS.items():
        assert owner_of({label: "x", "other": "y"}) == (kind, "x")
    assert owner_of({"app": "x"}) is None


def test_drive_now_refuses_a_runtime_that_waits(store: LocalStore) -> None:
    class Waiting(Recorder):
        async def child_jobs(self, resource: Resource) -> dict[str, ObservedJob]:
            import asyncio

            await asyncio.sleep(0)
            return {}

    with pytest.raises(RuntimeError, match="never wait"):
        drive_now(experiment(), Waiting(store))


# --- one change in the driver, both runtimes ----------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a runtime shows of the resource after a few looks: comparable across runtimes."""

    status: dict[str, Any]
    events: frozenset[tuple[str, str, str]]
    configmaps: frozenset[str]


def _comparable(status: dict[str, Any], store_url: str) -> dict[str, Any]:
    """The status without what differs by nature between runtimes: the store's path in messages
    and the transition times of conditions."""
    status = copy.deepcopy(status)
    for condition in status.get("conditions", []):
        condition.pop("lastTransitionTime", None)
        condition["message"] = condition.get("message", "").replace(store_url, "<store>")
    status["message"] = status.get("message", "").replace(store_url, "<store>")
    return status


async def through_operator(tmp_path: Path) -> Seen:
    """The experiment on the emulated cluster, reconciled by the real kopf operator."""
    async with cluster(tmp_path / "cluster") as c:
        async with c.operator(poll_interval=0.2) as reconciler:
            c.create(ALE, "exp", SPEC)
            await c.wait(lambda: c.status(ALE, "exp").get("phase"), what="a status")
            # a reconcile of one resource waits for the one in progress (a lock per resource):
            # once this one returns, the earlier ones have posted their Events
            await reconciler.reconcile("ActiveLearningExperiment", NS, "exp")
            status = c.status(ALE, "exp")
        events = frozenset((t, r, m.replace(c.store.url, "<store>")) for t, r, m in c.events("exp"))
        configmaps = frozenset(cm["metadata"]["name"] for cm in c.api.list(CONFIGMAPS, NS))
        return Seen(_comparable(status, c.store.url), events, configmaps)


_EVENT_LINE = re.compile(r"^  ([-!]) ale/exp: (\w+): (.*)$")


def through_local(tmp_path: Path) -> Seen:
    """The same experiment in ``oraculum run``'s runner, for a few passes."""
    store = LocalStore(tmp_path / "local")
    lines: list[str] = []
    runner = LocalRunner(store, Settings(store=store.url), echo=lines.append, poll_seconds=0.05)
    manifest = parse_manifest({"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
                               "metadata": {"name": "exp"}, "spec": SPEC})
    result = runner.run([manifest], timeout=0.5)
    events = frozenset(({"-": "Normal", "!": "Warning"}[m.group(1)], m.group(2), m.group(3).replace(store.url, "<store>"))
                       for line in lines if (m := _EVENT_LINE.match(line)))
    return Seen(_comparable(result.statuses["ale/exp"], store.url), events, frozenset(runner.jobs.configmaps))


def with_a_fix(decide: Callable[..., Decision]) -> Callable[..., Decision]:
    """A stand-in for a fix to the reconcile: one change, made in the driver only."""

    def fixed(resource: Resource, observed: Observed, now: datetime, config: JobConfig) -> Decision:
        decision = decide(resource, observed, now, config)
        decision.status["message"] = f"fixed: {decision.status['message']}"
        decision.events.append(Event("Normal", "Fixed", f"{resource.ref.kind} {resource.ref.name} went through the driver"))
        return decision

    return fixed


@pytest.mark.asyncio
async def test_a_change_to_the_driver_reaches_the_operator_and_the_local_runner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before_operator, before_local = await through_operator(tmp_path / "a"), through_local(tmp_path / "a")
    assert before_operator == before_local  # the same decision, carried out the same way
    assert before_local.status["phase"] == "Pending" and not before_local.events

    monkeypatch.setattr(driver, "decide", with_a_fix(driver.decide))
    after_operator, after_local = await through_operator(tmp_path / "b"), through_local(tmp_path / "b")
    assert after_operator == after_local
    assert after_local.status["message"] == f"fixed: {before_local.status['message']}"
    assert after_local.events == {("Normal", "Fixed", "ActiveLearningExperiment exp went through the driver")}


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exp-probe"}, "data": {"k": "v"}}


@pytest.mark.asyncio
@pytest.mark.parametrize(("row", "decision", "configmaps"), [
    ("a status and a Warning", Decision(status={"phase": "Pending", "message": "looked"},
                                        events=[Event("Warning", "Probe", "looked at exp")]), set()),
    ("a child created", Decision(status={"phase": "Training", "message": "made"}, create=[CONFIGMAP]), {"exp-probe"}),
    ("children already gone", Decision(status={"phase": "Training", "message": "tidy"}, delete=["exp-iter-9"],
                                       suspend={"exp-iter-8": True}), set()),
])
async def test_a_table_of_decisions_is_carried_out_alike_by_both_runtimes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: str, decision: Decision, configmaps: set[str]) -> None:
    monkeypatch.setattr(driver, "decide", lambda *_: copy.deepcopy(decision))
    operator, local = await through_operator(tmp_path), through_local(tmp_path)
    assert operator == local, row
    assert local.status == decision.status and local.configmaps == configmaps
    assert local.events == {(e.type, e.reason, e.message) for e in decision.events}


@pytest.mark.asyncio
async def test_drive_awaits_in_an_event_loop_too(store: LocalStore) -> None:
    assert (await drive(experiment(), Recorder(store))).phase == "Pending"


# --- issue 15: a refused Job, an unreachable store ------------------------------------------------


class Refusing(Recorder):
    """A runtime whose API server refuses to create Jobs (422/403 on a cluster), until told not to."""

    def __init__(self, store: ObjectStore, clock: datetime = T0) -> None:
        super().__init__(store)
        self.clock = clock
        self.refuse = True

    def now(self) -> datetime:
        return self.clock

    async def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        from oraculum.control.driver import Refused

        if self.refuse and obj["kind"] == "Job":
            self.calls.append(("refused", obj["kind"], obj["metadata"]["name"]))
            raise Refused('Job.batch "exp-iter-0" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
                          '"Always": supported values: "OnFailure", "Never"')
        return await super().create(resource, obj)


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def test_a_refused_job_is_reported_on_the_resource_and_retried_with_a_back_off(store: LocalStore) -> None:
    """Defect 2: a Job the API server refuses used to leave no trace but the operator's log (and be
    tried again on every poll). Now: a JobCreated=False condition with the server's message, one
    Warning Event, phase Pending, and a back-off that grows while the refusal lasts."""
    from datetime import timedelta

    store.put_bytes("datasets/pool/index.json", b"{}")
    runtime = Refusing(store)
    first = drive_now(experiment(), runtime)
    c = _condition(first.status, "JobCreated")
    assert c is not None and (c["status"], c["reason"]) == ("False", "JobRejected")
    assert "restartPolicy: Unsupported value" in c["message"] and "exp-iter-0" in c["message"]
    assert first.phase == "Pending" and "refused" in first.status["message"]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "JobRejected")]
    assert "JobCreated" not in [e.reason for e in first.events]  # it was not created
    assert ("write_status", "Pending") in runtime.calls and ("post_event", "JobRejected") in runtime.calls
    assert first.backoff is not None and first.backoff >= 30
    assert not any(job.get("state") == "Created" for job in first.status.get("jobs", []))
    # the same refusal again: nothing new to write or tell, and the next look is further off
    delays = []
    for seconds in (30, 120, 240, 10_000):
        runtime.calls.clear()
        runtime.clock = T0 + timedelta(seconds=seconds)
        again = drive_now(experiment(status=first.status), runtime)
        assert again.status == first.status and again.events == []
        assert "write_status" not in verbs(runtime) and "post_event" not in verbs(runtime)
        delays.append(again.backoff)
    assert delays == sorted(delays) and delays[0] >= 30 and delays[-1] == 300
    # once the server takes it, the condition is cleared and the Job goes on as usual
    runtime.refuse = False
    runtime.calls.clear()
    accepted = drive_now(experiment(status=first.status), runtime)
    assert _condition(accepted.status, "JobCreated") is None and accepted.phase == "Training"
    assert [e.reason for e in accepted.events] == ["JobCreated"] and accepted.backoff is None
    assert ("create", "Job", "exp-iter-0") in runtime.calls


def _store_errors() -> list[Any]:
    import urllib3.exceptions
    from minio.error import S3Error, ServerError

    refused = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")
    return [
        pytest.param(urllib3.exceptions.MaxRetryError(None, "/bucket", reason=refused), id="urllib3-max-retries"),
        pytest.param(urllib3.exceptions.ReadTimeoutError(None, "/bucket", "Read timed out. (read timeout=5)"),
                     id="urllib3-read-timeout"),
        pytest.param(urllib3.exceptions.ProtocolError("Connection aborted."), id="urllib3-protocol"),
        pytest.param(ServerError("server failed with HTTP status code 502", 502), id="minio-server-error"),
        pytest.param(S3Error(None, "AccessDenied", "Access Denied.", "/b", "r", "h"), id="minio-access-denied"),
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="connection-reset"),
    ]


@pytest.mark.parametrize("error", _store_errors())
def test_a_store_the_client_cannot_reach_is_a_condition_not_a_crash(store: LocalStore, error: Exception) -> None:
    """Defect 7: the S3 client's own connection errors (urllib3, minio) escaped the driver, so an
    unreachable store never showed StoreReachable=False (the reconcile just raised)."""
    runtime = Recorder(store, store_error=error)
    decision = drive_now(experiment(), runtime)
    c = _condition(decision.status, "StoreReachable")
    assert c is not None and (c["status"], c["reason"]) == ("False", "StoreUnavailable")
    assert type(error).__name__ in c["message"] or str(error)[:20] in c["message"]
    assert decision.backoff is not None and decision.backoff >= 15


def test_a_bug_in_a_store_read_is_not_mistaken_for_an_unreachable_store(store: LocalStore) -> None:
    with pytest.raises(ZeroDivisionError):
        drive_now(experiment(), Recorder(store, store_error=ZeroDivisionError("a bug")))
