"""The real kopf operator, in-process, against the emulated API server (no cluster can be had here).

Each test starts the operator inside its own body (kopf does not like async fixtures), creates
resources through the emulated API, and plays the Job controller with :class:`FakeKubelet` (the
one stand-in: it writes Job status and the store effects of the pods' commands). At the end of
every test the harness checks that each request the operator made is granted by operator/rbac.yaml.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s_emulator import Route
from oraculum.control.jobs import JobConfig
from oraculum.control.reconcile import LABELS_SUBMITTED_ANNOTATION
from tests.support.operator_harness import ALE, CONFIGMAPS, JOBS, NS, PPJ, cluster, write_labels

pytestmark = pytest.mark.asyncio

POOL = "pool"


def experiment(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": POOL,
        "classes": [{"name": "absorption", "hotkey": "1"}, {"name": "emission", "hotkey": "2", "target": True}],
        "model": {"preset": "tiny"},
        "acquisition": {"batchSize": 8},
        "estimation": {"size": 2},
        "stopping": {"maxIterations": 3},
        "oracle": {"type": "simulated", "labels": "truth.csv"},
    }
    spec.update(changes)
    return spec


def dataset_ready(store: Any) -> None:
    store.put_bytes(f"datasets/{POOL}/index.json", b"{}")


async def test_simulated_experiment_runs_through_iterations_to_succeeded(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        async with c.operator():
            c.create(ALE, "exp", experiment())
            status = await c.wait_phase(ALE, "exp", "Succeeded", timeout=30)
        assert status["iteration"] == 2 and [h["iteration"] for h in status["history"]] == [0, 1, 2]
        assert status["history"][2] == {"iteration": 2, "labels": 30, "estimate": 0.7, "low": 0.5, "high": 0.9,
                                        "predictedTargets": 42, "durations": {"train": 1.5, "score": 0.5}}
        assert status["estimate"]["summary"] == "0.700 [0.500, 0.900]"
        assert status["observedGeneration"] == 1
        succeeded = next(cond for cond in status["conditions"] if cond["type"] == "Succeeded")
        assert succeeded["reason"] == "MaxIterations" and succeeded["observedGeneration"] == 1
        # every step of every iteration ran exactly once: deterministic names, no duplicates
        expected = [f"exp-{step}-{k}" for k in range(3) for step in ("iter", "answer", "eval")]
        assert c.jobs_created() == expected and c.kubelet.ran == expected
        reasons = [reason for _, reason, _ in c.events("exp")]
        assert reasons.count("JobCreated") == 9 and reasons.count("Evaluated") == 3 and reasons[-1] == "MaxIterations"
        # the children carry the experiment as owner: deleting it deletes them (garbage collection)
        job = c.api.get(JOBS, NS, "exp-iter-1")
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("ActiveLearningExperiment", "exp",
                                                                c.get(ALE, "exp")["metadata"]["uid"])
        assert len(c.api.list(CONFIGMAPS, NS)) == 3
        c.api.remove(ALE, NS, "exp")
        assert c.api.list(JOBS, NS) == [] and c.api.list(CONFIGMAPS, NS) == []
        assert c.api.get(ALE, NS, "exp") is None  # no finalizer held it


async def test_failed_job_fails_the_experiment_with_its_reason_and_a_spec_change_retries_with_the_new_spec(
        tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "fail" if job["metadata"]["name"] == "exp-iter-1" else "succeed"
        async with c.operator():
            c.create(ALE, "exp", experiment())
            status = await c.wait_phase(ALE, "exp", "Failed")
            failed = next(cond for cond in status["conditions"] if cond["type"] == "Failed")
            assert failed["reason"] == "JobFailed" and "exp-iter-1" in failed["message"]
            assert "BackoffLimitExceeded" in failed["message"] and status["iteration"] == 1
            # the Event is posted once the status write has succeeded (so a reconcile that hits a 409
            # and runs again never posts it twice): it follows the phase, it does not precede it
            await c.wait(lambda: ("Warning", "JobFailed") in [(t, r) for t, r, _ in c.events("exp")],
                         what="the JobFailed event")
            await asyncio.sleep(1.0)  # Failed is terminal: nothing is retried on its own
            assert c.jobs_created().count("exp-iter-1") == 1
            # a spec change (new generation) deletes the failed Job and tries again
            c.kubelet.policy = lambda job: "succeed"
            c.api.patch(ALE, NS, "exp", {"spec": {"model": {"epochs": 20}}})
            status = await c.wait_phase(ALE, "exp", "Succeeded", timeout=30)
        assert c.jobs_created().count("exp-iter-1") == 2 and status["observedGeneration"] == 2
        assert "Retrying" in [r for _, r, _ in c.events("exp")]
        # the retried iteration, and every step after it, read the NEW spec (issue 15, defect 1: the
        # manifest ConfigMap of the failed attempt used to be mounted again)
        def epochs(job: str) -> Any:
            return [yaml.safe_load(data["experiment.yaml"])["spec"]["model"].get("epochs") for data in c.kubelet.mounted[job]]

        assert epochs("exp-iter-0") != [20]  # the spec before the change (the default epochs)
        assert epochs("exp-iter-1") == [20]  # the failed attempt ran no work
        assert epochs("exp-answer-1") == epochs("exp-eval-1") == epochs("exp-iter-2") == [20]


async def test_restart_while_awaiting_labels_resumes_without_duplicating_jobs(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        spec = experiment(oracle={"type": "human"}, stopping={"maxIterations": 2})
        async with c.operator():
            c.create(ALE, "exp", spec)
            status = await c.wait_phase(ALE, "exp", "AwaitingLabels")
            assert status["batch"] == {"size": 10, "labelled": 0}
        before = c.jobs_created()
        assert before == ["exp-iter-0"]
        # while no operator runs, the oracle labels part of the batch
        write_labels(c.store, "exp", 0, count=6)
        async with c.operator():
            await c.wait(lambda: c.status(ALE, "exp").get("batch", {}).get("labelled") == 6, what="6 labelled")
            await asyncio.sleep(1.0)
            assert c.jobs_created() == before and c.status(ALE, "exp")["phase"] == "AwaitingLabels"
            # a premature submit is reported, not acted on
            c.api.patch(ALE, NS, "exp", {"metadata": {"annotations": {LABELS_SUBMITTED_ANNOTATION: "0"}}})
            await c.wait(lambda: any(r == "LabelsIncomplete" for _, r, _ in c.events("exp")), what="LabelsIncomplete")
            assert c.jobs_created() == before
            # the rest of the labels arrive; the submit already given now counts
            write_labels(c.store, "exp", 0)
            await c.wait(lambda: "exp-iter-1" in c.jobs_created(), what="iteration 1")
            await c.wait_phase(ALE, "exp", "AwaitingLabels")
        async with c.operator():  # a restart mid-experiment again
            write_labels(c.store, "exp", 1)
            c.api.patch(ALE, NS, "exp", {"metadata": {"annotations": {LABELS_SUBMITTED_ANNOTATION: "1"}}})
            status = await c.wait_phase(ALE, "exp", "Succeeded")
        assert c.jobs_created() == ["exp-iter-0", "exp-eval-0", "exp-iter-1", "exp-eval-1"]
        assert len(status["history"]) == 2


async def test_an_existing_job_answers_409_and_counts_as_created(tmp_path: Path) -> None:
    """A Job created by an earlier operator but not listed (e.g. relabelled) makes create() answer
    409: the reconcile treats it as existing and goes on without an error or a duplicate."""
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"
        c.api._create(Route("batch", "v1", "jobs", NS), {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "exp-iter-0", "labels": {"other": "x"}},
            "spec": {"template": {"spec": {"containers": [{"name": "oraculum", "image": "x", "args": ["--no-progress", "iterate"]}]}}},
        }, {})
        async with c.operator():
            c.create(ALE, "exp", experiment())
            status = await c.wait(lambda: c.status(ALE, "exp").get("jobs"), what="a job in the status")
            assert status[0]["name"] == "exp-iter-0"
            await asyncio.sleep(0.5)
        assert c.jobs_created() == ["exp-iter-0"]
        posts = [path for method, path, _, agent in c.api.calls if method == "POST" and path.endswith("/jobs")
                 and agent.startswith("oraculum-operator/")]
        assert posts  # it did try, got 409, and carried on
        assert c.status(ALE, "exp")["phase"] == "Training"


async def test_a_status_conflict_is_retried_on_the_fresh_object(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.api.inject("PATCH", "activelearningexperiments", 409, subresource="status", times=2)
        async with c.operator() as reconciler:
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 1}))
            await c.wait_phase(ALE, "exp", "Succeeded")
            assert reconciler.conflicts >= 2
        # a concurrent change between read and write is a real conflict, too: the status write
        # carries the resourceVersion it was computed from
        obj = c.get(ALE, "exp")
        c.api.patch(ALE, NS, "exp", {"metadata": {"labels": {"touched": "yes"}}})
        from oraculum.kube import ApiError, KubeClient
        import kopf

        client = KubeClient(lambda: kopf.ConnectionInfo(server=c.url))
        try:
            with pytest.raises(ApiError) as error:
                await client.replace_status("ActiveLearningExperiment", NS, "exp", obj["metadata"]["resourceVersion"], {"phase": "Failed"})
            assert error.value.status == 409
        finally:
            await client.close()
        assert c.status(ALE, "exp")["phase"] == "Succeeded"


async def test_preprocessing_job_runs_as_one_indexed_job(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        async with c.operator():
            c.create(PPJ, "lamost", {"source": {"url": "s3://archive/dr2/"}, "dataset": "lamost-dr2",
                                     "shards": 4, "parallelism": 2, "resources": {"cpu": "2", "memory": "4Gi"}})
            status = await c.wait_phase(PPJ, "lamost", "Succeeded")
        job = c.api.get(JOBS, NS, "lamost-preprocess")
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4 and job["spec"]["parallelism"] == 2
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[1:3] == ["preprocess", "s3://archive/dr2/"] and "$(JOB_COMPLETION_INDEX)/4" in args
        assert (status["shardsDone"], status["processed"], status["rejected"]) == (4, 400, 12)
        assert "Completed" in [r for _, r, _ in c.events("lamost")]


async def test_unschedulable_job_is_reported_with_the_schedulers_message(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "unschedulable"
        async with c.operator(config=JobConfig(pending_timeout_seconds=0.2)):
            c.create(ALE, "exp", experiment(resources={"gpu": 1, "nodeSelector": {"gpu": "a100"}}))
            condition = await c.wait(lambda: next((x for x in c.status(ALE, "exp").get("conditions", [])
                                                   if x["type"] == "Schedulable"), None), what="Schedulable condition")
            assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
            assert "Insufficient nvidia.com/gpu" in condition["message"]
            await c.wait(lambda: any(r == "Unschedulable" for _, r, _ in c.events("exp")), what="the event")
        job = c.api.get(JOBS, NS, "exp-iter-0")
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1 and pod["nodeSelector"] == {"gpu": "a100"}


async def test_a_vanished_job_is_reported_and_recreated(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"
        async with c.operator():
            c.create(ALE, "exp", experiment())
            await c.wait(lambda: c.status(ALE, "exp").get("jobs", [{}])[0].get("state") == "Running", what="running")
            c.api.remove(JOBS, NS, "exp-iter-0", propagation="Background")
            await c.wait(lambda: c.jobs_created().count("exp-iter-0") == 2, what="the Job again")
            await c.wait(lambda: any(r == "JobVanished" for _, r, _ in c.events("exp")), what="JobVanished")
        assert c.status(ALE, "exp")["phase"] == "Training"


async def test_suspend_pauses_the_job_and_resume_continues(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"
        async with c.operator():
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 1}))
            await c.wait(lambda: c.status(ALE, "exp").get("jobs", [{}])[0].get("state") == "Running", what="running")
            c.api.patch(ALE, NS, "exp", {"spec": {"suspend": True}})
            await c.wait_phase(ALE, "exp", "Suspended")
            await c.wait(lambda: c.api.get(JOBS, NS, "exp-iter-0")["spec"].get("suspend") is True, what="Job suspended")
            c.kubelet.policy = lambda job: "succeed"
            c.api.patch(ALE, NS, "exp", {"spec": {"suspend": False}})
            await c.wait_phase(ALE, "exp", "Succeeded")
        assert c.api.get(JOBS, NS, "exp-iter-0")["spec"]["suspend"] is False
        assert {"Suspended", "Resumed"} <= {r for _, r, _ in c.events("exp")}
        assert c.jobs_created().count("exp-iter-0") == 1  # suspended, not deleted: nothing lost


async def test_bad_manifests_are_refused_by_the_schema_or_failed_with_a_reason(tmp_path: Path) -> None:
    import kmock

    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        # what the CRD schema can say, the API server refuses (422 with the field)
        with pytest.raises(kmock.KubernetesError) as refused:
            c.create(ALE, "neg", experiment(acquisition={"batchSize": -5}))
        assert refused.value.status == 422 and "acquisition.batchSize" in refused.value.message
        with pytest.raises(kmock.KubernetesError) as refused:
            c.create(ALE, "psychic", experiment(acquisition={"strategy": "psychic"}))
        assert "psychic" in refused.value.message and "entropy" in refused.value.message
        # what only the models know (shares summing to 1) the operator refuses with a condition
        async with c.operator():
            c.create(ALE, "shares", experiment(acquisition={"composition": {"uncertainty": 0.5, "random": 0.2}}))
            status = await c.wait_phase(ALE, "shares", "Failed")
            await c.wait(lambda: ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in c.events("shares")],
                         what="the InvalidSpec event")
        spec_valid = next(x for x in status["conditions"] if x["type"] == "SpecValid")
        assert spec_valid["status"] == "False" and spec_valid["reason"] == "InvalidSpec"
        assert "composition shares must sum to 1" in spec_valid["message"]
        assert c.api.list(JOBS, NS) == []


async def test_a_create_answered_503_but_stored_is_not_duplicated(tmp_path: Path) -> None:
    """The API server stored the Job but the answer was lost (503): the failed reconcile is retried
    by the periodic look, which finds the Job by its labels instead of creating a second one."""
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"
        c.api.inject("POST", "jobs", 503, store=True)
        async with c.operator(poll_interval=0.3):
            c.create(ALE, "exp", experiment())
            await c.wait(lambda: c.status(ALE, "exp").get("jobs", [{}])[0].get("state") == "Running", what="running")
        assert c.jobs_created() == ["exp-iter-0"]
