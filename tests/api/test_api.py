"""The API gateway against the local runner backend: every endpoint, on the synthetic world made
by the real engine (tests/support/api_world.py), with in-process live state and with a real redis-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.api_fixtures import RedisServer, auth, client_for, settings_for
from tests.support.api_world import DATASET, EXPERIMENT, manifest, ppj_manifest
from oraculum.api.app import create_app
from oraculum.learning.labels import read_events
from oraculum.control.observe import submitted_iteration
from oraculum.control.registry import LocalRegistry
from oraculum.store import LocalStore

pytestmark = pytest.mark.asyncio

V1 = "/api/v1"
EXP = f"{V1}/experiments/{EXPERIMENT}"
IT1 = f"{EXP}/iterations/1"


def app_for(store: Path, redis_url: str | None = None, **values: Any) -> Any:
    return create_app(settings_for(store, redis_url=redis_url, **values))


async def batch_of(client: Any) -> dict[str, Any]:
    response = await client.get(f"{EXP}/batch", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    return response.json()


async def test_probes_metrics_docs_and_whoami(local_store: Path) -> None:
    async with client_for(app_for(local_store)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
        assert (await client.get("/docs")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert f"{V1}/experiments/{{name}}/iterations/{{iteration}}/labels/{{index}}" in schema["paths"]
        who = await client.get(f"{V1}/whoami", headers=auth("oracle"))
        assert who.json() == {"name": "olga", "role": "oracle"}
        text = (await client.get("/metrics")).text
        assert 'oraculum_api_requests_total{method="GET",route="/api/v1/whoami",status="200"} 1.0' in text


async def test_experiments_create_get_suspend_resume_delete(local_store: Path) -> None:
    store = LocalStore(local_store)
    async with client_for(app_for(local_store)) as client:
        listed = (await client.get(f"{V1}/experiments", headers=auth("viewer"))).json()
        assert [(r["name"], r["phase"], r["iteration"]) for r in listed] == [(EXPERIMENT, "AwaitingLabels", 1)]
        got = (await client.get(EXP, headers=auth("viewer"))).json()
        assert got["status"]["phase"] == "AwaitingLabels" and got["history"] == [{"iteration": 0, "labels": 40}]
        assert got["spec"]["dataset"] == DATASET and got["backend"] == "local"

        # create from YAML and from JSON; the registry holds them for the local runner
        created = await client.post(f"{V1}/experiments", content=yaml.safe_dump(manifest("second")),
                                    headers={**auth("admin"), "Content-Type": "application/yaml"})
        assert created.status_code == 201, created.text
        assert created.json()["phase"] == "Pending" and created.json()["managed_by"] == "api"
        created = await client.post(f"{V1}/experiments", json=manifest("third"), headers=auth("admin"))
        assert created.status_code == 201, created.text
        assert LocalRegistry(store).names("ActiveLearningExperiment") == [EXPERIMENT, "second", "third"]
        duplicate = await client.post(f"{V1}/experiments", json=manifest("third"), headers=auth("admin"))
        assert duplicate.status_code == 409 and "exists" in duplicate.json()["detail"]
        invalid = manifest("fourth")
        invalid["spec"]["acquisition"]["batchSize"] = 0
        answer = await client.post(f"{V1}/experiments", json=invalid, headers=auth("admin"))
        assert answer.status_code == 422 and "acquisition.batchSize" in answer.json()["detail"]
        wrong_kind = await client.post(f"{V1}/experiments", json=ppj_manifest(), headers=auth("admin"))
        assert wrong_kind.status_code == 422
        not_yaml = await client.post(f"{V1}/experiments", content=b"kind: [", headers={**auth("admin"), "Content-Type": "application/yaml"})
        assert not_yaml.status_code == 422

        suspended = await client.post(f"{V1}/experiments/second/suspend", headers=auth("admin"))
        assert suspended.status_code == 200 and suspended.json()["suspended"] is True
        assert LocalRegistry(store).get("ActiveLearningExperiment", "second").spec["suspend"] is True  # type: ignore[union-attr]
        resumed = await client.post(f"{V1}/experiments/second/resume", headers=auth("admin"))
        assert resumed.json()["suspended"] is False
        assert (await client.delete(f"{V1}/experiments/second", headers=auth("admin"))).status_code == 204
        assert (await client.get(f"{V1}/experiments/second", headers=auth("viewer"))).status_code == 404
        assert (await client.delete(f"{V1}/experiments/second", headers=auth("admin"))).status_code == 404
        assert (await client.post(f"{V1}/experiments/second/suspend", headers=auth("admin"))).status_code == 404

        # preprocessing jobs: the same verbs
        ppj = await client.post(f"{V1}/preprocessingjobs", json=ppj_manifest(), headers=auth("admin"))
        assert ppj.status_code == 201, ppj.text
        assert [r["name"] for r in (await client.get(f"{V1}/preprocessingjobs", headers=auth("viewer"))).json()] == ["pool-job"]
        assert (await client.get(f"{V1}/preprocessingjobs/pool-job", headers=auth("viewer"))).json()["spec"]["dataset"] == "other"
        assert (await client.post(f"{V1}/preprocessingjobs/pool-job/suspend", headers=auth("admin"))).json()["suspended"]
        assert (await client.delete(f"{V1}/preprocessingjobs/pool-job", headers=auth("admin"))).status_code == 204


async def test_datasets_and_spectra(local_store: Path) -> None:
    async with client_for(app_for(local_store)) as client:
        datasets = (await client.get(f"{V1}/datasets", headers=auth("viewer"))).json()
        assert [d["name"] for d in datasets] == [DATASET] and datasets[0]["count"] > 200
        assert datasets[0]["source"] == "synthetic:240?seed=3"
        index = (await client.get(f"{V1}/datasets/{DATASET}", headers=auth("viewer"))).json()["index"]
        assert index["grid"]["points"] == 140
        rejected = (await client.get(f"{V1}/datasets/{DATASET}/rejected?limit=2", headers=auth("viewer"))).json()
        assert rejected["total"] == index["rejected"] > 0 and len(rejected["items"]) == 2 and rejected["items"][0]["reason"]

        info = (await client.get(f"{V1}/datasets/{DATASET}/spectra/5", headers=auth("viewer"))).json()
        meta = info["meta"]
        assert meta["obsid"] and meta["ra"] is not None and meta["source_key"].endswith(".fits")
        assert info["links"]["archive"].endswith(f"obsid={meta['obsid']}") and "sim-coo" in info["links"]["simbad"]
        flux = (await client.get(f"{V1}/datasets/{DATASET}/spectra/5/flux", headers=auth("viewer"))).json()
        assert len(flux["wavelength"]) == len(flux["flux"]) == 140 and flux["id"] == info["id"]
        raw = (await client.get(f"{V1}/datasets/{DATASET}/spectra/5/raw", headers=auth("viewer"))).json()
        assert raw["points"] == len(raw["wavelength"]) > 3000 and not raw["decimated"]
        assert raw["wavelength"][0] < 4000 < 8000 < raw["wavelength"][-1]  # the full range, not the grid
        small = (await client.get(f"{V1}/datasets/{DATASET}/spectra/5/raw?max_points=200", headers=auth("viewer"))).json()
        assert small["decimated"] and len(small["flux"]) <= 200 and small["points"] == raw["points"]
        assert max(v for v in small["flux"] if v is not None) == max(v for v in raw["flux"] if v is not None)
        assert small["wavelength"] == sorted(small["wavelength"])
        assert (await client.get(f"{V1}/datasets/{DATASET}/spectra/99999", headers=auth("viewer"))).status_code == 404
        assert (await client.get(f"{V1}/datasets/nope/spectra/1", headers=auth("viewer"))).status_code == 404


async def test_batch_map_progress_and_iterations(local_store: Path) -> None:
    async with client_for(app_for(local_store)) as client:
        batch = await batch_of(client)
        assert batch["iteration"] == 1 and batch["size"] == 18 and (batch["oracle_size"], batch["estimation_size"]) == (12, 6)
        assert batch["labels"] == ["absorption", "emission", "double-peak", "unsure"] and batch["blind"]
        oracle = [i for i in batch["items"] if i["set"] == "oracle"]
        estimation = [i for i in batch["items"] if i["set"] == "estimation"]
        assert all(i["probabilities"] and not i["prediction_hidden"] for i in oracle)
        assert all(i["probabilities"] is None and i["predicted"] is None and i["prediction_hidden"] for i in estimation)
        assert batch["progress"]["text"] == "0 / 12 oracle, 0 / 6 estimation"
        assert (await client.get(f"{EXP}/iterations/0/batch", headers=auth("viewer"))).json()["cold_start"] is True
        assert (await client.get(f"{EXP}/iterations/7/batch", headers=auth("viewer"))).status_code == 404

        mapped = (await client.get(f"{IT1}/map", headers=auth("viewer"))).json()
        assert len(mapped["points"]) == 18 and "pca" in mapped["methods"]
        assert all(len(p["coordinates"]["pca"]) == 2 for p in mapped["points"])
        progress = (await client.get(f"{IT1}/progress", headers=auth("viewer"))).json()
        assert progress["total"] == 18 and not progress["complete"] and not progress["submitted"]
        iterations = (await client.get(f"{EXP}/iterations", headers=auth("viewer"))).json()
        assert iterations["current"] == 1 and [i["iteration"] for i in iterations["iterations"]] == [0, 1]
        assert iterations["iterations"][0]["evaluated"] and not iterations["iterations"][1]["evaluated"]


async def test_labels_set_change_clear_and_bulk_are_durable_events(local_store: Path) -> None:
    store = LocalStore(local_store)
    async with client_for(app_for(local_store)) as client:
        batch = await batch_of(client)
        oracle = [i for i in batch["items"] if i["set"] == "oracle"]
        estimation = [i for i in batch["items"] if i["set"] == "estimation"]
        first = oracle[0]["index"]
        put = await client.put(f"{IT1}/labels/{first}", json={"label": "emission", "comment": "broad H-alpha"},
                               headers=auth("oracle"))
        assert put.status_code == 201, put.text
        ack = put.json()
        assert ack["who"] == "olga" and ack["action"] == "set" and ack["progress"]["text"] == "1 / 12 oracle, 0 / 6 estimation"
        events = read_events(store, EXPERIMENT, 1)  # in the store before the answer
        assert len(events) == 1 and events[0].who == "olga" and events[0].comment == "broad H-alpha"
        assert events[0].items[0].shown_prediction == oracle[0]["probabilities"] and events[0].set == "oracle"
        change = await client.put(f"{IT1}/labels/{first}", json={"label": "absorption"}, headers=auth("oracle2"))
        assert change.status_code == 201 and change.json()["who"] == "otto"
        cleared = await client.delete(f"{IT1}/labels/{first}?comment=not%20sure%20yet", headers=auth("oracle"))
        assert cleared.status_code == 201 and cleared.json()["action"] == "clear"
        labels = (await client.get(f"{IT1}/labels", headers=auth("viewer"))).json()["labels"]
        assert str(first) not in labels
        log = (await client.get(f"{IT1}/labels/events", headers=auth("viewer"))).json()
        assert log["total"] == 3 and [e["action"] for e in log["events"]] == ["set", "set", "clear"]
        assert [e["who"] for e in log["events"]] == ["olga", "otto", "olga"]
        page = (await client.get(f"{IT1}/labels/events?offset=1&limit=1", headers=auth("viewer"))).json()
        assert page["total"] == 3 and page["offset"] == 1 and [e["key"] for e in page["events"]] == [log["events"][1]["key"]]
        negative = await client.post(f"{IT1}/labels/bulk", json={"indices": [first, -1], "label": "unsure"},
                                     headers=auth("oracle"))
        assert negative.status_code == 422 and "indices" in negative.text

        # a lasso over estimation items: bulk events, blind (no prediction shown), then revealed
        chosen = [i["index"] for i in estimation[:4]]
        bulk = await client.post(f"{IT1}/labels/bulk", json={"indices": chosen, "label": "unsure", "selection": "lasso"},
                                 headers=auth("oracle"))
        assert bulk.status_code == 201, bulk.text
        assert bulk.json()["bulk"] and bulk.json()["progress"]["text"] == "0 / 12 oracle, 4 / 6 estimation"
        last = read_events(store, EXPERIMENT, 1)[-1]
        assert last.bulk and last.set == "estimation" and all(item.shown_prediction is None for item in last.items)
        batch = await batch_of(client)
        revealed = {i["index"]: i for i in batch["items"]}
        assert all(revealed[i]["probabilities"] and not revealed[i]["prediction_hidden"] for i in chosen)
        assert revealed[chosen[0]]["label"]["bulk"] is True
        assert revealed[estimation[5]["index"]]["prediction_hidden"]

        # what cannot be labelled
        bad = await client.put(f"{IT1}/labels/{first}", json={"label": "galaxy"}, headers=auth("oracle"))
        assert bad.status_code == 422 and "not one of" in bad.json()["detail"]
        assert (await client.put(f"{IT1}/labels/99999", json={"label": "emission"}, headers=auth("oracle"))).status_code == 404
        old = await client.put(f"{EXP}/iterations/0/labels/{first}", json={"label": "emission"}, headers=auth("oracle"))
        assert old.status_code == 409 and "not the current one" in old.json()["detail"]
        extra = await client.put(f"{IT1}/labels/{first}", json={"label": "emission", "x": 1}, headers=auth("oracle"))
        assert extra.status_code == 422


@pytest.mark.parametrize("live", ["memory", "redis"])
async def test_item_locks_keep_two_oracles_apart(local_store: Path, redis_server: RedisServer, live: str) -> None:
    redis_url = redis_server.url if live == "redis" else None
    if redis_url:
        redis_server.flushall()
    async with client_for(app_for(local_store, redis_url, api_lock_seconds=30)) as client:
        index = (await batch_of(client))["items"][0]["index"]
        claimed = await client.post(f"{IT1}/locks/{index}", headers=auth("oracle"))
        assert claimed.status_code == 200 and claimed.json()["holder"] == "olga"
        clash = await client.put(f"{IT1}/labels/{index}", json={"label": "emission"}, headers=auth("oracle2"))
        assert clash.status_code == 409 and clash.json()["detail"]["holders"] == {str(index): "olga"}
        clash = await client.post(f"{IT1}/locks/{index}", headers=auth("oracle2"))
        assert clash.status_code == 409
        held = (await client.get(f"{IT1}/locks", headers=auth("viewer"))).json()["locks"]
        assert [(lock["index"], lock["holder"]) for lock in held] == [(index, "olga")]
        assert (await batch_of(client))["items"][0]["lock"] == "olga"
        # the holder labels (her claim stays); otto may not bulk-label over it either
        assert (await client.put(f"{IT1}/labels/{index}", json={"label": "emission"}, headers=auth("oracle"))).status_code == 201
        bulk = await client.post(f"{IT1}/labels/bulk", json={"indices": [index], "label": "unsure"}, headers=auth("oracle2"))
        assert bulk.status_code == 409
        assert (await client.delete(f"{IT1}/locks/{index}", headers=auth("oracle"))).status_code == 204
        assert (await client.put(f"{IT1}/labels/{index}", json={"label": "unsure"}, headers=auth("oracle2"))).status_code == 201
        # an implicit claim (a plain label write) is released after the write
        assert (await client.get(f"{IT1}/locks", headers=auth("viewer"))).json()["locks"] == []

        # concurrent writes by two oracles to one item: each is either stored or refused with 409
        async def write(who: str, label: str) -> int:
            response = await client.put(f"{IT1}/labels/{index}", json={"label": label}, headers=auth(who))
            return response.status_code

        codes = await asyncio.gather(*(write("oracle" if n % 2 else "oracle2", "emission" if n % 2 else "absorption")
                                       for n in range(20)))
        assert set(codes) <= {201, 409} and 201 in codes


async def test_submit_needs_a_complete_batch_then_signals_the_runner(local_store: Path) -> None:
    store = LocalStore(local_store)
    async with client_for(app_for(local_store)) as client:
        batch = await batch_of(client)
        indices = [i["index"] for i in batch["items"]]
        await client.put(f"{IT1}/labels/{indices[0]}", json={"label": "emission"}, headers=auth("oracle"))
        early = await client.post(f"{IT1}/submit", headers=auth("oracle"))
        assert early.status_code == 409
        detail = early.json()["detail"]
        assert (detail["labelled"], detail["size"]) == (1, 18) and len(detail["missing"]) == 17
        assert submitted_iteration(store, EXPERIMENT) is None
        done = await client.post(f"{IT1}/labels/bulk", json={"indices": indices[1:], "label": "absorption"},
                                 headers=auth("oracle"))
        assert done.json()["progress"]["complete"]
        submitted = await client.post(f"{IT1}/submit", headers=auth("oracle"))
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["labelled"] == 18 and "labels-submitted-1" in submitted.json()["signal"]
        assert submitted_iteration(store, EXPERIMENT) == 1
        assert (await client.get(f"{IT1}/progress", headers=auth("viewer"))).json()["submitted"] is True


async def test_metrics_curves_and_candidate_downloads(local_store: Path) -> None:
    async with client_for(app_for(local_store)) as client:
        metrics = (await client.get(f"{EXP}/iterations/0/metrics", headers=auth("viewer"))).json()
        assert metrics["metrics"]["batch_labelled"] == metrics["metrics"]["batch_size"] == 40
        assert (await client.get(f"{IT1}/metrics", headers=auth("viewer"))).status_code == 404
        curves = (await client.get(f"{EXP}/curves", headers=auth("viewer"))).json()
        assert [p["iteration"] for p in curves["points"]] == [0] and curves["points"][0]["labels_total"] == 40
        csv = await client.get(f"{IT1}/candidates.csv", headers=auth("viewer"))
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert csv.text.startswith("id,index,ra,dec,obsid") and "attachment" in csv.headers["content-disposition"]
        vot = await client.get(f"{IT1}/candidates.vot", headers=auth("viewer"))
        assert vot.status_code == 200 and b"VOTABLE" in vot.content
        assert (await client.get(f"{EXP}/iterations/0/candidates.csv", headers=auth("viewer"))).status_code == 404


async def test_job_progress_and_the_event_stream(local_store: Path) -> None:
    async with client_for(app_for(local_store)) as client:
        index = (await batch_of(client))["items"][0]["index"]

        async def listen() -> list[tuple[str, dict[str, Any]]]:
            response = await client.get(f"{EXP}/events?max_events=4&timeout=20", headers=auth("viewer"))
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            frames = []
            for block in response.text.split("\n\n"):
                lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
                if "event" in lines:
                    frames.append((lines["event"], json.loads(lines["data"])))
            return frames

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # the stream subscribes first
        report = await client.post(f"{EXP}/progress", json={"job": "exp-iter-1", "step": "score", "done": 50, "total": 200},
                                   headers=auth("worker"))
        assert report.status_code == 202 and report.json()["fraction"] == 0.25
        assert (await client.put(f"{IT1}/labels/{index}", json={"label": "emission"}, headers=auth("oracle"))).status_code == 201
        assert (await client.post(f"{EXP}/progress", json={"job": "x"}, headers=auth("oracle"))).status_code == 403
        frames = await asyncio.wait_for(listener, 30)
        assert [kind for kind, _ in frames] == ["ready", "status", "progress", "label"]
        assert frames[1][1]["phase"] == "AwaitingLabels" and frames[2][1]["step"] == "score"
        assert frames[3][1]["who"] == "olga" and frames[3][1]["progress"]["labelled"] == 1
        detail = (await client.get(EXP, headers=auth("viewer"))).json()
        assert detail["progress"][0]["job"] == "exp-iter-1" and detail["progress"][0]["reporter"] == "iter-job"
        listed = (await client.get(f"{EXP}/progress", headers=auth("viewer"))).json()
        assert listed["jobs"][0]["done"] == 50


async def test_redis_flushed_or_killed_the_labels_come_back_from_the_store(local_store: Path, redis_server: RedisServer) -> None:
    redis_server.flushall()
    app = app_for(local_store, redis_server.url)
    async with client_for(app) as client:
        indices = [i["index"] for i in (await batch_of(client))["items"]][:5]
        for n, index in enumerate(indices):
            response = await client.put(f"{IT1}/labels/{index}", json={"label": "emission" if n % 2 else "absorption"},
                                        headers=auth("oracle"))
            assert response.status_code == 201
        before = (await client.get(f"{IT1}/labels", headers=auth("viewer"))).json()["labels"]
        assert len(before) == 5
        redis_server.flushall()
        after = (await client.get(f"{IT1}/labels", headers=auth("viewer"))).json()["labels"]
        assert after == before
        assert (await batch_of(client))["progress"]["labelled"] == 5
        redis_server.kill()
        try:
            # reads still work (straight from the store); a write is refused (no item locks), not lost
            assert (await client.get(f"{IT1}/labels", headers=auth("viewer"))).json()["labels"] == before
            refused = await client.put(f"{IT1}/labels/{indices[0]}", json={"label": "unsure"}, headers=auth("oracle"))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert (await client.get("/readyz")).status_code == 503
        finally:
            redis_server.start()
        assert (await client.get(f"{IT1}/labels", headers=auth("viewer"))).json()["labels"] == before
        again = await client.put(f"{IT1}/labels/{indices[0]}", json={"label": "unsure"}, headers=auth("oracle"))
        assert again.status_code == 201 and again.json()["progress"]["labelled"] == 5
        text = (await client.get("/metrics")).text
        assert "oraculum_api_label_cache_rebuilds_total" in text


async def test_served_under_a_root_path(local_store: Path) -> None:
    async with client_for(app_for(local_store, root_path="/oraculum/")) as client:
        who = await client.get("/oraculum/api/v1/whoami", headers=auth("viewer"))
        assert who.status_code == 200 and who.json()["name"] == "vera"
        assert (await client.get("/oraculum/openapi.json")).json()["servers"] == [{"url": "/oraculum"}]


async def test_run_jobs_runs_what_the_api_creates_on_this_machine(local_store: Path) -> None:
    """--run-jobs: the local runner in the API process runs a PreprocessingJob made through the API."""
    async with client_for(app_for(local_store, api_run_jobs=True)) as client:
        created = await client.post(f"{V1}/preprocessingjobs", json=ppj_manifest(count=12), headers=auth("admin"))
        assert created.status_code == 201, created.text
        phase = None
        for _ in range(240):
            phase = (await client.get(f"{V1}/preprocessingjobs/pool-job", headers=auth("viewer"))).json()["phase"]
            if phase in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.25)
        assert phase == "Succeeded"
        assert "other" in [d["name"] for d in (await client.get(f"{V1}/datasets", headers=auth("viewer"))).json()]
        assert (await client.delete(f"{V1}/preprocessingjobs/pool-job", headers=auth("admin"))).status_code == 204
