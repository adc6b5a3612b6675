"""One iteration of the active-learning loop: what ``oraculum iterate MANIFEST --iteration K`` runs.

A Kubernetes Job (or a local subprocess) runs :func:`run_iteration` once per iteration; nothing
passes between iterations except the object store (see :mod:`oraculum.learning.experiments` for the keys):

1. ``k > 0``: evaluate iteration ``k - 1`` from the labels its estimation sample received
   (:func:`~oraculum.learning.evaluation.evaluate_iteration` -> ``iterations/<k-1>/metrics.json``).
2. The labelled set (:mod:`oraculum.learning.labelled_set`): the initial labels (if any) plus the
   oracle's current labels from the iterations before ``k`` (estimation labels only with
   ``estimation.useForTraining``; ``unsure`` never). Every spectrum with any label, in any set, is
   excluded from selection.
3. No labelled set yet (a cold start, normally iteration 0): no model; the batch is a uniform
   random sample of ``acquisition.initialBatchSize`` spectra and there is no estimation sample.
4. Otherwise train the network (seed ``model.seed + k``), save it, and stream the whole pool
   through it once, shard by shard: per-spectrum scores to Parquet, predicted targets to the
   candidate catalogue (CSV and VOTable, :mod:`oraculum.learning.candidates`), and the scores into
   the batch selector and the estimation sampler (both bounded-memory reservoirs, see
   :mod:`oraculum.learning.acquisition` and :mod:`oraculum.learning.estimation_sample`).
5. Write the batch (oracle items, then estimation items; predictions of blind estimation items go
   to ``batch-predictions.json`` instead), a 2-D map of the batch's embeddings
   (:mod:`oraculum.learning.batch_maps`), and ``run.json`` (written last: its presence means the
   iteration finished).

Deterministic: the same store contents, spec and ``k`` give the same batch (on the same machine
and library versions: training uses TensorFlow's deterministic ops).

TensorFlow is imported only inside the functions that train or score.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from oraculum import __version__
from oraculum.learning.acquisition import BatchItem, BatchSelector
from oraculum.learning.batch_maps import batch_map
from oraculum.learning.candidates import CandidateWriter, candidate_rows
from oraculum.learning.estimation_sample import EstimationSampler
from oraculum.learning.evaluation import evaluate_iteration
from oraculum.learning.experiments import ExperimentError, iteration_key, write_json
from oraculum.learning.labelled_set import ID_BATCH, LabelledSet, load_labelled_set
from oraculum.learning.reservoirs import IndexSet
from oraculum.learning.uncertainty import Strategy, bald, entropy, least_confidence, margin
from oraculum.manifests import ExperimentSpec
from oraculum.settings import Settings
from oraculum.spectra.datasets import Batch, Dataset, DatasetError
from oraculum.store import ObjectStore

log = logging.getLogger(__name__)

__all__ = [
    "IterationResult",
    "iteration_seed",
    "run_iteration",
]

#: Rows read from the pool per step while scoring (bounded memory: flux of 4096 x grid points).
SCORING_BATCH = 4096
#: Shortlist oversampling for the diversity part of a batch.
DIVERSITY_OVERSAMPLE = 10
#: Hard cap of the seed handed to training (TrainingConfig's bound).
_MAX_SEED = 2**31 - 2

#: ``progress(stage, done, total)``: called as each stage starts (``done``/``total`` None) and as
#: countable stages advance: ``train`` (epochs), ``score`` (pool spectra). The stages are the keys
#: of ``run.json``'s ``durations_s`` (evaluate_previous, open_dataset, labelled_set, train,
#: save_model, score, select, upload, map).
Progress = Callable[[str, int | None, int | None], None]
#: What the counts of a countable stage count.
STAGE_UNITS = {"train": "epochs", "score": "spectra"}


def iteration_seed(spec: ExperimentSpec, k: int) -> int:
    """The seed of iteration ``k``: ``model.seed + k`` (training, acquisition, estimation, maps)."""
    return int((spec.model.seed + k) % (_MAX_SEED + 1))


# --------------------------------------------------------------------------------------------
# The iteration
# --------------------------------------------------------------------------------------------


@dataclass
class IterationResult:
    """What one iteration did; everything here is also in the store (``run.json``, ``batch.json``)."""

    experiment: str
    iteration: int
    seed: int
    cold_start: bool
    items: list[dict[str, Any]]
    counts: dict[str, int]
    durations: dict[str, float]
    keys: dict[str, str]
    previous_metrics: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def oracle_indices(self) -> list[int]:
        return [int(item["index"]) for item in self.items if item["set"] == "oracle"]

    @property
    def estimation_indices(self) -> list[int]:
        return [int(item["index"]) for item in self.items if item["set"] == "estimation"]


class _Timer:
    """Times the stages of an iteration, and announces each one as it starts."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.durations: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.progress:
            self.progress(name, None, None)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.durations[name] = round(self.durations.get(name, 0.0) + time.perf_counter() - started, 4)


def _column_names(classes: Sequence[str]) -> list[str]:
    """Class names usable as Parquet column suffixes (spaces and the like become '_')."""
    names: list[str] = []
    for name in classes:
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
        while safe in names:
            safe += "_"
        names.append(safe)
    return names


def _uncertainty(strategy: Strategy, probs: np.ndarray, mc_probs: np.ndarray | None) -> np.ndarray:
    """The strategy's score for a chunk; ``random`` records entropy (its selection ignores it)."""
    if strategy is Strategy.BALD:
        assert mc_probs is not None
        return bald(mc_probs)
    if strategy is Strategy.MARGIN:
        return margin(probs)
    if strategy is Strategy.LEAST_CONFIDENCE:
        return least_confidence(probs)
    return entropy(probs)


def _meta_of(batch: Batch, position: int) -> dict[str, Any]:
    meta = batch.meta

    def num(value: Any) -> float | None:
        value = float(value)
        return value if math.isfinite(value) else None

    obsid = int(meta["obsid"][position])
    return {
        "ra": num(meta["ra_deg"][position]),
        "dec": num(meta["dec_deg"][position]),
        "obsid": obsid if obsid >= 0 else None,
        "designation": str(meta["designation"][position]) or None,
        "snr": num(meta["snr"][position]),
    }


def _versions() -> dict[str, str]:
    import numpy
    import sklearn

    versions = {"oraculum": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}
    try:  # only report, never import TensorFlow just for this
        import sys

        if "tensorflow" in sys.modules:
            versions["tensorflow"] = sys.modules["tensorflow"].__version__
        if "keras" in sys.modules:
            versions["keras"] = sys.modules["keras"].__version__
    except Exception:  # pragma: no cover
        pass
    return versions


def _shuffled(items: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    order = np.random.default_rng([seed, 77]).permutation(len(items))
    return [items[i] for i in order.tolist()]


def _lookup_scores(path: Path, indices: np.ndarray, columns: Sequence[str]) -> dict[int, dict[str, Any]]:
    """Rows of a score file for the given global indices (a streaming pass over the file)."""
    from oraculum.learning.scores import iter_scores

    wanted = IndexSet(indices)
    out: dict[int, dict[str, Any]] = {}
    for chunk in iter_scores(path, columns=["index", *columns]):
        hit = wanted.contains(chunk["index"])
        for position in np.flatnonzero(hit).tolist():
            out[int(chunk["index"][position])] = {name: chunk[name][position] for name in columns}
    return out


def run_iteration(
    experiment_name: str,
    spec: ExperimentSpec,
    k: int,
    store: ObjectStore,
    settings: Settings | None = None,
    progress: Progress | None = None,
    *,
    evaluate_previous: bool = True,
) -> IterationResult:
    """Run iteration ``k`` of the experiment (see the module docstring) and return what it did.

    ``progress`` hears of each stage and of the epochs and scored spectra (see :data:`Progress`).
    """
    if k < 0:
        raise ExperimentError(f"iteration must be non-negative, got {k}")
    timer = _Timer(progress)
    started = datetime.now(timezone.utc)
    notes: list[str] = []
    previous = None
    if k > 0 and evaluate_previous:
        if not store.exists(iteration_key(experiment_name, k - 1, "batch")):
            raise ExperimentError(
                f"experiment {experiment_name!r}: iteration {k - 1} has not run (no batch.json); run it before iteration {k}"
            )
        with timer.step("evaluate_previous"):
            previous = evaluate_iteration(experiment_name, spec, k - 1, store)
    with timer.step("open_dataset"):
        try:
            pool = Dataset.open(store, spec.dataset, settings.cache_dir if settings else None)
        except DatasetError as error:
            raise ExperimentError(str(error)) from None
    seed = iteration_seed(spec, k)
    with timer.step("labelled_set"):
        labelled = load_labelled_set(store, experiment_name, spec, k, pool, settings)
    notes += labelled.notes
    unlabelled = len(pool) - int(labelled.exclude.size)
    if unlabelled <= 0:
        raise ExperimentError(f"every spectrum of dataset {pool.name!r} is labelled: nothing left to choose")
    common = dict(experiment=experiment_name, k=k, spec=spec, store=store, pool=pool, labelled=labelled,
                  seed=seed, timer=timer, started=started, notes=notes, previous=previous)
    if labelled.size == 0:
        if k > 0:
            notes.append("no usable label yet (all unsure or none given): cold start again with a random batch")
        return _cold_start(**common, unlabelled=unlabelled)
    return _warm(**common, unlabelled=unlabelled, settings=settings)


def _batch_document(
    experiment: str, k: int, spec: ExperimentSpec, pool: Dataset, seed: int, items: list[dict[str, Any]], cold_start: bool
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "iteration": k,
        "dataset": pool.name,
        "dataset_checksum": pool.index.checksum,
        "strategy": "random" if cold_start else spec.acquisition.strategy,
        "cold_start": cold_start,
        "seed": seed,
        "blind": spec.estimation.blind,
        "classes": [c.model_dump(mode="json") for c in spec.classes],
        "size": len(items),
        "oracle_size": sum(1 for item in items if item["set"] == "oracle"),
        "estimation_size": sum(1 for item in items if item["set"] == "estimation"),
        "created": datetime.now(timezone.utc).isoformat(),
        "items": items,
    }


def _run_document(
    experiment: str, k: int, spec: ExperimentSpec, pool: Dataset, seed: int, started: datetime, timer: _Timer,
    counts: dict[str, int], labelled: LabelledSet, notes: list[str], training: dict[str, Any] | None, extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "iteration": k,
        "dataset": {"name": pool.name, "checksum": pool.index.checksum, "count": len(pool),
                    "grid": pool.grid.model_dump(mode="json")},
        "spec": spec.model_dump(mode="json", by_alias=True),
        "seeds": {"iteration": seed, "training": seed if training else None, "acquisition": seed, "estimation": seed,
                  "map": seed, "mc_dropout": seed if spec.acquisition.strategy == "bald" and training else None},
        "versions": _versions(),
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "durations_s": timer.durations,
        "counts": counts,
        "labels": labelled.counts,
        "training": training,
        "notes": notes,
        **extra,
    }


def _cold_start(
    experiment: str, k: int, spec: ExperimentSpec, store: ObjectStore, pool: Dataset, labelled: LabelledSet, seed: int,
    timer: _Timer, started: datetime, notes: list[str], previous: dict[str, Any] | None, unlabelled: int,
) -> IterationResult:
    size = min(spec.acquisition.initial_batch_size or spec.acquisition.batch_size, unlabelled)
    with timer.step("select"):
        selector = BatchSelector("random", size, {"random": 1.0}, seed=seed, exclude=IndexSet(labelled.exclude))
        for batch in pool.iter_batches(ID_BATCH, flux=False):
            selector.update(batch.index, scores=np.zeros(len(batch)))
        chosen = selector.result()
    indices = np.array([item.index for item in chosen], dtype=np.int64)
    with timer.step("map"):
        spectra = pool.take(indices)
        coords, params, map_notes = batch_map(spectra.flux, seed)  # no network yet: map the flux itself
    items = [
        {"index": item.index, "id": str(spectra.ids[p]), "set": "oracle", "reason": "random", "score": None,
         "meta": _meta_of(spectra, p)}
        for p, item in enumerate(chosen)
    ]
    keys = _write_batch_and_map(store, experiment, k, spec, pool, seed, items, {}, coords, params, map_notes,
                                "flux (no model yet)", cold_start=True)
    counts = {"pool": len(pool), "labelled_excluded": int(labelled.exclude.size), "training": 0,
              "oracle_batch": len(items), "estimation": 0, "candidates": 0}
    keys["run"] = iteration_key(experiment, k, "run")
    write_json(store, keys["run"], _run_document(experiment, k, spec, pool, seed, started, timer, counts, labelled,
                                                 notes, None, {"cold_start": True}))
    return IterationResult(experiment, k, seed, True, items, counts, timer.durations, keys, previous, notes)


def _write_batch_and_map(
    store: ObjectStore, experiment: str, k: int, spec: ExperimentSpec, pool: Dataset, seed: int,
    items: list[dict[str, Any]], hidden: dict[str, Any], coords: dict[str, list[list[float]]], params: dict[str, Any],
    map_notes: list[str], source: str, cold_start: bool,
) -> dict[str, str]:
    keys = {name: iteration_key(experiment, k, name) for name in ("map", "batch")}
    points = [
        {"index": item["index"], "id": item["id"], "set": item["set"],
         **{method: values[p] for method, values in coords.items()}}
        for p, item in enumerate(items)
    ]
    write_json(store, keys["map"], {"iteration": k, "embedding": source, "methods": sorted(coords), "parameters": params,
                                    "notes": map_notes, "points": points})
    if hidden:
        keys["batch_predictions"] = iteration_key(experiment, k, "batch_predictions")
        write_json(store, keys["batch_predictions"], {"iteration": k, "note": "predictions hidden from the oracle "
                                                      "(blind estimation items); reveal after labelling", "items": hidden})
    shown = _shuffled(items, seed) if spec.estimation.blind and hidden else items
    write_json(store, keys["batch"], _batch_document(experiment, k, spec, pool, seed, shown, cold_start))
    return keys


def _train(spec: ExperimentSpec, seed: int, pool: Dataset, labelled: LabelledSet, progress: Progress | None) -> Any:
    from oraculum.learning.model import TrainingConfig, train

    parts_x, parts_y = [], []
    if labelled.pool_indices.size:
        parts_x.append(pool.take(labelled.pool_indices).flux)
        parts_y.append(labelled.pool_labels)
    if labelled.external_flux is not None and labelled.external_labels.size:
        parts_x.append(labelled.external_flux)
        parts_y.append(labelled.external_labels)
    config = TrainingConfig(
        preset=spec.model.preset, epochs=spec.model.epochs, batch_size=spec.model.batch_size,
        learning_rate=spec.model.learning_rate, patience=spec.model.patience,
        class_weight=spec.model.class_weight, seed=seed,
    )
    def on_epoch(done: int, total: int) -> None:
        if progress:
            progress("train", done, total)

    return train(np.concatenate(parts_x), np.concatenate(parts_y), spec.class_names, config, on_epoch=on_epoch)


def _warm(
    experiment: str, k: int, spec: ExperimentSpec, store: ObjectStore, pool: Dataset, labelled: LabelledSet, seed: int,
    timer: _Timer, started: datetime, notes: list[str], previous: dict[str, Any] | None, unlabelled: int,
    settings: Settings | None,
) -> IterationResult:
    from oraculum.learning.model import save_model
    from oraculum.learning.scores import ScoreWriter, prob_column
    from oraculum.learning.scoring import Scorer

    classes = spec.class_names
    columns = _column_names(classes)
    targets = np.array(spec.target_indices, dtype=np.int64)
    strategy = Strategy.parse(spec.acquisition.strategy)
    acquisition = spec.acquisition
    batch_size = min(acquisition.batch_size, unlabelled)
    keys: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="oraculum-iteration-") as tmp_dir:
        tmp = Path(tmp_dir)
        with timer.step("train"):
            trained = _train(spec, seed, pool, labelled, timer.progress)
        with timer.step("save_model"):
            save_model(trained, tmp / "model.keras")
            keys["model"] = iteration_key(experiment, k, "model")
            store.put_file(keys["model"], tmp / "model.keras")

        exclude = IndexSet(labelled.exclude)
        diversity = acquisition.composition.get("diversity", 0.0) > 0
        selector = BatchSelector(strategy, batch_size, acquisition.composition, seed=seed, exclude=exclude,
                                 oversample=DIVERSITY_OVERSAMPLE)
        sampler = EstimationSampler(targets.tolist(), spec.estimation.size, seed=seed, exclude=exclude,
                                    stratified_size=spec.estimation.stratified_size, reserve=batch_size)
        mc = acquisition.mc_samples if strategy is Strategy.BALD else 0
        # always embed: the same compiled scorer then gives the batch map's embeddings (no re-trace)
        scorer = Scorer(trained.model, mc_samples=mc, embed=True, mc_seed=seed)
        description = (f"oraculum {__version__}: spectra of dataset {pool.name} predicted as {', '.join(classes[t] for t in targets)} "
                       f"by experiment {experiment}, iteration {k}")
        candidates = CandidateWriter(tmp / "candidates.csv", tmp / "candidates.vot", description)
        done = 0
        with timer.step("score"), ScoreWriter(tmp / "scores.parquet", columns, include_ids=True) as writer:
            for batch in pool.iter_batches(SCORING_BATCH):
                scored = scorer.score(batch.flux, batch.index, batch.ids)  # type: ignore[arg-type]
                uncertainty = _uncertainty(strategy, scored.probs, scored.mc_probs)
                if strategy is Strategy.RANDOM:
                    selector.update(scored.index, embeddings=scored.embedding if diversity else None, probs=scored.probs)
                else:
                    selector.update(scored.index, uncertainty, scored.embedding if diversity else None)
                sampler.update(scored.index, scored.predicted)
                writer.write(scored, {"uncertainty": uncertainty.astype(np.float32)})
                candidates.write(candidate_rows(batch, scored.probs, scored.predicted, targets, classes, labelled.known))
                done += len(batch)
                if timer.progress:
                    timer.progress("score", done, len(pool))
        candidates.close()
        with timer.step("select"):
            chosen: list[BatchItem] = selector.result()
            chosen_idx = np.array([item.index for item in chosen], dtype=np.int64)
            prob_cols = [prob_column(c) for c in columns]
            lookup = _lookup_scores(tmp / "scores.parquet", chosen_idx, ["predicted", "uncertainty", *prob_cols])
            sample = sampler.result(also_exclude={i: int(lookup[i]["predicted"]) for i in chosen_idx.tolist()})
            est_idx = sample.indices_to_label()
            lookup.update(_lookup_scores(tmp / "scores.parquet", est_idx, ["predicted", "uncertainty", *prob_cols]))
        with timer.step("upload"):
            for name in ("scores", "candidates_csv", "candidates_vot"):
                keys[name] = iteration_key(experiment, k, name)
                filename = {"scores": "scores.parquet", "candidates_csv": "candidates.csv", "candidates_vot": "candidates.vot"}[name]
                store.put_file(keys[name], tmp / filename)

    with timer.step("map"):
        all_idx = np.concatenate([chosen_idx, est_idx]).astype(np.int64)
        spectra = pool.take(all_idx)
        embedding = scorer.score(spectra.flux, all_idx).embedding  # type: ignore[arg-type]
        coords, params, map_notes = batch_map(embedding, seed)

    precision_set = set(sample.precision_indices.tolist())

    def prediction(index: int) -> dict[str, Any]:
        row = lookup[index]
        return {
            "predicted": classes[int(row["predicted"])],
            "probabilities": {c: float(row[prob_column(col)]) for c, col in zip(classes, columns)},
            "uncertainty": float(row["uncertainty"]),
        }

    items: list[dict[str, Any]] = []
    for p, item in enumerate(chosen):
        pred = prediction(item.index)
        items.append({"index": item.index, "id": str(spectra.ids[p]), "set": "oracle", "reason": item.reason,
                      "score": item.score, "predicted": pred["predicted"], "probabilities": pred["probabilities"],
                      "meta": _meta_of(spectra, p)})
    hidden: dict[str, Any] = {}
    for q, index in enumerate(est_idx.tolist()):
        p = len(chosen) + q
        pred = prediction(index)
        reason = "precision-sample" if index in precision_set else "stratified-sample"
        entry: dict[str, Any] = {"index": index, "id": str(spectra.ids[p]), "set": "estimation", "reason": reason,
                                 "meta": _meta_of(spectra, p)}
        if spec.estimation.blind:
            hidden[str(index)] = {"score": pred["uncertainty"], "predicted": pred["predicted"],
                                  "probabilities": pred["probabilities"]}
        else:
            entry.update(score=pred["uncertainty"], predicted=pred["predicted"], probabilities=pred["probabilities"])
        items.append(entry)

    keys["estimation"] = iteration_key(experiment, k, "estimation")
    write_json(store, keys["estimation"], {"iteration": k, "class_names": classes, **sample.to_dict()})
    keys.update(_write_batch_and_map(store, experiment, k, spec, pool, seed, items, hidden, coords, params, map_notes,
                                     "network embedding (penultimate layer)", cold_start=False))
    counts = {
        "pool": len(pool), "labelled_excluded": int(labelled.exclude.size), "training": labelled.size,
        "oracle_batch": len(chosen), "estimation": int(est_idx.size), "candidates": candidates.rows,
        "predicted_targets": sample.predicted_target_count,
        "predicted": {classes[c]: n for c, n in sample.predicted_counts.items()},  # type: ignore[dict-item]
    }
    record = trained.record.model_dump(mode="json")
    keys["run"] = iteration_key(experiment, k, "run")
    write_json(store, keys["run"], _run_document(experiment, k, spec, pool, seed, started, timer, counts, labelled, notes,
                                                 record, {"cold_start": False, "score_columns": dict(zip(classes, columns))}))
    return IterationResult(experiment, k, seed, False, items, counts, timer.durations, keys, previous, notes)
