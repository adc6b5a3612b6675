"""The Python client (``oraculum.client.rest``) against the real API (a uvicorn subprocess) over the
synthetic world of tests/support/api_world.py (made by the real engine), on a local store and on the
moto S3 server: every answer is compared with what the store holds. And the example notebook:
valid nbformat 4 JSON whose code cells run against the same API."""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from astropy.io.votable import parse

from tests.support.api_fixtures import NAMES, ROOT, TOKENS, ApiProcess
from tests.support.api_world import DATASET, EXPERIMENT, manifest, ppj_manifest, upload
from tests.support.client_harness import client, local_env, running_api, s3_env, s3_settings_for
from oraculum.client.rest import BatchData, Client, ClientError
from oraculum.client.manifests import spec_differences
from oraculum.spectra.datasets import Dataset
from oraculum.learning.experiments import iteration_key
from oraculum.learning.labels import current_labels, read_events
from oraculum.control.observe import submitted_iteration
from oraculum.store import LocalStore, ObjectStore, open_store

NOTEBOOK = ROOT / "examples" / "notebook.ipynb"


@pytest.fixture(scope="module")
def served(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, LocalStore]]:  # noqa: F811
    root = tmp_path_factory.mktemp("client")
    shutil.copytree(world, root / "store")
    with running_api(local_env(root / "store", ORACULUM_CACHE_DIR=str(root / "cache")), root / "api.log") as api:
        yield api, LocalStore(root / "store")


def store_batch(store: ObjectStore, iteration: int = 1) -> dict[str, Any]:
    return json.loads(store.get_bytes(iteration_key(EXPERIMENT, iteration, "batch")))


def check_batch(batch: BatchData, store: ObjectStore, cache: Path) -> None:
    """The client's arrays are the store's: items, flux on the grid, grid, visible predictions."""
    truth = store_batch(store)
    by_index = {item["index"]: item for item in truth["items"]}
    assert sorted(batch.indices.tolist()) == sorted(by_index) and len(batch) == truth["size"]
    assert batch.ids.tolist() == [by_index[i]["id"] for i in batch.indices.tolist()]
    assert batch.sets.tolist() == [by_index[i]["set"] for i in batch.indices.tolist()]
    data = Dataset.open(store, DATASET, cache_dir=cache)
    assert batch.flux is not None and batch.flux.dtype == np.float32
    assert batch.flux.shape == (len(batch), data.grid.points)
    np.testing.assert_array_equal(batch.flux, data.take(batch.indices).flux)
    np.testing.assert_allclose(batch.wavelength, np.asarray(data.grid.wavelengths), rtol=0, atol=1e-9)
    assert batch.classes == [c["name"] for c in truth["classes"]]
    for row, index in enumerate(batch.indices.tolist()):
        stored = by_index[index].get("probabilities")
        if stored is not None:
            np.testing.assert_allclose(batch.probabilities[row], [stored[c] for c in batch.classes])
            assert batch.predicted[row] == by_index[index]["predicted"]
    hidden = batch.sets == "estimation"
    assert hidden.any() and np.isnan(batch.probabilities[hidden]).all()  # blind: not shown before labelling


def test_lists_and_gets_agree_with_the_store(served: tuple[ApiProcess, LocalStore]) -> None:
    api, store = served
    with client(api, "viewer") as viewer:
        assert viewer.whoami() == {"name": NAMES["viewer"], "role": "viewer"}
        experiments = viewer.experiments()
        assert [(e.name, e.phase, e.iteration) for e in experiments] == [(EXPERIMENT, "AwaitingLabels", 1)]
        experiment = viewer.experiment(EXPERIMENT)
        assert experiment.spec["dataset"] == DATASET and experiment.history == [{"iteration": 0, "labels": 40}]
        assert viewer.current_iteration(EXPERIMENT) == 1
        assert viewer.preprocessing_jobs() == []
        index = Dataset.open(store, DATASET).index
        (listed,) = viewer.datasets()
        info = viewer.dataset(DATASET)
        assert (listed.name, listed.count, info.count, info.rejected) == (DATASET, index.count, index.count, index.rejected)
        assert info.index["checksum"] == index.checksum and info.shards == len(index.shards)
        spectrum = viewer.spectrum(DATASET, 3)
        np.testing.assert_array_equal(spectrum.flux.astype(np.float32), Dataset.open(store, DATASET).take([3]).flux[0])
        assert spectrum.medium == index.grid.medium and spectrum.kind == "grid"
        raw = viewer.spectrum(DATASET, 3, raw=True, max_points=200)
        assert raw.kind == "raw" and 100 < raw.flux.size <= 200 and raw.wavelength.min() < 6519.0
        assert viewer.spectrum_info(DATASET, 3)["id"] == spectrum.id


def test_batch_arrays_equal_the_store(served: tuple[ApiProcess, LocalStore], tmp_path: Path) -> None:
    api, store = served
    with client(api, "viewer") as viewer:
        batch = viewer.batch(EXPERIMENT)
        check_batch(batch, store, tmp_path)
        table = batch.table()
        assert len(table) == len(batch) and table["flux"].shape == batch.flux.shape  # type: ignore[union-attr]
        assert [c for c in table.colnames if c.startswith("p_")] == [f"p_{c}" for c in batch.classes]
        light = viewer.batch(EXPERIMENT, iteration=0, flux=False)
        assert light.flux is None and light.iteration == 0 and len(light) == store_batch(store, 0)["size"]


def test_labels_round_trip_through_the_store(served: tuple[ApiProcess, LocalStore]) -> None:
    api, store = served
    truth = store_batch(store)
    oracle_items = [item["index"] for item in truth["items"] if item["set"] == "oracle"]
    blind = next(item["index"] for item in truth["items"] if item["set"] == "estimation")
    first, second, third = oracle_items[-3:]  # the notebook test labels the first oracle item
    with client(api, "oracle") as oracle:
        ack = oracle.set_label(EXPERIMENT, first, "emission", comment="clear H-alpha")
        assert ack["action"] == "set" and ack["who"] == NAMES["oracle"] and ack["events"]
        oracle.label_many(EXPERIMENT, [second, third], "absorption")
        table = oracle.labels(EXPERIMENT)
        rows = {int(r["index"]): r for r in table}
        assert rows[first]["label"] == "emission" and rows[first]["comment"] == "clear H-alpha" and not rows[first]["bulk"]
        assert rows[second]["label"] == rows[third]["label"] == "absorption" and rows[second]["bulk"]
        assert table.meta["iteration"] == 1
        stored = current_labels(read_events(store, EXPERIMENT, 1))
        assert {i: stored[i].label for i in (first, second, third)} == {first: "emission", second: "absorption",
                                                                         third: "absorption"}
        oracle.clear_label(EXPERIMENT, third, comment="not sure after all")
        assert third not in {int(i) for i in oracle.labels(EXPERIMENT)["index"]}
        assert current_labels(read_events(store, EXPERIMENT, 1)).get(third) is None or \
            current_labels(read_events(store, EXPERIMENT, 1))[third].label is None
        events = oracle.label_events(EXPERIMENT)
        assert len(events) == len(list(store.list(f"experiments/{EXPERIMENT}/labels/00001/")))
        assert events[-1]["action"] == "clear" and events[-1]["comment"] == "not sure after all"

        # a blind estimation item shows its prediction once labelled
        oracle.set_label(EXPERIMENT, blind, "emission")
        after = oracle.batch(EXPERIMENT, flux=False)
        row = int(np.flatnonzero(after.indices == blind)[0])
        assert after.labels[row] == "emission" and not np.isnan(after.probabilities[row]).any()
        assert oracle.progress(EXPERIMENT)["labelled"] >= 3
        try:
            import pandas  # noqa: F401
        except ImportError:
            with pytest.raises(ImportError, match="pip install pandas"):
                oracle.labels(EXPERIMENT, format="pandas")
        else:
            assert list(oracle.labels(EXPERIMENT, format="pandas")["label"]) == list(oracle.labels(EXPERIMENT)["label"])


def test_errors_carry_the_status_and_the_api_message(served: tuple[ApiProcess, LocalStore]) -> None:
    api, _ = served
    with client(api, "viewer") as viewer, client(api, "oracle") as oracle:
        with pytest.raises(ClientError) as missing:
            viewer.experiment("ghost")
        assert missing.value.status == 404 and "ghost" in missing.value.message
        with pytest.raises(ClientError) as forbidden:
            viewer.set_label(EXPERIMENT, 1, "emission", iteration=1)
        assert forbidden.value.status == 403 and NAMES["viewer"] in str(forbidden.value)
        with pytest.raises(ClientError) as invalid:
            oracle.set_label(EXPERIMENT, store_index(api), "no-such-class")
        assert invalid.value.status in (409, 422) and "no-such-class" in invalid.value.message
        with pytest.raises(ClientError) as incomplete:
            oracle.submit(EXPERIMENT)
        assert incomplete.value.status == 409 and incomplete.value.detail["missing"]
    with Client(api.url, token="not-a-valid-token-0123456789") as stranger, pytest.raises(ClientError) as refused:
        stranger.experiments()
    assert refused.value.status == 401
    with Client("http://127.0.0.1:9", token=TOKENS["viewer"], timeout=2) as nowhere, pytest.raises(ClientError) as down:
        nowhere.experiments()
    assert down.value.status == 0 and "cannot be reached" in str(down.value)
    with pytest.raises(ValueError, match="kind"):
        Client(api.url).create({"kind": "Pod", "metadata": {"name": "x"}})


def test_bad_manifests_are_refused_before_any_request(tmp_path: Path) -> None:
    nowhere = Client("http://127.0.0.1:9", token=TOKENS["admin"], timeout=2)  # never reached: the manifest is checked first
    with pytest.raises(ValueError, match=r"manifest 'experiment\.yaml': no such file"):
        nowhere.create("experiment.yaml")
    with pytest.raises(ValueError, match=re.escape(f"manifest file {tmp_path / 'missing.yaml'}: cannot read it")):
        nowhere.create(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'broken.yaml'}: not YAML or JSON")):
        nowhere.create(str(tmp_path / "broken.yaml"))
    with pytest.raises(ValueError, match="kind 'Pod'"):
        nowhere.create('{"kind": "Pod", "metadata": {"name": "x"}, "spec": {}}')  # one-line JSON is a manifest
    nowhere.close()


def store_index(api: ApiProcess) -> int:
    with client(api, "viewer") as viewer:
        return int(viewer.batch(EXPERIMENT, flux=False).indices[0])


def test_metrics_iterations_and_candidates(served: tuple[ApiProcess, LocalStore]) -> None:
    api, store = served
    with client(api, "viewer") as viewer:
        metrics = json.loads(store.get_bytes(iteration_key(EXPERIMENT, 0, "metrics")))
        curve = viewer.metrics(EXPERIMENT)
        assert list(curve["iteration"]) == [0] and curve["labels_total"][0] == metrics["labels_total"]
        assert viewer.iteration_metrics(EXPERIMENT, 0) == metrics
        iterations = viewer.iterations(EXPERIMENT)
        assert list(iterations["iteration"]) == [0, 1] and list(iterations["evaluated"]) == [True, False]
        candidates = viewer.candidates(EXPERIMENT)
        stored = parse(io.BytesIO(store.get_bytes(iteration_key(EXPERIMENT, 1, "candidates_vot")))).get_first_table().to_table()
        assert candidates.colnames == stored.colnames and len(candidates) == len(stored)
        assert str(candidates["ra"].unit) == "deg" and candidates.meta["iteration"] == 1
        with pytest.raises(ClientError) as cold:
            viewer.candidates(EXPERIMENT, iteration=0)  # a cold start has no model
        assert cold.value.status == 404


def test_create_suspend_resume_delete(served: tuple[ApiProcess, LocalStore], tmp_path: Path) -> None:
    api, _ = served
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(manifest("from-file")))
    with client(api) as admin:
        created = [admin.create(path), admin.create(yaml.safe_dump(manifest("from-text"))),
                   admin.create(manifest("from-dict")), admin.create(ppj_manifest("from-ppj"))]
        assert [r.name for r in created] == ["from-file", "from-text", "from-dict", "from-ppj"]
        assert created[0].kind == "ActiveLearningExperiment" and created[3].kind == "PreprocessingJob"
        assert {e.name for e in admin.experiments()} >= {"from-file", "from-text", "from-dict"}
        assert admin.suspend("from-text").suspended and not admin.resume("from-text").suspended
        assert admin.suspend("from-ppj", kind="PreprocessingJob").suspended
        admin.delete("from-dict")
        admin.delete("from-ppj", kind="ppj")
        with pytest.raises(ClientError) as gone:
            admin.experiment("from-dict")
        assert gone.value.status == 404
        with pytest.raises(ClientError) as twice:
            admin.create(path)
        assert twice.value.status == 409
        with pytest.raises(ValueError, match="exactly one manifest"):
            admin.create(yaml.safe_dump(manifest("a")) + "---\n" + yaml.safe_dump(manifest("b")))


def test_apply_creates_or_keeps_and_names_what_differs(served: tuple[ApiProcess, LocalStore]) -> None:
    api, _ = served
    with client(api) as admin:
        outcome, created = admin.apply(manifest("applied"))
        assert outcome == "created" and created.name == "applied" and created.kind == "ActiveLearningExperiment"
        again, kept = admin.apply(yaml.safe_dump(manifest("applied")))  # a notebook run twice
        assert again == "unchanged" and kept.name == "applied" and kept.spec == created.spec
        with pytest.raises(ClientError) as changed:
            admin.apply(manifest("applied", stopping={"maxIterations": 9}))
        assert changed.value.status == 409 and changed.value.detail["differences"] == ["spec.stopping.maxIterations: 5 -> 9"]
        assert "spec.stopping.maxIterations: 5 -> 9" in str(changed.value)
        assert spec_differences(manifest("applied"), kept.spec) == []
        got = admin.resource("applied", kind="ActiveLearningExperiment")
        assert got.name == "applied" and got.progress == [] and not got.final
        assert admin.resource(EXPERIMENT).iteration == 1
        assert admin.candidates_url(EXPERIMENT, 1, "vot") == f"{api.url}/api/v1/experiments/{EXPERIMENT}/iterations/1/candidates.vot"
        assert admin.candidates_url(EXPERIMENT).endswith("/iterations/1/candidates.csv")
        admin.delete("applied")


def test_label_batch_labels_item_by_item_then_submits(world: Path, tmp_path: Path) -> None:  # noqa: F811
    shutil.copytree(world, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    env = local_env(tmp_path / "store", ORACULUM_CACHE_DIR=str(tmp_path / "cache"))
    with running_api(env, tmp_path / "api.log") as api, client(api, "oracle") as oracle:
        batch = oracle.batch(EXPERIMENT, flux=False)
        first, second = batch.classes[:2]
        some = oracle.label_batch(EXPERIMENT, {int(batch.indices[0]): first}, submit=False)
        assert (some.written, some.kept, some.submitted, some.finished) == ({first: 1}, 0, False, True)
        stopped = oracle.label_batch(EXPERIMENT, lambda item: second, stop=lambda: True)
        assert (stopped.count, stopped.kept, stopped.submitted, stopped.finished) == (0, 1, False, False)
        done = oracle.label_batch(EXPERIMENT, lambda item: second if item["set"] == "oracle" else first)
        assert done.iteration == 1 and done.kept == 1 and done.count == len(batch) - 1 and done.submitted
        assert submitted_iteration(store, EXPERIMENT) == 1
        labels = oracle.labels(EXPERIMENT, iteration=1)
        assert len(labels) == len(batch) and not labels["bulk"].any()  # one label per spectrum, as the dashboard
        again = oracle.label_batch(EXPERIMENT, lambda item: "never asked", iteration=1)
        assert (again.count, again.kept, again.submitted) == (0, len(batch), False)


def test_follow_until_final_and_a_label_conflict_tried_again() -> None:
    """Both against a stand-in API (httpx.MockTransport): phases that change, a 409 that passes."""
    phases = iter(["Pending", "Training", "Succeeded", "never read"])
    calls: list[str] = []
    batch = {"iteration": 2, "dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}],
             "progress": {"submitted": False}, "items": [
                 {"index": 1, "id": "s1", "set": "oracle"}, {"index": 2, "id": "s2", "set": "oracle", "label": {"label": "a"}},
                 {"index": 3, "id": "s3", "set": "estimation"}]}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        calls.append(f"{request.method} {path}")
        if path == "/experiments/x":
            return httpx.Response(200, json={"kind": "ActiveLearningExperiment", "name": "x", "phase": next(phases),
                                             "progress": [{"job": "x-iterate-0", "step": "train"}]})
        if path == "/experiments/x/iterations/2/batch":
            return httpx.Response(200, json=batch)
        if path == "/experiments/x/iterations/2/labels/1" and calls.count(f"PUT {path}") == 1:
            return httpx.Response(409, json={"detail": "iteration 2 is not the current one"})
        if request.method == "PUT":
            return httpx.Response(201, json={"action": "set"})
        return httpx.Response(202, json={"labelled": 3, "size": 3})

    with Client("http://api.test", token="t", transport=httpx.MockTransport(handle)) as api:
        pauses: list[float] = []
        seen = [(r.phase, r.progress[0]["step"]) for r in api.follow("x", poll=0.25, wait=pauses.append)]
        assert seen == [("Pending", "train"), ("Training", "train"), ("Succeeded", "train")] and pauses == [0.25, 0.25]
        done = api.label_batch("x", {1: "b", 3: "a"}, iteration=2)
        assert (done.written, done.kept, done.submitted) == ({"b": 1, "a": 1}, 1, True)
        assert calls[-4:] == ["PUT /experiments/x/iterations/2/labels/1", "PUT /experiments/x/iterations/2/labels/1",
                              "PUT /experiments/x/iterations/2/labels/3", "POST /experiments/x/iterations/2/submit"]
        calls.clear()
        with pytest.raises(ClientError) as refused:
            api.label_batch("x", {1: "b"}, iteration=2, retries=0)
        assert refused.value.status == 409 and "not the current one" in refused.value.message


def test_the_example_notebook_is_valid_and_runs(served: tuple[ApiProcess, LocalStore], shared_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    api, store = served
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["language"] == "python"
    cells = notebook["cells"]
    assert all({"cell_type", "metadata", "source"} <= set(cell) for cell in cells)
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert len(code) >= 8 and all(cell["outputs"] == [] for cell in cells if cell["cell_type"] == "code")
    compiled = [compile(source, f"{NOTEBOOK.name}[{number}]", "exec") for number, source in enumerate(code)]

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("ORACULUM_API_URL", api.url)
    monkeypatch.setenv("ORACULUM_TOKEN", TOKENS["admin"])
    monkeypatch.setenv("ORACULUM_UPLOAD_DIR", str(shared_data / "lamost-dr2" / "GAC089N38V2"))
    namespace: dict[str, Any] = {}
    for cell in compiled:
        exec(cell, namespace)  # noqa: S102 - the notebook's own code, against the test's API
    assert namespace["name"] == EXPERIMENT and namespace["batch"].flux.shape[0] == len(namespace["batch"])
    assert namespace["report"].ok and len(namespace["report"].uploaded) == 7
    assert store.exists("archive/notebook-upload/spec-56257-GAC089N38V2_sp01-001.fits")
    labelled = current_labels(read_events(store, EXPERIMENT, 1))
    assert int(namespace["batch"].indices[namespace["row"]]) in labelled
    namespace["api"].close()


@pytest.mark.slow
def test_the_client_over_s3_labels_everything_and_submits(world: Path, s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    settings = s3_settings_for(s3_endpoint, f"client-{uuid.uuid4().hex[:8]}", tmp_path / "cache")
    store = open_store(settings=settings)
    upload(world, store)
    with running_api(s3_env(settings), tmp_path / "api.log") as api, client(api, "oracle") as oracle:
        # batch() reads 8 spectra at once: concurrent first reads of a shard from S3 (one download)
        batch = oracle.batch(EXPERIMENT)
        check_batch(batch, store, tmp_path / "check")
        with pytest.raises(ClientError) as incomplete:
            oracle.submit(EXPERIMENT)
        assert incomplete.value.status == 409 and len(incomplete.value.detail["missing"]) == len(batch)
        for kind in ("oracle", "estimation"):
            oracle.label_many(EXPERIMENT, batch.indices[batch.sets == kind], batch.classes[0])
        assert oracle.progress(EXPERIMENT)["complete"]
        answer = oracle.submit(EXPERIMENT)
        assert answer["labelled"] == answer["size"] == len(batch)
        assert submitted_iteration(store, EXPERIMENT) == 1
        assert oracle.iterations(EXPERIMENT)["submitted"][-1]
        labels = oracle.labels(EXPERIMENT, iteration=1)
        assert sorted(labels["index"]) == sorted(batch.indices.tolist()) and set(labels["label"]) == {batch.classes[0]}
