"""The operator against a REAL Kubernetes control plane: where its defects (issue 15) depend on
what the API server and the controllers really do.

The cluster is ``tests/support/controlplane.py`` (session fixture ``control_plane``): etcd,
kube-apiserver and kube-controller-manager built from the upstream Go modules, so owner
references, the garbage collector, the Job controller, the status subresource, validation (422)
and ResourceQuota admission (403) are the real ones. Pods run through the PROCESS KUBELET, which
STANDS IN FOR KUBELET (and the scheduler): it runs each container's command as a local process.
The operator runs in this test process (``operator_main``, kopf and the reconciler) with the
cluster's admin credentials; the Jobs' pods run a small stand-in for the ``oraculum`` verbs
(:data:`WORKER`, through the experiment's own ``resources.podTemplate``) that reads the iteration's
manifest from its real ConfigMap volume and writes what the verb would write to the store, so an
experiment runs through real Jobs in seconds.

What runs here: a real 422 and a real 403 (quota) refusal reported on the resource (defect 2), a
resource deleted and made again with the same name while its old failed Job lives on (defect 5:
owner UIDs, the garbage collector's orphaning), and stale nested status fields removed through the
real status subresource, after which a reconcile of an unchanged world writes nothing (defect 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from oraculum.control.jobs import JobConfig
from oraculum.operator.controller import Reconciler
from oraculum.operator.main import operator_main
from oraculum.settings import Settings
from oraculum.store import LocalStore
from tests.operator.test_operator import experiment as base_experiment

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
GROUP = "/apis/oraculum.dev/v1alpha1"

#: What each Job's pod runs instead of the real verb (``python -c WORKER --no-progress VERB MANIFEST
#: --iteration K``): the verb's effect on the store, from the manifest the pod mounted.
WORKER = r"""
import os, sys, yaml
from oraculum.learning.experiments import iteration_key, write_json
from oraculum.learning.labels import LabelEvent, LabelItem, append_event
from oraculum.store import LocalStore

args = sys.argv[1:]
verb, manifest = args[1], args[2]
k = int(args[args.index("--iteration") + 1])
with open(manifest, "rb") as handle:
    text = handle.read()
name = yaml.safe_load(text)["metadata"]["name"]
store = LocalStore(os.environ["ORACULUM_STORE"])
store.put_bytes(f"seen/{name}-{verb}-{k}.yaml", text)
B = 10
if verb == "iterate":
    items = [{"index": k * B + i, "id": f"s{k * B + i}", "set": "oracle" if i < 8 else "estimation"} for i in range(B)]
    write_json(store, iteration_key(name, k, "batch"), {"iteration": k, "items": items})
    write_json(store, iteration_key(name, k, "run"), {"durations_s": {"train": 1.5, "score": 0.5}})
elif verb == "answer":
    append_event(store, name, LabelEvent(who="simulated", iteration=k, items=[
        LabelItem(index=k * B + i, id=f"s{k * B + i}", label="emission" if i % 3 else "absorption") for i in range(B)]))
elif verb == "evaluate":
    precision = {"estimate": 0.8, "low": 0.6, "high": 0.9} if k == 0 else {}
    write_json(store, iteration_key(name, k, "metrics"), {
        "batch_size": B, "batch_labelled": B, "labels_total": B * (k + 1), "target_precision": precision,
        "predicted_target_count": 40 + k})
"""


def pod_template(command: list[str] | None = None, **pod: Any) -> dict[str, Any]:
    spec: dict[str, Any] = dict(pod)
    if command is not None:
        spec["containers"] = [{"name": "oraculum", "command": command}]
    return {"spec": spec}


WORKS = pod_template(["python", "-c", WORKER])
FAILS = pod_template(["sh", "-c", "echo failing on purpose; exit 3"])


def experiment(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The operator tests' simulated experiment, one iteration, its pods running ``template``."""
    resources = {"cpu": "100m", "memory": "128Mi", "podTemplate": template}
    return base_experiment(**{"stopping": {"maxIterations": 1}, "resources": resources, **changes})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


class Lab:
    """One namespace of the real cluster, a store, and the operator of this test."""

    def __init__(self, cp: Any, namespace: str, store: LocalStore) -> None:
        self.cp = cp
        self.ns = namespace
        self.store = store
        self.reconciler: Reconciler | None = None

    def path(self, name: str | None = None, status: bool = False) -> str:
        base = f"{GROUP}/namespaces/{self.ns}/activelearningexperiments"
        return base + (f"/{name}" if name else "") + ("/status" if status else "")

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.cp.create(self.path(), {"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
                                            "metadata": {"name": name}, "spec": spec})

    def get(self, name: str) -> dict[str, Any]:
        return self.cp.get(self.path(name))

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def job(self, name: str) -> dict[str, Any] | None:
        path = f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}"
        return self.cp.get(path) if self.cp.exists(path) else None

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.cp.get(f"/api/v1/namespaces/{self.ns}/events",
                            fieldSelector=f"involvedObject.name={name}")["items"]
        return [(e.get("type"), e.get("reason"), e.get("message")) for e in items]

    async def wait(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "a condition") -> Any:
        """Poll without blocking the event loop the operator runs in (each look is one short request)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await asyncio.to_thread(predicate)
            if last:
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")

    async def wait_phase(self, name: str, phase: str, timeout: float = 90.0) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        return await self.wait(seen, timeout, f"{name} to be {phase} (now: {self.status(name).get('message')})")

    @contextlib.asynccontextmanager
    async def operator(self, config: JobConfig | None = None, poll_interval: float = 0.5) -> AsyncIterator[Reconciler]:
        """The real operator (kopf, handlers, reconciler) on this namespace, as the cluster admin."""
        pki = self.cp.pki
        connection = kopf.ConnectionInfo(server=self.cp.server, ca_path=str(self.cp.ca),
                                         certificate_path=str(pki / "admin.crt"), private_key_path=str(pki / "admin.key"))
        stop, ready = asyncio.Event(), asyncio.Event()
        out: list[Reconciler] = []
        task = asyncio.create_task(operator_main(
            Settings(store=self.store.url), namespaces=[self.ns], connection=connection, stop_flag=stop,
            ready_flag=ready, poll_interval=poll_interval, config=config or JobConfig(backoff_limit=0),
            store_factory=lambda: self.store, reconciler_out=out))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            self.reconciler = out[0]
            yield out[0]
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.fixture()
def lab(control_plane: Any, tmp_path: Path) -> Any:
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/activelearningexperiments.oraculum.dev", "crd/preprocessingjobs.oraculum.dev")
    namespace = control_plane.create_namespace("operator-")
    store = LocalStore(tmp_path / "store")
    store.put_bytes("datasets/pool/index.json", b"{}")
    # what the chart gives every namespace: the store settings the Jobs' pods read (envFrom)
    control_plane.create(f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "oraculum-settings"},
        "data": {"ORACULUM_STORE": store.url}})
    yield Lab(control_plane, namespace, store)
    control_plane.delete(f"/api/v1/namespaces/{namespace}")


# --- defect 2: a real refusal -------------------------------------------------------------------


async def test_a_job_the_api_server_refuses_is_reported_on_the_resource(lab: Lab) -> None:
    """A real 422: restartPolicy Always is valid in a pod, not in a Job's pod template, so the CRD
    takes the experiment and the API server refuses its Job."""
    async with lab.operator(poll_interval=0.2) as reconciler:
        tries: list[str] = []
        create = reconciler.runtime.create

        async def counted(resource: Any, obj: dict[str, Any]) -> bool:
            tries.append(f"{obj['kind']}/{obj['metadata']['name']}")
            return await create(resource, obj)

        reconciler.runtime.create = counted  # type: ignore[method-assign]
        lab.create("exp", experiment(pod_template(restartPolicy="Always")))
        found = await lab.wait(lambda: conditions(lab.status("exp")).get("JobCreated"), 30, "JobCreated")
        assert (found["status"], found["reason"]) == ("False", "JobRejected")
        assert "422 Invalid" in found["message"] and "spec.template.spec.restartPolicy" in found["message"]
        status = lab.status("exp")
        assert status["phase"] == "Pending" and "refused" in status["message"]
        event = await lab.wait(lambda: [e for e in lab.events("exp") if e[1] == "JobRejected"], 30, "the event")
        assert event[0][0] == "Warning" and "restartPolicy" in event[0][2]
        # backed off: not asked again on every poll (0.2 s), and nothing told twice
        jobs_before = tries.count("Job/exp-iter-0")
        await asyncio.sleep(3)
        assert tries.count("Job/exp-iter-0") - jobs_before <= 1
        assert [e[1] for e in lab.events("exp")].count("JobRejected") == 1
        # fixed by the user: the spec change is looked at at once and the Job is made
        lab.cp.patch(lab.path("exp"), {"spec": {"resources": {"podTemplate": {
            "spec": {"restartPolicy": None, **WORKS["spec"]}}}}})
        status = await lab.wait_phase("exp", "Succeeded")
    assert "JobCreated" not in conditions(status)


async def test_a_job_over_a_resource_quota_is_reported_on_the_resource(lab: Lab) -> None:
    """A real 403 from ResourceQuota admission (no Jobs allowed in the namespace)."""
    lab.cp.create(f"/api/v1/namespaces/{lab.ns}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}}})
    await lab.wait(lambda: lab.cp.get(f"/api/v1/namespaces/{lab.ns}/resourcequotas/no-jobs").get("status", {}).get("hard"),
                   30, "the quota controller")
    async with lab.operator(poll_interval=0.2):
        lab.create("exp", experiment(WORKS))
        found = await lab.wait(lambda: conditions(lab.status("exp")).get("JobCreated"), 30, "JobCreated")
    assert (found["status"], found["reason"]) == ("False", "JobRejected")
    assert "403" in found["message"] and "exceeded quota" in found["message"]
    assert ("Warning", "JobRejected") in [(t, r) for t, r, _ in lab.events("exp")]


# --- defect 5: owner UIDs and the garbage collector -----------------------------------------------


async def test_a_resource_made_again_with_the_same_name_does_not_inherit_the_old_failed_job(lab: Lab) -> None:
    async with lab.operator(poll_interval=0.3):
        lab.create("exp", experiment(FAILS))
        failed = await lab.wait_phase("exp", "Failed")
        assert conditions(failed)["Failed"]["reason"] == "JobFailed"
        old_uid = lab.get("exp")["metadata"]["uid"]
        # deleted with --cascade=orphan: the garbage collector strips the owner reference and the
        # failed Job lives on, with the experiment's labels and name
        lab.cp.delete(lab.path("exp"), propagation="Orphan")
        await lab.wait(lambda: not lab.cp.exists(lab.path("exp")), 60, "the experiment to go")
        await lab.wait(lambda: (job := lab.job("exp-iter-0")) is not None
                       and not job["metadata"].get("ownerReferences"), 60, "the orphaned Job")
        lab.create("exp", experiment(WORKS))
        new_uid = lab.get("exp")["metadata"]["uid"]
        phases = []

        def done() -> bool:
            status = lab.status("exp")
            phases.append(status.get("phase"))
            return status.get("phase") == "Succeeded"

        await lab.wait(done, 120, "the new experiment to succeed")
    assert new_uid != old_uid and "Failed" not in phases
    job = lab.job("exp-iter-0")
    assert job is not None and [o["uid"] for o in job["metadata"]["ownerReferences"]] == [new_uid]
    assert "StaleJob" in [r for _, r, _ in lab.events("exp")]
    # the new experiment's pods read its own manifest (a ConfigMap named for its uid and spec)
    seen = yaml.safe_load(lab.store.get_bytes("seen/exp-iterate-0.yaml"))
    assert seen["spec"]["resources"]["podTemplate"] == WORKS


# --- defect 6: the status subresource -------------------------------------------------------------


async def test_stale_nested_status_fields_are_removed_and_an_unchanged_world_writes_nothing(lab: Lab) -> None:
    async with lab.operator(poll_interval=0.3) as reconciler:
        lab.create("exp", experiment(WORKS, stopping={"maxIterations": 2}))
        status = await lab.wait_phase("exp", "Succeeded", timeout=180)
        # iteration 0 had an estimate with an interval, iteration 1 none: nothing of the old one stays
        assert status["estimate"] == {"iteration": 1, "summary": "n/a"}
        assert [h.get("estimate") for h in status["history"]] == [0.8, None]
        version = lab.get("exp")["metadata"]["resourceVersion"]
        for _ in range(3):  # a look at an unchanged world writes nothing (no pruned or defaulted field differs)
            decision = await reconciler.reconcile("ActiveLearningExperiment", lab.ns, "exp")
            assert decision is not None and decision.phase == "Succeeded"
        assert lab.get("exp")["metadata"]["resourceVersion"] == version


async def test_every_step_of_an_iteration_reads_the_manifest_of_its_spec(lab: Lab) -> None:
    """Defect 1 through real ConfigMap volumes: after a failure and a spec change, the retried
    iteration's pods read the new spec."""
    async with lab.operator(poll_interval=0.3):
        lab.create("exp", experiment(FAILS))
        await lab.wait_phase("exp", "Failed")
        lab.cp.patch(lab.path("exp"), {"spec": {"model": {"epochs": 7}, "resources": {"podTemplate": WORKS}}})
        await lab.wait_phase("exp", "Succeeded", timeout=120)
    for verb in ("iterate", "answer", "evaluate"):
        assert yaml.safe_load(lab.store.get_bytes(f"seen/exp-{verb}-0.yaml"))["spec"]["model"]["epochs"] == 7
