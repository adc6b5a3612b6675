"""One iteration of the loop, end to end: iterate -> simulated oracle -> iterate, on a synthetic pool
made by `oraculum synth` + `oraculum preprocess`, on the local store and on S3 (moto server).

The pool (1,500 synthetic spectra, rare targets) is generated once per module; the loop uses the
tiny network with few epochs, so the whole module runs in about a minute on 2 cores.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from oraculum.spectra.synth.generator import SynthConfig, generate
from oraculum.cli.main import main
from oraculum.learning.batch_maps import batch_map
from oraculum.learning.candidates import CandidateWriter
from oraculum.learning.estimation_sample import EstimationSampler, sample_from_dict
from oraculum.learning.evaluation import evaluate_iteration
from oraculum.learning.experiments import ExperimentError, iteration_key, list_iterations, read_json
from oraculum.ingest.pipeline import run_preprocess
from oraculum.learning.iteration import run_iteration
from oraculum.learning.labelled_set import load_labelled_set
from oraculum.learning.labels import LabelEvent, LabelItem, append_event
from oraculum.spectra.datasets import Dataset
from oraculum.manifests import ExperimentSpec
from oraculum.learning.oracle import UNSURE, SimulatedOracle, load_label_file, map_label
from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid
from oraculum.learning.scores import read_scores
from oraculum.settings import Settings
from oraculum.store import LocalStore, open_store

POOL_SIZE = 1500
FRACTIONS = {"absorption": 0.90, "emission": 0.05, "double-peak": 0.03, "bad": 0.02}
CLASSES = ["absorption", "emission", "double-peak"]


def make_spec(**overrides: Any) -> ExperimentSpec:
    document: dict[str, Any] = {
        "dataset": "pool",
        "classes": [
            {"name": "absorption", "hotkey": "1"},
            {"name": "emission", "hotkey": "2", "target": True},
            {"name": "double-peak", "hotkey": "3", "target": True},
        ],
        "model": {"preset": "tiny", "epochs": 8, "patience": 3, "seed": 3},
        "acquisition": {"strategy": "entropy", "batchSize": 25, "initialBatchSize": 40,
                        "composition": {"uncertainty": 0.8, "random": 0.2}},
        "estimation": {"size": 15, "stratifiedSize": 6, "blind": True},
        "oracle": {"type": "simulated", "labels": "src/labels.csv"},
    }
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
    return ExperimentSpec.model_validate(document)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic LAMOST-format archive (FITS files + labels.csv), generated once."""
    root = tmp_path_factory.mktemp("archive")
    generate(LocalStore(root), "src", SynthConfig(count=POOL_SIZE, seed=11, fractions=FRACTIONS))
    return root / "src"


@pytest.fixture(scope="module")
def local(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Settings]:
    """A local store holding the archive (under src/) and the preprocessed dataset 'pool'."""
    root = tmp_path_factory.mktemp("store")
    store = LocalStore(root)
    store.put_file("src/labels.csv", source / "labels.csv")
    settings = Settings(store=str(root))
    run_preprocess(str(source), "pool", PreprocessingParameters(), settings, workers=1)
    return store, settings


@pytest.fixture(scope="module")
def loop(local: tuple[LocalStore, Settings]) -> dict[str, Any]:
    """Three iterations with the simulated oracle, then iteration 1 again (results kept)."""
    store, settings = local
    spec = make_spec()
    oracle = SimulatedOracle.from_spec(spec, store)
    results, answers = [], []
    progress: list[list[tuple[str, int | None, int | None]]] = []
    for k in range(3):
        progress.append([])
        results.append(run_iteration("e2e", spec, k, store, settings,
                                     lambda stage, done, total, k=k: progress[k].append((stage, done, total))))
        answers.append(oracle.answer(store, "e2e", k))
    first_batch_1 = read_json(store, iteration_key("e2e", 1, "batch"))
    scores_1 = read_scores(store.local_path(iteration_key("e2e", 1, "scores")))  # type: ignore[arg-type]
    rerun = run_iteration("e2e", spec, 1, store, settings)
    return {"store": store, "settings": settings, "spec": spec, "results": results, "answers": answers,
            "first_batch_1": first_batch_1, "scores_1": scores_1, "rerun": rerun, "progress": progress}


def _keys(store: LocalStore, k: int) -> set[str]:
    prefix = f"experiments/e2e/iterations/{k}/"
    return {info.key[len(prefix):] for info in store.list(prefix)}


# --------------------------------------------------------------------------------------------
# the loop, local store
# --------------------------------------------------------------------------------------------


def test_progress_hears_every_stage_the_epochs_and_the_scored_spectra(loop: dict[str, Any]) -> None:
    warm = loop["progress"][1]
    started = [stage for stage, done, total in warm if done is None]
    assert started == list(loop["results"][1].durations)  # each timed stage announced, in order
    assert started[:1] == ["evaluate_previous"] and {"train", "score", "select", "map"} <= set(started)
    epochs = [(done, total) for stage, done, total in warm if stage == "train" and done is not None]
    training = read_json(loop["store"], iteration_key("e2e", 1, "run"))["training"]
    assert [d for d, _ in epochs] == list(range(1, training["epochs_run"] + 1))
    assert {t for _, t in epochs} == {loop["spec"].model.epochs}
    scored = [(done, total) for stage, done, total in warm if stage == "score" and done is not None]
    pool = loop["results"][1].counts["pool"]
    assert scored[-1] == (pool, pool) and all(a[0] < b[0] for a, b in zip(scored, scored[1:]))
    cold = loop["progress"][0]  # no network yet: no epochs, no scoring
    assert not [stage for stage, _, _ in cold if stage in ("train", "score")]


def test_iteration_zero_is_a_random_cold_start(loop: dict[str, Any]) -> None:
    store, first = loop["store"], loop["results"][0]
    assert first.cold_start
    assert {"batch.json", "map.json", "run.json", "metrics.json"} <= _keys(store, 0)
    assert "model.keras" not in _keys(store, 0)
    batch = read_json(store, iteration_key("e2e", 0, "batch"))
    assert batch["size"] == 40 and batch["cold_start"] and batch["strategy"] == "random"
    assert {item["set"] for item in batch["items"]} == {"oracle"}
    assert {item["reason"] for item in batch["items"]} == {"random"}
    assert len({item["index"] for item in batch["items"]}) == 40
    metrics = read_json(store, iteration_key("e2e", 0, "metrics"))  # written when iteration 1 ran
    assert metrics["estimable"] is False and metrics["labels_total"] == 40
    assert sum(metrics["labels_so_far"].values()) == 40
    mapped = read_json(store, iteration_key("e2e", 0, "map"))
    assert mapped["embedding"].startswith("flux") and len(mapped["points"]) == 40
    assert all(len(p["pca"]) == 2 and len(p["tsne"]) == 2 for p in mapped["points"])


def test_warm_iterations_write_every_artifact(loop: dict[str, Any]) -> None:
    store = loop["store"]
    pool = Dataset.open(store, "pool")
    for k in (1, 2):
        keys = _keys(store, k)
        assert {"model.keras", "scores.parquet", "batch.json", "batch-predictions.json", "estimation.json", "map.json",
                "candidates.csv", "candidates.vot", "run.json"} <= keys, keys
        assert store.get_bytes(iteration_key("e2e", k, "model"))[:2] == b"PK"  # a .keras file is a zip
        scores = read_scores(store.local_path(iteration_key("e2e", k, "scores")))  # type: ignore[arg-type]
        assert set(scores) == {"index", "id", "predicted", "prob_absorption", "prob_emission", "prob_double-peak", "uncertainty"}
        assert np.array_equal(scores["index"], np.arange(len(pool)))
        probs = np.stack([scores[f"prob_{c}"] for c in CLASSES], axis=1)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert np.array_equal(probs.argmax(axis=1), scores["predicted"])
        assert np.all(scores["uncertainty"] >= 0)
        # candidates: exactly the spectra predicted as a target class, in CSV and VOTable
        n_targets = int(np.isin(scores["predicted"], [1, 2]).sum())
        rows = list(csv.DictReader(io.StringIO(store.get_bytes(iteration_key("e2e", k, "candidates_csv")).decode())))
        assert len(rows) == n_targets
        assert {row["predicted"] for row in rows} <= {"emission", "double-peak"}
        from astropy.io.votable import parse_single_table

        table = parse_single_table(io.BytesIO(store.get_bytes(iteration_key("e2e", k, "candidates_vot")))).to_table()
        assert len(table) == n_targets
        assert table["ra"].unit == "deg" and set(table.colnames) >= {"id", "index", "ra", "dec", "obsid", "predicted", "probability"}
        if rows:
            assert rows[0]["id"] == str(table["id"][0]) and float(rows[0]["ra"]) == pytest.approx(float(table["ra"][0]))
        run = read_json(store, iteration_key("e2e", k, "run"))
        assert run["dataset"]["checksum"] == pool.index.checksum
        assert run["seeds"]["training"] == 3 + k and run["training"]["seed"] == 3 + k
        assert run["versions"]["oraculum"] and run["versions"]["tensorflow"] and run["versions"]["keras"]
        assert {"train", "score", "select", "map"} <= set(run["durations_s"])
        assert run["spec"]["acquisition"]["strategy"] == "entropy"
        assert run["counts"]["pool"] == len(pool)


def test_batches_never_contain_labelled_spectra(loop: dict[str, Any]) -> None:
    store = loop["store"]
    labelled: set[int] = set()
    for k in range(3):
        batch = read_json(store, iteration_key("e2e", k, "batch"))
        indices = [item["index"] for item in batch["items"]]
        assert len(indices) == len(set(indices)), "a spectrum twice in one batch"
        assert not labelled & set(indices), f"iteration {k} chose already labelled spectra"
        labelled |= set(indices)
    # and the oracle batch has the declared composition, estimation items their own set
    batch = read_json(store, iteration_key("e2e", 2, "batch"))
    reasons = [item["reason"] for item in batch["items"] if item["set"] == "oracle"]
    assert reasons.count("uncertainty") == 20 and reasons.count("random") == 5
    estimation = [item for item in batch["items"] if item["set"] == "estimation"]
    assert 0 < len(estimation) <= 15 + 6
    assert {item["reason"] for item in estimation} <= {"precision-sample", "stratified-sample"}


def test_estimation_items_are_blind(loop: dict[str, Any]) -> None:
    store = loop["store"]
    batch = read_json(store, iteration_key("e2e", 1, "batch"))
    hidden = read_json(store, iteration_key("e2e", 1, "batch_predictions"))["items"]
    assert batch["blind"] is True
    for item in batch["items"]:
        if item["set"] == "estimation":
            assert "predicted" not in item and "probabilities" not in item and "score" not in item
            assert set(hidden[str(item["index"])]) == {"predicted", "probabilities", "score"}
        else:
            assert set(item["probabilities"]) == set(CLASSES)
            assert item["predicted"] == max(item["probabilities"], key=item["probabilities"].get)
    # the simulated oracle recorded what was shown: probabilities for oracle items, nothing when blind
    from oraculum.learning.labels import read_events

    events = read_events(store, "e2e", 1)
    assert {e.who for e in events} == {"simulated-oracle"}
    by_set = {e.set: e for e in events}
    assert all(item.shown_prediction is None for item in by_set["estimation"].items)
    assert all(item.shown_prediction is not None for item in by_set["oracle"].items)


def test_metrics_have_intervals(loop: dict[str, Any]) -> None:
    store, spec = loop["store"], loop["spec"]
    metrics = read_json(store, iteration_key("e2e", 1, "metrics"))
    assert metrics["estimable"] and metrics["strategy"] == "entropy"
    tp = metrics["target_precision"]
    assert tp["trials"] > 0 and tp["method"] == "wilson"
    assert 0 <= tp["low"] <= tp["estimate"] <= tp["high"] <= 1
    assert tp["census"] or tp["high"] - tp["low"] > 0
    count = metrics["estimated_target_count"]
    assert count["predicted"] == metrics["predicted_target_count"] > 0
    assert count["low"] <= count["estimate"] <= count["high"]
    assert metrics["training_labels"] == 40
    assert set(metrics["labels_so_far"]) <= set(CLASSES) | {UNSURE}
    assert metrics["batch_labelled"] == metrics["batch_size"]
    assert metrics["accuracy"] is not None or metrics["notes"]  # stratified sample of 6
    # evaluating again from the store gives the same document
    again = evaluate_iteration("e2e", spec, 1, store)
    assert again["target_precision"] == tp


def test_rerun_gives_the_same_batch(loop: dict[str, Any]) -> None:
    store = loop["store"]
    before = loop["first_batch_1"]
    after = read_json(store, iteration_key("e2e", 1, "batch"))

    def key(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(i["index"], i["set"], i["reason"]) for i in doc["items"]]

    assert key(before) == key(after)
    assert before["seed"] == after["seed"] == 4
    scores = read_scores(store.local_path(iteration_key("e2e", 1, "scores")))  # type: ignore[arg-type]
    np.testing.assert_allclose(scores["prob_emission"], loop["scores_1"]["prob_emission"], atol=1e-6)
    assert list_iterations(store, "e2e") == [0, 1, 2]


def test_training_set_grows_with_labels(loop: dict[str, Any]) -> None:
    results = loop["results"]
    assert [r.counts["training"] for r in results] == [0, 40, 65]  # estimation labels stay out of training
    assert results[2].counts["labelled_excluded"] == 40 + 25 + results[1].counts["estimation"]


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------


def _manifest(path: Path, spec: ExperimentSpec, names: list[str], extra_ppj: bool = True) -> Path:
    docs: list[dict[str, Any]] = []
    if extra_ppj:
        docs.append({"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob", "metadata": {"name": "ppj"},
                     "spec": {"source": {"url": "/nowhere"}, "dataset": "pool"}})
    for name in names:
        docs.append({"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment", "metadata": {"name": name},
                     "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)})
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_cli_iterate_and_evaluate(local: tuple[LocalStore, Settings], tmp_path: Path) -> None:
    store, settings = local
    spec = make_spec()
    manifest = _manifest(tmp_path / "exp.yaml", spec, ["cli-a", "cli-b"])
    runner = CliRunner()
    base = ["--store", settings.store, "--no-progress"]
    result = runner.invoke(main, [*base, "iterate", str(manifest), "--iteration", "0"])
    assert result.exit_code != 0 and "several ActiveLearningExperiments" in result.output
    result = runner.invoke(main, [*base, "iterate", str(manifest), "--iteration", "0", "--name", "cli-b"])
    assert result.exit_code == 0, result.output
    assert "random batch of 40" in result.output
    assert store.exists("experiments/cli-b/iterations/0/batch.json")
    result = runner.invoke(main, [*base, "iterate", str(manifest), "--iteration", "2", "--name", "cli-b"])
    assert result.exit_code != 0 and "iteration 1 has not run" in result.output
    result = runner.invoke(main, [*base, "evaluate", str(manifest), "--iteration", "0", "--name", "cli-b"])
    assert result.exit_code == 0, result.output
    assert "cold start" in result.output and store.exists("experiments/cli-b/iterations/0/metrics.json")
    result = runner.invoke(main, [*base, "evaluate", str(manifest), "--iteration", "5", "--name", "cli-b"])
    assert result.exit_code != 0 and "batch of iteration 5" in result.output


def test_cli_evaluate_after_labels(loop: dict[str, Any], tmp_path: Path) -> None:
    store, settings, spec = loop["store"], loop["settings"], loop["spec"]
    manifest = _manifest(tmp_path / "exp.yaml", spec, ["e2e"], extra_ppj=False)
    result = CliRunner().invoke(main, ["--store", settings.store, "evaluate", str(manifest), "--iteration", "2"])
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "predicted targets" in result.output
    metrics = read_json(store, iteration_key("e2e", 2, "metrics"))
    assert metrics["estimable"] and metrics["labels_total"] >= 40 + 25 + 25


# --------------------------------------------------------------------------------------------
# clear errors
# --------------------------------------------------------------------------------------------


def test_unknown_dataset_is_a_clear_error(local: tuple[LocalStore, Settings]) -> None:
    store, settings = local
    with pytest.raises(ExperimentError, match="no dataset 'nope'.*oraculum preprocess"):
        run_iteration("err", make_spec(dataset="nope"), 0, store, settings)


def test_missing_label_files_are_clear_errors(local: tuple[LocalStore, Settings]) -> None:
    store, settings = local
    spec = make_spec(oracle={"labels": "missing/labels.csv"})
    with pytest.raises(ExperimentError, match="oracle.labels: 'missing/labels.csv' not found"):
        SimulatedOracle.from_spec(spec, store)
    spec = make_spec(initial={"labels": "/no/such/initial.csv"})
    with pytest.raises(ExperimentError, match="initial.labels: '/no/such/initial.csv' not found"):
        run_iteration("err", spec, 0, store, settings)
    store.put_bytes("bad/labels.csv", b"name,class\nx,y\n")
    with pytest.raises(ExperimentError, match="needs columns id"):
        SimulatedOracle.from_spec(make_spec(oracle={"labels": "bad/labels.csv"}), store)


def test_invalid_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    spec = make_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["acquisition"]["strategy"] = "clairvoyance"
    path.write_text(yaml.safe_dump({"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
                                    "metadata": {"name": "bad"}, "spec": spec}))
    result = CliRunner().invoke(main, ["iterate", str(path), "--iteration", "0"])
    assert result.exit_code != 0
    assert "spec.acquisition.strategy" in result.output and "clairvoyance" in result.output
    (tmp_path / "ppj.yaml").write_text(yaml.safe_dump({"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob",
                                                       "metadata": {"name": "p"}, "spec": {"source": {"url": "x"}, "dataset": "d"}}))
    result = CliRunner().invoke(main, ["iterate", str(tmp_path / "ppj.yaml"), "--iteration", "0"])
    assert result.exit_code != 0 and "no ActiveLearningExperiment" in result.output
    result = CliRunner().invoke(main, ["iterate", str(tmp_path / "absent.yaml"), "--iteration", "0"])
    assert result.exit_code != 0 and "cannot read" in result.output


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------


def test_labelled_set_rules(local: tuple[LocalStore, Settings], source: Path) -> None:
    """Initial labels + oracle labels; unsure and estimation labels never train; all are excluded."""
    store, settings = local
    pool = Dataset.open(store, "pool")
    first = next(pool.iter_batches(10, flux=False))
    ids = first.ids.tolist()
    store.put_bytes("init/labels.csv", ("id,label\n" + "".join(f"{sid}.fits,emission\n" for sid in ids[:4])
                                        + "unknown-id,emission\n" + f"{ids[4]},weird\n").encode())
    spec = make_spec(initial={"labels": "init/labels.csv"})
    name = "rules"

    def event(label_set: str, items: list[tuple[int, str]]) -> None:
        append_event(store, name, LabelEvent(who="t", iteration=0, set=label_set,  # type: ignore[arg-type]
                                             items=[LabelItem(index=i, id=ids[i], label=lab) for i, lab in items]))

    event("oracle", [(0, UNSURE), (5, "absorption")])
    event("estimation", [(6, "emission")])
    labelled = load_labelled_set(store, name, spec, 1, pool, settings)
    assert labelled.pool_indices.tolist() == [1, 2, 3, 5]  # 0 became unsure, 6 is estimation-only
    assert labelled.pool_labels.tolist() == [1, 1, 1, 0]
    assert labelled.exclude.tolist() == [0, 1, 2, 3, 5, 6]
    assert any("not found" in note for note in labelled.notes) and any("weird" in note for note in labelled.notes)
    spec_training = make_spec(initial={"labels": "init/labels.csv"}, estimation={"useForTraining": True})
    assert 6 in load_labelled_set(store, name, spec_training, 1, pool, settings).pool_indices.tolist()
    # labels of iteration >= k are not used by iteration k (re-runs see the same labels)
    assert load_labelled_set(store, name, spec, 0, pool, settings).exclude.tolist() == [0, 1, 2, 3]


def test_initial_dataset_with_other_grid_is_refused(local: tuple[LocalStore, Settings], source: Path) -> None:
    store, settings = local
    params = PreprocessingParameters(grid=WavelengthGrid(start=6519.0, end=6732.0, points=100))
    files = sorted(source.glob("*.fits"))[:5]
    subset = source.parent / "subset"
    subset.mkdir(exist_ok=True)
    for f in files:
        (subset / f.name).write_bytes(f.read_bytes())
    run_preprocess(str(subset), "other-grid", params, settings, workers=1)
    store.put_bytes("init2/labels.csv", ("id,label\n" + "".join(f"{f.stem},absorption\n" for f in files)).encode())
    spec = make_spec(initial={"labels": "init2/labels.csv", "dataset": "other-grid"})
    with pytest.raises(ExperimentError, match="different wavelength grid"):
        load_labelled_set(store, "x", spec, 0, Dataset.open(store, "pool"), settings)


def test_oracle_maps_labels(local: tuple[LocalStore, Settings]) -> None:
    store, _ = local
    assert map_label("Double_Peak", CLASSES) == "double-peak"
    assert map_label("bad", CLASSES) == UNSURE and map_label(None, CLASSES) == UNSURE
    truth = load_label_file(store, "src/labels.csv")
    some_id = next(iter(truth))
    assert not some_id.endswith(".fits")
    oracle = SimulatedOracle(truth, CLASSES)
    assert oracle.label_of(some_id) in CLASSES + [UNSURE]
    assert oracle.label_of("folder/" + some_id) == oracle.label_of(some_id)
    assert oracle.label_of("never-seen") == UNSURE


def test_estimation_sample_round_trip() -> None:
    sampler = EstimationSampler([1, 2], 5, seed=3, stratified_size=6, reserve=2)
    rng = np.random.default_rng(0)
    sampler.update(np.arange(200), rng.integers(0, 3, 200))
    sample = sampler.result(also_exclude={0: 1})
    back = sample_from_dict(json.loads(json.dumps(sample.to_dict())))
    assert back.to_dict() == sample.to_dict()


def test_batch_map_adapts_to_small_batches() -> None:
    rng = np.random.default_rng(1)
    coords, params, notes = batch_map(rng.normal(size=(12, 8)), seed=0)
    assert len(coords["pca"]) == 12 and len(coords["tsne"]) == 12
    assert params["tsne"]["perplexity"] == pytest.approx(11 / 3)
    coords, _, notes = batch_map(rng.normal(size=(4, 8)), seed=0)
    assert "tsne" not in coords and len(coords["pca"]) == 4 and any("t-SNE" in n for n in notes)
    coords, _, _ = batch_map(np.ones((2, 3)), seed=0)
    assert coords["pca"] == [[0.0, 0.0], [0.0, 0.0]]
    assert batch_map(np.zeros((0, 3)), seed=0)[0] == {}


def test_candidate_votable_escapes_and_parses(tmp_path: Path) -> None:
    from astropy.io.votable import parse_single_table

    writer = CandidateWriter(tmp_path / "c.csv", tmp_path / "c.vot", "test <&> catalogue")
    writer.write([["id<&>\"1", 7, 10.5, -3.25, -1, "J000", float("nan"), "emission", 0.75, ""]])
    writer.close()
    table = parse_single_table(str(tmp_path / "c.vot")).to_table()
    assert table["id"][0] == 'id<&>"1' and table["index"][0] == 7 and np.ma.is_masked(table["obsid"][0])
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert rows[0]["snr"] == "" and rows[0]["probability"] == "0.75"


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


def test_iterations_on_s3(source: Path, s3_settings: Settings) -> None:  # noqa: F811
    store = open_store(settings=s3_settings)
    store.put_file("src/labels.csv", source / "labels.csv")
    run_preprocess(str(source), "pool", PreprocessingParameters(), s3_settings, workers=1)
    # BALD (MC dropout) with a diversity share (k-means on the embedding) and a random share
    spec = make_spec(model={"epochs": 4}, acquisition={"strategy": "bald", "mcSamples": 5,
                                                       "composition": {"uncertainty": 0.6, "diversity": 0.2, "random": 0.2}})
    oracle = SimulatedOracle.from_spec(spec, store)
    first = run_iteration("s3", spec, 0, store, s3_settings)
    assert first.cold_start
    oracle.answer(store, "s3", 0)
    second = run_iteration("s3", spec, 1, store, s3_settings)
    assert not second.cold_start
    for artifact in ("model", "scores", "batch", "estimation", "map", "candidates_csv", "candidates_vot", "run", "batch_predictions"):
        assert store.exists(iteration_key("s3", 1, artifact)), artifact
    assert store.exists(iteration_key("s3", 0, "metrics"))
    batch = read_json(store, iteration_key("s3", 1, "batch"))
    assert not {item["index"] for item in batch["items"]} & set(first.oracle_indices)
    reasons = [item["reason"] for item in batch["items"] if item["set"] == "oracle"]
    assert (reasons.count("uncertainty"), reasons.count("diversity"), reasons.count("random")) == (15, 5, 5)
    assert batch["strategy"] == "bald" and read_json(store, iteration_key("s3", 1, "run"))["seeds"]["mc_dropout"] == 4
    summary = oracle.answer(store, "s3", 1)
    assert summary.oracle == 25 and summary.estimation == second.counts["estimation"]
    metrics = evaluate_iteration("s3", spec, 1, store)
    assert metrics["estimable"] and metrics["target_precision"]["low"] <= metrics["target_precision"]["high"]
    assert store.url.startswith("s3://")
