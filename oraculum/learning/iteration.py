"""One iteration of the active-learning loop: what ``oraculum iterate MANIFEST --iteration K`` runs.

A Kubernetes Job (or a local subprocess) runs :func:`run_iteration` once per iteration; nothing
passes between iterations except the object store (see :mod:`oraculum.learning.experiments` for the keys):

1. ``k > 0``: evaluate iteration ``k - 1`` from the labels its estimation sample received
   (:func:`evaluate_iteration` -> ``iterations/<k-1>/metrics.json``).
2. The labelled set: the initial labels (if any) plus the oracle's current labels from the
   iterations before ``k`` (estimation labels only with ``estimation.useForTraining``; ``unsure``
   never). Every spectrum with any label, in any set, is excluded from selection.
3. No labelled set yet (a cold start, normally iteration 0): no model; the batch is a uniform
   random sample of ``acquisition.initialBatchSize`` spectra and there is no estimation sample.
4. Otherwise train the network (seed ``model.seed + k``), save it, and stream the whole pool
   through it once, shard by shard: per-spectrum scores to Parquet, predicted targets to the
   candidate catalogue (CSV and VOTable), and the scores into the batch selector and the
   estimation sampler (both bounded-memory reservoirs, see :mod:`oraculum.learning.acquisition` and
   :mod:`oraculum.learning.estimation`).
5. Write the batch (oracle items, then estimation items; predictions of blind estimation items go
   to ``batch-predictions.json`` instead), a 2-D map of the batch's embeddings, and ``run.json``
   (written last: its presence means the iteration finished).

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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from oraculum import __version__
from oraculum.learning.acquisition import BatchItem, BatchSelector, IndexSet, Strategy, bald, entropy, least_confidence, margin
from oraculum.spectra.datasets import Batch, Dataset, DatasetError
from oraculum.learning.estimation import EstimationSample, EstimationSampler, Stratum, estimate_metrics
from oraculum.learning.experiments import ExperimentError, iteration_key, read_json, read_reference, write_json
from oraculum.learning.labels import CurrentLabel, current_labels, read_events, read_label_csv
from oraculum.manifests import ExperimentSpec
from oraculum.learning.oracle import UNSURE, map_label
from oraculum.settings import Settings
from oraculum.store import ObjectStore

log = logging.getLogger(__name__)

__all__ = [
    "IterationResult",
    "LabelledSet",
    "evaluate_iteration",
    "iteration_seed",
    "load_labelled_set",
    "run_iteration",
    "sample_from_dict",
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
# The labelled set
# --------------------------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """The training set of one iteration and the spectra that must never be chosen again.

    Attributes:
        pool_indices, pool_labels: pool spectra to train on (global index, class id).
        external_flux, external_labels: labelled spectra from another dataset (``initial.dataset``).
        exclude: every pool index with any current label (any set, ``unsure`` included).
        known: pool index -> current label name (for the candidate catalogue's ``label`` column).
        notes: what was dropped and why.
    """

    pool_indices: np.ndarray
    pool_labels: np.ndarray
    external_flux: np.ndarray | None
    external_labels: np.ndarray
    exclude: np.ndarray
    known: dict[int, str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Spectra to train on."""
        return int(self.pool_indices.size + self.external_labels.size)


def _find_ids(dataset: Dataset, wanted: Iterable[str]) -> dict[str, int]:
    """Global indices of the ``wanted`` ids, by streaming the dataset's ids (no flux)."""
    remaining = set(wanted)
    found: dict[str, int] = {}
    if not remaining:
        return found
    for batch in dataset.iter_batches(SCORING_BATCH * 4, flux=False):
        for sid, index in zip(batch.ids.tolist(), batch.index.tolist()):
            if sid in remaining:
                found[sid] = int(index)
        if len(found) == len(remaining):
            break
    return found


def _initial_labels(
    store: ObjectStore, spec: ExperimentSpec, pool: Dataset, settings: Settings | None
) -> tuple[dict[int, str], np.ndarray | None, list[str], list[str]]:
    """(pool index -> class, external flux, external labels, notes) of ``spec.initial``."""
    assert spec.initial is not None
    raw = read_reference(store, spec.initial.labels, "initial.labels")
    try:
        mapping = read_label_csv(raw, f"initial.labels ({spec.initial.labels})")
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    notes: list[str] = []
    labels = {sid: map_label(label, spec.class_names) for sid, label in mapping.items()}
    unknown = Counter(mapping[sid] for sid, label in labels.items() if label == UNSURE)
    if unknown:
        notes.append(f"initial labels not among the classes (left out): {dict(unknown)}")
    labels = {sid: label for sid, label in labels.items() if label != UNSURE}
    if not labels:
        raise ExperimentError(f"initial.labels ({spec.initial.labels}): no label names one of the classes {spec.class_names}")
    external = spec.initial.dataset not in (None, spec.dataset)
    source = pool
    if external:
        try:
            source = Dataset.open(store, spec.initial.dataset, settings.cache_dir if settings else None)  # type: ignore[arg-type]
        except DatasetError as error:
            raise ExperimentError(f"initial.dataset: {error}") from None
        if source.grid != pool.grid:
            raise ExperimentError(
                f"initial.dataset {source.name!r} has a different wavelength grid than the pool {pool.name!r}: "
                "preprocess both with the same grid parameters"
            )
    found = _find_ids(source, labels)
    missing = len(labels) - len(found)
    if not found:
        raise ExperimentError(
            f"initial.labels ({spec.initial.labels}): none of its {len(labels)} ids is in dataset {source.name!r}"
        )
    if missing:
        notes.append(f"{missing} initial label id(s) not found in dataset {source.name!r} (left out)")
    if not external:
        return {found[sid]: labels[sid] for sid in sorted(found)}, None, [], notes
    ids = sorted(found, key=lambda sid: found[sid])
    batch = source.take([found[sid] for sid in ids])
    return {}, batch.flux, [labels[sid] for sid in ids], notes


def load_labelled_set(
    store: ObjectStore, name: str, spec: ExperimentSpec, k: int, pool: Dataset, settings: Settings | None = None
) -> LabelledSet:
    """The training set of iteration ``k`` and the spectra excluded from selection (see module doc)."""
    classes = {c: i for i, c in enumerate(spec.class_names)}
    notes: list[str] = []
    train: dict[int, str] = {}
    known: dict[int, str] = {}
    external_flux, external_labels = None, []
    counts: dict[str, Counter[str]] = {"initial": Counter(), "oracle": Counter(), "estimation": Counter(), "unsure": Counter()}
    if spec.initial is not None:
        initial, external_flux, external_labels, initial_notes = _initial_labels(store, spec, pool, settings)
        notes += initial_notes
        train.update(initial)
        known.update(initial)
        counts["initial"].update(list(initial.values()) + list(external_labels))
    events = [event for event in read_events(store, name) if event.iteration < k]
    current: dict[int, CurrentLabel] = current_labels(events)
    for index, label in sorted(current.items()):
        if index >= len(pool):
            raise ExperimentError(f"label for spectrum {index} ({label.id}) is outside dataset {pool.name!r}: wrong dataset?")
        known[index] = label.label
        usable = label.label in classes and (label.set != "estimation" or spec.estimation.use_for_training)
        if label.label not in classes:
            counts["unsure"][label.label] += 1
            train.pop(index, None)  # an oracle's 'unsure' overrides an initial label
        elif usable:
            train[index] = label.label
            counts["estimation" if label.set == "estimation" else "oracle"][label.label] += 1
        else:
            counts["estimation"][label.label] += 1
            train.pop(index, None)
    indices = np.array(sorted(train), dtype=np.int64)
    return LabelledSet(
        pool_indices=indices,
        pool_labels=np.array([classes[train[i]] for i in indices.tolist()], dtype=np.int64),
        external_flux=external_flux,
        external_labels=np.array([classes[c] for c in external_labels], dtype=np.int64),
        exclude=np.array(sorted(known), dtype=np.int64),
        known=known,
        counts={key: dict(sorted(value.items())) for key, value in counts.items()},
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Streaming writers: candidates as CSV and VOTable
# --------------------------------------------------------------------------------------------

#: Candidate catalogue columns: name, VOTable datatype, unit, UCD, description.
CANDIDATE_COLUMNS: list[tuple[str, str, str | None, str, str]] = [
    ("id", "char", None, "meta.id;meta.main", "Spectrum id (source file key without extension)"),
    ("index", "long", None, "meta.record", "Global index of the spectrum in the pool dataset"),
    ("ra", "double", "deg", "pos.eq.ra;meta.main", "Right ascension (J2000)"),
    ("dec", "double", "deg", "pos.eq.dec;meta.main", "Declination (J2000)"),
    ("obsid", "long", None, "meta.id", "Archive observation id (LAMOST OBSID); null if unknown"),
    ("designation", "char", None, "meta.id", "Archive designation"),
    ("snr", "double", None, "stat.snr", "Signal-to-noise ratio from the archive header"),
    ("predicted", "char", None, "src.class", "Predicted class"),
    ("probability", "double", None, "stat.probability", "Network probability of the predicted class"),
    ("label", "char", None, "meta.code.class", "The oracle's label, if the spectrum was labelled"),
]


class CandidateWriter:
    """Streams candidate rows to a CSV file and a VOTable (TABLEDATA) file, row group by row group.

    The VOTable is written by hand so that it never holds the catalogue in memory; it follows
    VOTable 1.4 and is read back with astropy in the tests (and by TOPCAT).
    """

    def __init__(self, csv_path: Path, vot_path: Path, description: str) -> None:
        import csv

        self.rows = 0
        self._csv_handle = open(csv_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_handle, lineterminator="\n")
        self._csv.writerow([c[0] for c in CANDIDATE_COLUMNS])
        self._vot = open(vot_path, "w", encoding="utf-8")
        self._vot.write('<?xml version="1.0" encoding="utf-8"?>\n')
        self._vot.write(
            '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        )
        self._vot.write(f' <RESOURCE type="results">\n  <DESCRIPTION>{escape(description)}</DESCRIPTION>\n')
        self._vot.write('  <TABLE name="candidates">\n')
        for name, datatype, unit, ucd, text in CANDIDATE_COLUMNS:
            extra = ' arraysize="*"' if datatype == "char" else ""
            extra += f" unit={quoteattr(unit)}" if unit else ""
            null = '<VALUES null="-1"/>' if name == "obsid" else ""
            self._vot.write(
                f"   <FIELD name={quoteattr(name)} datatype={quoteattr(datatype)}{extra} ucd={quoteattr(ucd)}>"
                f"<DESCRIPTION>{escape(text)}</DESCRIPTION>{null}</FIELD>\n"
            )
        self._vot.write("   <DATA>\n    <TABLEDATA>\n")

    def write(self, rows: list[list[Any]]) -> None:
        lines = []
        for row in rows:
            self._csv.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
            cells = []
            for value in row:
                if isinstance(value, float):
                    cells.append("NaN" if not math.isfinite(value) else repr(value))
                else:
                    cells.append(escape(str(value)))
            lines.append("     <TR>" + "".join(f"<TD>{cell}</TD>" for cell in cells) + "</TR>\n")
        self._vot.write("".join(lines))
        self.rows += len(rows)

    def close(self) -> None:
        self._vot.write("    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n")
        self._vot.close()
        self._csv_handle.close()


def _candidate_rows(
    batch: Batch, probs: np.ndarray, predicted: np.ndarray, targets: np.ndarray, classes: Sequence[str], known: dict[int, str]
) -> list[list[Any]]:
    rows = []
    for position in np.flatnonzero(np.isin(predicted, targets)).tolist():
        index = int(batch.index[position])
        c = int(predicted[position])
        meta = batch.meta
        rows.append([
            str(batch.ids[position]),
            index,
            float(meta["ra_deg"][position]),
            float(meta["dec_deg"][position]),
            int(meta["obsid"][position]),
            str(meta["designation"][position]),
            float(meta["snr"][position]),
            classes[c],
            float(probs[position, c]),
            known.get(index, ""),
        ])
    return rows


# --------------------------------------------------------------------------------------------
# Maps of the batch
# --------------------------------------------------------------------------------------------


def batch_map(embedding: np.ndarray, seed: int) -> tuple[dict[str, list[list[float]]], dict[str, Any], list[str]]:
    """2-D coordinates of each row of ``embedding`` by PCA, t-SNE and (if installed) UMAP.

    t-SNE's perplexity is adapted to small batches (``min(30, (n - 1) / 3)``, at least 1) and
    UMAP's ``n_neighbors`` likewise (``min(15, n - 1)``). Returns (coordinates per method,
    parameters, notes).
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # A batch is tiny (hundreds of points): one thread is as fast and never fights the
    # network's thread pools, or other pods on the node, for cores.
    with threadpool_limits(limits=1):
        return _batch_map(np.asarray(embedding, dtype=np.float64), seed)


def _batch_map(x: np.ndarray, seed: int) -> tuple[dict[str, list[list[float]]], dict[str, Any], list[str]]:
    n = x.shape[0]
    coords: dict[str, list[list[float]]] = {}
    params: dict[str, Any] = {}
    notes: list[str] = []
    if n == 0:
        return coords, params, ["empty batch: no map"]
    if n < 3 or float(np.ptp(x, axis=0).max(initial=0.0)) == 0.0:
        coords["pca"] = [[0.0, 0.0] for _ in range(n)]
        notes.append("fewer than 3 distinct points: PCA map is degenerate")
        return coords, params, notes
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    coords["pca"] = pca.fit_transform(x).tolist()
    params["pca"] = {"explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_]}
    if n >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
        coords["tsne"] = tsne.fit_transform(x).tolist()
        params["tsne"] = {"perplexity": perplexity, "max_iter": 500, "random_state": seed}
    else:
        notes.append("fewer than 5 spectra: no t-SNE map")
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        notes.append("UMAP not computed: the optional package umap-learn is not installed")
    else:
        if n >= 5:
            neighbours = int(min(15, n - 1))
            reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed)
            coords["umap"] = np.asarray(reducer.fit_transform(x)).tolist()
            params["umap"] = {"n_neighbors": neighbours, "random_state": seed}
    return coords, params, notes


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
        for batch in pool.iter_batches(SCORING_BATCH * 4, flux=False):
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
                candidates.write(_candidate_rows(batch, scored.probs, scored.predicted, targets, classes, labelled.known))
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


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def sample_from_dict(data: dict[str, Any]) -> EstimationSample:
    """The :class:`EstimationSample` stored by :meth:`EstimationSample.to_dict` (``estimation.json``)."""
    precision, stratified = data["precision"], data["stratified"]
    return EstimationSample(
        target_classes=tuple(int(c) for c in data["target_classes"]),
        precision_indices=np.asarray(precision["indices"], dtype=np.int64),
        precision_predicted=np.asarray(precision["predicted"], dtype=np.int64),
        target_population_by_class={int(c): int(n) for c, n in precision["population_by_class"].items()},
        predicted_counts={int(c): int(n) for c, n in data["predicted_counts"].items()},
        stratified_indices=np.asarray(stratified["indices"], dtype=np.int64),
        stratified_predicted=np.asarray(stratified["predicted"], dtype=np.int64),
        strata={
            int(c): Stratum(int(c), int(s["population"]), int(s["sample_size"]),
                            float("nan") if s["weight"] is None else float(s["weight"]))
            for c, s in stratified["strata"].items()
        },
        seed=int(data["seed"]),
    )


def evaluate_iteration(name: str, spec: ExperimentSpec, k: int, store: ObjectStore) -> dict[str, Any]:
    """Metrics of iteration ``k`` from its estimation sample's labels -> ``iterations/<k>/metrics.json``.

    The document holds the :class:`~oraculum.learning.estimation.Metrics` fields (``target_precision``
    with its interval, ``predicted_target_count``, ``estimated_target_count`` with its interval,
    per-class precision, and accuracy/recall when a stratified sample was drawn) plus the
    strategy, the labels so far per class, and the training-set size of the iteration's model.
    A cold-start iteration has no model and no estimate: ``estimable`` is false.
    """
    batch = read_json(store, iteration_key(name, k, "batch"), f"batch of iteration {k} of experiment {name!r}")
    try:
        run = read_json(store, iteration_key(name, k, "run"))
    except ExperimentError:
        run = {}
    all_events = [event for event in read_events(store, name) if event.iteration <= k]
    so_far = current_labels(all_events)
    per_class = Counter(label.label for label in so_far.values())
    per_set = Counter(label.set for label in so_far.values())
    doc: dict[str, Any] = {
        "experiment": name,
        "iteration": k,
        "strategy": batch.get("strategy"),
        "dataset": batch.get("dataset"),
        "training_labels": (run.get("counts") or {}).get("training"),
        "labels_so_far": dict(sorted(per_class.items())),
        "labels_so_far_by_set": dict(sorted(per_set.items())),
        "labels_total": len(so_far),
        "batch_labelled": sum(1 for item in batch["items"] if int(item["index"]) in so_far),
        "batch_size": len(batch["items"]),
    }
    if batch.get("cold_start"):
        doc.update(estimable=False, notes=["cold start: no model in this iteration, so nothing to estimate"])
    else:
        sample = sample_from_dict(read_json(store, iteration_key(name, k, "estimation"), f"estimation sample of iteration {k}"))
        classes = {c: i for i, c in enumerate(spec.class_names)}
        events = current_labels(read_events(store, name, k))
        wanted = set(sample.indices_to_label().tolist())
        truth = {i: classes[label.label] for i, label in events.items() if i in wanted and label.label in classes}
        metrics = estimate_metrics(sample, truth, spec.estimation.confidence, spec.estimation.method,
                                   dict(enumerate(spec.class_names)))
        doc.update(estimable=True, **metrics.model_dump(mode="json"))
        unsure = sum(1 for i, label in events.items() if i in wanted and label.label not in classes)
        if unsure:
            doc["notes"] = [*doc.get("notes", []), f"{unsure} estimation spectra labelled unsure: left out (assumed missing at random)"]
    write_json(store, iteration_key(name, k, "metrics"), doc)
    return doc
