"""The API's experiment and preprocessing-job endpoints against the emulated Kubernetes API server
(tests/support/k8s_emulator.py, kmock underneath), through the operator's own client: create, list, get,
suspend, resume, delete, and the labels-submitted annotation the operator acts on; the real kopf
operator then reacts to that annotation. Every request the API sends is checked against
api/rbac.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from tests.support.api_fixtures import auth, client_for, settings_for
from tests.support.api_world import EXPERIMENT, manifest, ppj_manifest
from tests.support.k8s_emulator import Route
from oraculum.api.app import create_app
from oraculum.api.backend import KubernetesBackend
from oraculum.control.reconcile import LABELS_SUBMITTED_ANNOTATION
from oraculum.store import LocalStore
from tests.support.operator_harness import ALE, NS, PPJ, cluster, load_rbac, request_verb, ungranted

pytestmark = pytest.mark.asyncio

V1 = "/api/v1"
RBAC = Path(__file__).resolve().parents[2] / "api" / "rbac.yaml"


def api_requests(api: Any) -> set[tuple[str, str, str]]:
    used = set()
    for method, path, query, agent in api.calls:
        if agent.startswith("oraculum-api/"):
            verb = request_verb(method, path, query)
            if verb is not None:
                used.add(verb)
    return used


def app_on(c: Any, store: Path) -> Any:
    backend = KubernetesBackend(NS, login=lambda: kopf.ConnectionInfo(server=c.url))
    return create_app(settings_for(store, api_backend="kubernetes", namespace=NS), backend=backend,
                      store=LocalStore(store))


async def test_custom_resource_operations_and_the_submit_annotation(tmp_path: Path, local_store: Path) -> None:
    async with cluster(tmp_path) as c, client_for(app_on(c, local_store)) as client:
        assert (await client.get("/readyz")).json()["checks"]["backend (kubernetes)"] == "ok"
        assert (await client.get(f"{V1}/experiments", headers=auth("viewer"))).json() == []
        created = await client.post(f"{V1}/experiments", json=manifest(), headers=auth("admin"))
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["namespace"] == NS and body["uid"] and body["backend"] == "kubernetes" and body["phase"] == "Pending"
        stored = c.get(ALE, EXPERIMENT)
        assert stored["spec"]["acquisition"]["batchSize"] == 12 and stored["metadata"]["generation"] == 1
        again = await client.post(f"{V1}/experiments", json=manifest(), headers=auth("admin"))
        assert again.status_code == 409
        yaml_body = yaml.safe_dump(manifest("second"))
        second = await client.post(f"{V1}/experiments", content=yaml_body,
                                   headers={**auth("admin"), "Content-Type": "application/yaml"})
        assert second.status_code == 201
        elsewhere = manifest("third")
        elsewhere["metadata"]["namespace"] = "other"
        assert (await client.post(f"{V1}/experiments", json=elsewhere, headers=auth("admin"))).status_code == 422

        # the operator's status shows through: phase, iteration, conditions, history
        c.api.set_status(ALE, NS, EXPERIMENT, {"phase": "AwaitingLabels", "iteration": 1, "message": "label it",
                                               "conditions": [{"type": "Progressing", "status": "True", "reason": "AwaitingLabels",
                                                               "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                                               "history": [{"iteration": 0, "labels": 40}]})
        got = (await client.get(f"{V1}/experiments/{EXPERIMENT}", headers=auth("viewer"))).json()
        assert (got["phase"], got["iteration"], got["message"]) == ("AwaitingLabels", 1, "label it")
        assert got["conditions"][0]["type"] == "Progressing" and got["history"][0]["labels"] == 40
        listed = (await client.get(f"{V1}/experiments", headers=auth("viewer"))).json()
        assert [(r["name"], r["phase"]) for r in listed] == [(EXPERIMENT, "AwaitingLabels"), ("second", "Pending")]

        # suspend and resume are spec changes (new generations); delete removes the resource
        suspended = await client.post(f"{V1}/experiments/{EXPERIMENT}/suspend", headers=auth("admin"))
        assert suspended.status_code == 200 and suspended.json()["suspended"]
        assert c.get(ALE, EXPERIMENT)["spec"]["suspend"] is True and c.get(ALE, EXPERIMENT)["metadata"]["generation"] == 2
        await client.post(f"{V1}/experiments/{EXPERIMENT}/resume", headers=auth("admin"))
        assert c.get(ALE, EXPERIMENT)["spec"]["suspend"] is False

        # label the whole batch (store), submit: the annotation the operator watches
        batch = (await client.get(f"{V1}/experiments/{EXPERIMENT}/batch", headers=auth("viewer"))).json()
        assert batch["iteration"] == 1 and batch["size"] == 18
        indices = [item["index"] for item in batch["items"]]
        early = await client.post(f"{V1}/experiments/{EXPERIMENT}/iterations/1/submit", headers=auth("oracle"))
        assert early.status_code == 409 and early.json()["detail"]["labelled"] == 0
        assert LABELS_SUBMITTED_ANNOTATION not in (c.get(ALE, EXPERIMENT)["metadata"].get("annotations") or {})
        done = await client.post(f"{V1}/experiments/{EXPERIMENT}/iterations/1/labels/bulk",
                                 json={"indices": indices, "label": "absorption"}, headers=auth("oracle"))
        assert done.status_code == 201
        submitted = await client.post(f"{V1}/experiments/{EXPERIMENT}/iterations/1/submit", headers=auth("oracle"))
        assert submitted.status_code == 202, submitted.text
        assert c.get(ALE, EXPERIMENT)["metadata"]["annotations"][LABELS_SUBMITTED_ANNOTATION] == "1"
        progress = (await client.get(f"{V1}/experiments/{EXPERIMENT}/iterations/1/progress", headers=auth("viewer"))).json()
        assert progress["submitted"] and progress["complete"]

        # preprocessing jobs
        ppj = await client.post(f"{V1}/preprocessingjobs", json=ppj_manifest(), headers=auth("admin"))
        assert ppj.status_code == 201, ppj.text
        assert c.get(PPJ, "pool-job")["spec"]["dataset"] == "other"
        assert (await client.post(f"{V1}/preprocessingjobs/pool-job/suspend", headers=auth("admin"))).json()["suspended"]
        assert (await client.delete(f"{V1}/preprocessingjobs/pool-job", headers=auth("admin"))).status_code == 204
        assert c.api.get(PPJ, NS, "pool-job") is None

        assert (await client.delete(f"{V1}/experiments/second", headers=auth("admin"))).status_code == 204
        assert c.api.get(ALE, NS, "second") is None
        assert (await client.get(f"{V1}/experiments/second", headers=auth("viewer"))).status_code == 404
        assert (await client.delete(f"{V1}/experiments/second", headers=auth("admin"))).status_code == 404
        assert (await client.post(f"{V1}/experiments/second/resume", headers=auth("admin"))).status_code == 404
        assert (await client.post(f"{V1}/experiments/second/iterations/1/submit", headers=auth("oracle"))).status_code == 404

        missing = ungranted(api_requests(c.api), load_rbac(RBAC))
        assert not missing, f"the API used verbs api/rbac.yaml does not grant: {missing}"
        assert ("oraculum.dev", "activelearningexperiments", "create") in api_requests(c.api)


async def test_api_server_errors_are_answered_not_raised(tmp_path: Path, local_store: Path) -> None:
    async with cluster(tmp_path) as c, client_for(app_on(c, local_store)) as client:
        c.api.inject("POST", "activelearningexperiments", 503, times=1)
        answer = await client.post(f"{V1}/experiments", json=manifest(), headers=auth("admin"))
        assert answer.status_code == 502 and "Kubernetes API" in answer.json()["detail"]
    # a backend that cannot be reached at all: 503 with Retry-After, and not ready
    backend = KubernetesBackend(NS, login=lambda: kopf.ConnectionInfo(server="http://127.0.0.1:9"))
    app = create_app(settings_for(local_store, api_backend="kubernetes", namespace=NS), backend=backend,
                     store=LocalStore(local_store))
    async with client_for(app) as client:
        down = await client.get(f"{V1}/experiments", headers=auth("viewer"))
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert (await client.get("/readyz")).status_code == 503


async def test_the_operator_acts_on_the_submitted_labels(tmp_path: Path) -> None:
    """The whole path on the emulated cluster: the real operator brings an experiment to
    AwaitingLabels, an oracle labels its batch and submits through the API, and the operator
    starts the next iteration (its Jobs are played by the harness's fake kubelet)."""
    from tests.operator.test_operator import dataset_ready, experiment

    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        backend = KubernetesBackend(NS, login=lambda: kopf.ConnectionInfo(server=c.url))
        app = create_app(settings_for(c.store.url, api_backend="kubernetes", namespace=NS), backend=backend,
                         store=c.store)
        async with c.operator(), client_for(app) as client:
            spec = experiment(oracle={"type": "human"}, stopping={"maxIterations": 2})
            created = await client.post(f"{V1}/experiments", json={
                "apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
                "metadata": {"name": "live"}, "spec": spec}, headers=auth("admin"))
            assert created.status_code == 201, created.text
            await c.wait_phase(ALE, "live", "AwaitingLabels")
            batch = (await client.get(f"{V1}/experiments/live/batch", headers=auth("viewer"))).json()
            indices = [item["index"] for item in batch["items"]]
            assert batch["iteration"] == 0 and len(indices) == 10
            labelled = await client.post(f"{V1}/experiments/live/iterations/0/labels/bulk",
                                         json={"indices": indices, "label": "emission"}, headers=auth("oracle"))
            assert labelled.status_code == 201, labelled.text
            assert (await client.post(f"{V1}/experiments/live/iterations/0/submit", headers=auth("oracle"))).status_code == 202
            await c.wait(lambda: "live-iter-1" in c.jobs_created(), what="iteration 1")
            await c.wait(lambda: c.status(ALE, "live").get("iteration") == 1, what="status iteration 1")
            assert (await client.get(f"{V1}/experiments/live", headers=auth("viewer"))).json()["iteration"] == 1
