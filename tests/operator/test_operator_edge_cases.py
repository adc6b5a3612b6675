"""The operator where a cluster engineer's review found it wanting (issue 15), through the emulated
API server: the real kopf operator, handlers and reconciler, the Job controller played by
:class:`~tests.support.operator_harness.FakeKubelet`. Where the behaviour depends on the real API
server (owner UIDs and garbage collection, status subresource patches, a real 422), the same
defect is also tested against the real control plane in test_real_apiserver.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.test_operator import dataset_ready, experiment
from tests.support.operator_harness import ALE, JOBS, NS, PPJ, cluster

pytestmark = pytest.mark.asyncio


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


# --- defect 2 -------------------------------------------------------------------------------------


async def test_a_refused_job_leaves_a_condition_and_an_event_and_backs_off(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"
        fault = c.api.inject("POST", "jobs", 422, times=10_000)
        async with c.operator(poll_interval=0.1):
            c.create(ALE, "exp", experiment())
            found = await c.wait(lambda: condition(c.status(ALE, "exp"), "JobCreated"), timeout=5,
                                 what="a JobCreated condition")
            assert (found["status"], found["reason"]) == ("False", "JobRejected")
            assert "injected 422" in found["message"] and "exp-iter-0" in found["message"]
            await c.wait(lambda: ("Warning", "JobRejected") in [(t, r) for t, r, _ in c.events("exp")], timeout=5,
                         what="a JobRejected Warning event")
            assert c.status(ALE, "exp")["phase"] == "Pending"
            # backed off: not tried again on every poll (0.1 s here)
            tries = c.calls("POST", "/jobs")
            await asyncio.sleep(2.0)
            assert c.calls("POST", "/jobs") - tries <= 1
            assert [r for _, r, _ in c.events("exp")].count("JobRejected") == 1
            # the user fixes what the server refused: the spec change is looked at at once
            fault.times = fault.hits
            c.api.patch(ALE, NS, "exp", {"spec": {"model": {"epochs": 20}}})
            await c.wait(lambda: c.api.get(JOBS, NS, "exp-iter-0"), timeout=5, what="the Job")
            await c.wait(lambda: condition(c.status(ALE, "exp"), "JobCreated") is None, timeout=5,
                         what="the condition to clear")
            await c.wait_phase(ALE, "exp", "Training", timeout=5)


# --- defect 4 -------------------------------------------------------------------------------------


async def test_editing_a_succeeded_preprocessing_job_is_reported_not_failed(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        async with c.operator(poll_interval=0.2):
            c.create(PPJ, "lamost", {"source": {"url": "s3://archive/dr2/"}, "dataset": "lamost-dr2", "shards": 4})
            await c.wait_phase(PPJ, "lamost", "Succeeded")
            c.api.patch(PPJ, NS, "lamost", {"spec": {"dataset": "lamost-dr2-v2"}})
            found = await c.wait(lambda: condition(c.status(PPJ, "lamost"), "SpecApplied"), timeout=5,
                                 what="a SpecApplied condition")
            assert (found["status"], found["reason"]) == ("False", "SpecChangedAfterCompletion")
            await asyncio.sleep(1.0)
            status = c.status(PPJ, "lamost")
        assert status["phase"] == "Succeeded" and condition(status, "Failed") is None
        assert status["dataset"] == "lamost-dr2" and status["shardsDone"] == 4
        assert c.jobs_created() == ["lamost-preprocess"]
        assert ("Warning", "SpecChangedAfterCompletion") in [(t, r) for t, r, _ in c.events("lamost")]


# --- defect 5 -------------------------------------------------------------------------------------


async def test_a_resource_recreated_with_the_same_name_does_not_adopt_the_old_jobs(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "fail"
        async with c.operator(poll_interval=0.2):
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 1}))
            await c.wait_phase(ALE, "exp", "Failed")
            old_uid = c.get(ALE, "exp")["metadata"]["uid"]
            # deleted without its dependents (kubectl delete --cascade=orphan): the failed Job stays
            c.api.remove(ALE, NS, "exp", propagation="Orphan")
            assert c.api.get(JOBS, NS, "exp-iter-0") is not None
            c.kubelet.policy = lambda job: "succeed"
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 1}))
            status = await c.wait_phase(ALE, "exp", "Succeeded", timeout=20)
        new_uid = c.get(ALE, "exp")["metadata"]["uid"]
        assert new_uid != old_uid and "Failed" not in [cond["type"] for cond in status["conditions"]
                                                       if cond["status"] == "True"]
        job = c.api.get(JOBS, NS, "exp-iter-0")
        assert job["metadata"]["ownerReferences"][0]["uid"] == new_uid
        assert c.jobs_created().count("exp-iter-0") == 2
        assert "StaleJob" in [r for _, r, _ in c.events("exp")]


# --- defect 6 -------------------------------------------------------------------------------------


async def test_stale_status_fields_are_removed_and_an_unchanged_status_is_not_written(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        # iteration 0 has an estimate with an interval, iteration 1 none (too few labels of the target)
        c.kubelet.precision = lambda k: {"estimate": 0.8, "low": 0.6, "high": 0.9} if k == 0 else {}
        async with c.operator(poll_interval=0.1):
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 2}))
            status = await c.wait_phase(ALE, "exp", "Succeeded", timeout=30)
            assert status["estimate"] == {"iteration": 1, "summary": "n/a"}
            writes = c.calls("PATCH", "/exp/status")
            await asyncio.sleep(1.5)  # 15 polls: an unchanged world writes nothing
            assert c.calls("PATCH", "/exp/status") == writes


# --- defect 7 -------------------------------------------------------------------------------------


async def test_finished_resources_are_not_polled(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        async with c.operator(poll_interval=0.1):
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 1}))
            await c.wait_phase(ALE, "exp", "Succeeded")
            await asyncio.sleep(0.3)
            reads = c.calls("GET", "/activelearningexperiments/exp")
            await asyncio.sleep(1.5)
            assert c.calls("GET", "/activelearningexperiments/exp") == reads
            # a spec change still wakes it (a watch event): more iterations
            c.api.patch(ALE, NS, "exp", {"spec": {"stopping": {"maxIterations": 2}}})
            status = await c.wait(lambda: c.status(ALE, "exp").get("iteration") == 1 and c.status(ALE, "exp"),
                                  what="iteration 1")
            await c.wait_phase(ALE, "exp", "Succeeded")
        assert status["observedGeneration"] == 2


async def test_a_failing_reconcile_backs_off_beyond_the_poll(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "hold"  # no Job events after its start: only the poll looks again
        c.api.inject("PATCH", "activelearningexperiments", 500, subresource="status", times=10_000)
        async with c.operator(poll_interval=0.1):
            c.create(ALE, "exp", experiment())
            await c.wait(lambda: c.calls("PATCH", "/exp/status") >= 1, what="a first status write")
            began = c.calls("PATCH", "/exp/status")
            await asyncio.sleep(3.0)
            # every 0.1 s would be ~30 tries; doubling waits (0.1, 0.2, ... 1.6 s) make a handful, plus
            # the looks the new Job's own events ask for
            assert c.calls("PATCH", "/exp/status") - began <= 8
            assert reconciler_failures(c) >= 4


def reconciler_failures(c: Any) -> int:
    return max(r.failures.get(("ActiveLearningExperiment", NS, "exp"), 0) for r in c.reconcilers)


@pytest.fixture()
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a store that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


async def test_a_hanging_s3_store_is_reported_for_every_resource_quickly(tmp_path: Path, black_hole: int) -> None:
    from oraculum.operator.main import OperatorConfig, operator_store
    from oraculum.settings import Settings

    settings = Settings(store="s3://bucket/data", s3_endpoint=f"http://127.0.0.1:{black_hole}",
                        s3_access_key="k", s3_secret_key="s")
    config = OperatorConfig(store_timeout=1.0, store_retries=0)
    async with cluster(tmp_path) as c:
        async with c.operator(poll_interval=0.2, store_factory=lambda: operator_store(settings, config)):
            began = time.monotonic()
            for name in ("one", "two", "three"):
                c.create(ALE, name, experiment())
            for name in ("one", "two", "three"):
                found = await c.wait(lambda n=name: condition(c.status(ALE, n), "StoreReachable"), timeout=15,
                                     what=f"StoreReachable on {name}")
                assert (found["status"], found["reason"]) == ("False", "StoreUnavailable")
                assert "timed out" in found["message"].lower() or "timeout" in found["message"].lower()
            assert time.monotonic() - began < 10
