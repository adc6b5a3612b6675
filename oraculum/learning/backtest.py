"""Backtests: does uncertainty sampling beat random labelling here, and are the error bars honest?

:func:`run_backtest` runs the loop for several acquisition strategies on the same pool with the
same seeds, each strategy as its own experiment in the store, with the simulated oracle
(:mod:`oraculum.learning.oracle`) answering every batch from a file of known labels. After each
iteration it records a point of the learning curve:

* ``labels``: spectra the iteration's model was trained on (what the strategies compete on);
  ``labels_total`` adds the estimation labels (the oracle's whole effort);
* ``estimate``, ``low``, ``high``: the precision estimate of the iteration's candidate
  catalogue with its confidence interval, from the estimation sample (the published method);
* ``true``: the real precision of the same population the estimate refers to (spectra predicted
  as targets that were neither labelled nor in the oracle batch), computed from the known
  labels, so interval coverage can be checked; ``covered`` says whether the interval holds it;
* ``precision_pool``, ``recall_pool``: real precision and recall of the model's target
  predictions over the whole pool (the catalogue as a user gets it).

``curves.json`` holds the curves per strategy, the labels each strategy needed to reach the
requested precision and recall, and the interval coverage; ``curves.png`` plots them. With
``synthetic=True`` every output says that the figures come from synthetic data.

:func:`prepare_synthetic` makes the pool for ``oraculum backtest --synthetic N``: N synthetic
LAMOST-format spectra with rare targets, preprocessed into a dataset, and a built-in spec
(:func:`default_spec`, tiny network preset for speed).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oraculum.learning.reservoirs import IndexSet
from oraculum.learning.uncertainty import Strategy
from oraculum.spectra.datasets import Dataset, DatasetError
from oraculum.learning.experiments import ExperimentError, experiment_prefix, iteration_key, json_safe
from oraculum.learning.evaluation import evaluate_iteration
from oraculum.learning.iteration import run_iteration
from oraculum.learning.labelled_set import load_labelled_set
from oraculum.manifests import ExperimentSpec
from oraculum.learning.oracle import SimulatedOracle
from oraculum.settings import Settings
from oraculum.store import ObjectStore

__all__ = [
    "SYNTHETIC_FRACTIONS",
    "SYNTHETIC_NOTE",
    "BacktestResult",
    "default_spec",
    "format_table",
    "labels_to_reach",
    "plot_curves",
    "prepare_synthetic",
    "run_backtest",
]

#: Label mix of the synthetic backtest pool: rare targets (2.5 % emission-line stars, of which
#: 1.5 % single-peak and 1 % double-peak), so that a random batch holds one or two of them.
SYNTHETIC_FRACTIONS = {"absorption": 0.955, "emission": 0.015, "double-peak": 0.01, "bad": 0.02}
SYNTHETIC_NOTE = "All figures come from synthetic data (oraculum.spectra.synth), not from a real archive."

Echo = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# The synthetic pool and the built-in spec
# --------------------------------------------------------------------------------------------


def default_spec(
    dataset: str, labels: str, *, preset: str = "tiny", batch_size: int = 40, initial_batch_size: int = 50,
    estimation_size: int = 20, epochs: int = 20, patience: int = 3, seed: int = 0,
) -> ExperimentSpec:
    """The built-in experiment of ``oraculum backtest --synthetic``: synthetic classes, targets
    emission and double-peak, simulated oracle from ``labels``."""
    return ExperimentSpec.model_validate({
        "dataset": dataset,
        "classes": [
            {"name": "absorption", "hotkey": "1"},
            {"name": "emission", "hotkey": "2", "target": True},
            {"name": "double-peak", "hotkey": "3", "target": True},
        ],
        "model": {"preset": preset, "epochs": epochs, "patience": patience, "seed": seed},
        "acquisition": {"strategy": "entropy", "batchSize": batch_size, "initialBatchSize": initial_batch_size},
        "estimation": {"size": estimation_size, "blind": True},
        "oracle": {"type": "simulated", "labels": labels},
    })


def prepare_synthetic(
    store: ObjectStore, settings: Settings, count: int, seed: int = 0, echo: Echo | None = None,
    fractions: dict[str, float] | None = None,
) -> tuple[str, str]:
    """Generate (once) ``count`` synthetic spectra and preprocess them (once) into a dataset.

    Returns (dataset name, store key of the label file). Both are reused when already present.
    """
    from oraculum.spectra.synth.generator import SynthConfig, generate
    from oraculum.ingest.pipeline import run_preprocess
    from oraculum.spectra.preprocessing import PreprocessingParameters

    import hashlib

    echo = echo or (lambda message: None)
    fractions = dict(fractions or SYNTHETIC_FRACTIONS)
    tag = f"synthetic-{count}-s{seed}"
    if fractions != SYNTHETIC_FRACTIONS:
        tag += "-f" + hashlib.sha256(json.dumps(fractions, sort_keys=True).encode()).hexdigest()[:6]
    prefix = f"backtest/{tag}"
    dataset = f"backtest-{tag}"
    labels_key = f"{prefix}/labels.csv"
    if not store.exists(labels_key):
        echo(f"generating {count} synthetic LAMOST-format spectra in {store.url}/{prefix} (synthetic data)")
        config = SynthConfig(count=count, seed=seed, fractions=fractions)
        generate(store, prefix, config)
    try:
        Dataset.open(store, dataset)
    except DatasetError:
        echo(f"preprocessing them into dataset {dataset!r}")
        run_preprocess(f"{store.url}/{prefix}", dataset, PreprocessingParameters(), settings, store_url=store.url, workers=1)
    return dataset, labels_key


# --------------------------------------------------------------------------------------------
# True performance (known in simulation)
# --------------------------------------------------------------------------------------------


def _truth_by_index(pool: Dataset, oracle: SimulatedOracle, class_names: Sequence[str]) -> np.ndarray:
    """True class id of every pool spectrum (-1 where the label file says nothing usable)."""
    lookup = {name: i for i, name in enumerate(class_names)}
    truth = np.full(len(pool), -1, dtype=np.int64)
    for batch in pool.iter_batches(65_536, flux=False):
        truth[batch.index] = [lookup.get(oracle.label_of(str(sid)), -1) for sid in batch.ids.tolist()]
    return truth


def _true_metrics(
    store: ObjectStore, name: str, k: int, truth: np.ndarray, targets: np.ndarray, frame_exclude: IndexSet
) -> dict[str, Any]:
    """Real precision (estimation frame and pool) and recall (pool) of iteration k's predictions."""
    from oraculum.learning.scores import iter_scores

    predicted_target = np.zeros(truth.size, dtype=bool)
    with tempfile.TemporaryDirectory(prefix="oraculum-backtest-") as tmp:
        path = Path(tmp) / "scores.parquet"
        store.get_file(iteration_key(name, k, "scores"), path)
        for chunk in iter_scores(path, columns=["index", "predicted"]):
            predicted_target[chunk["index"]] = np.isin(chunk["predicted"], targets)
    known = truth >= 0
    is_target = np.isin(truth, targets) & known
    in_frame = predicted_target & known & ~frame_exclude.contains(np.arange(truth.size))

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    return {
        "true": ratio(int((in_frame & is_target).sum()), int(in_frame.sum())),
        "frame_size": int(in_frame.sum()),
        "precision_pool": ratio(int((predicted_target & is_target).sum()), int((predicted_target & known).sum())),
        "recall_pool": ratio(int((predicted_target & is_target).sum()), int(is_target.sum())),
        "predicted_targets": int(predicted_target.sum()),
        "true_targets": int(is_target.sum()),
    }


# --------------------------------------------------------------------------------------------
# The backtest
# --------------------------------------------------------------------------------------------


@dataclass
class BacktestResult:
    """What :func:`run_backtest` wrote and found."""

    document: dict[str, Any]
    curves_path: Path
    figure_path: Path | None
    table: str
    durations: dict[str, float] = field(default_factory=dict)


def labels_to_reach(points: Sequence[dict[str, Any]], precision: float, recall: float | None = None) -> int | None:
    """Fewest training labels at which the real pool precision (and recall) reach the targets."""
    for point in points:
        p, r = point.get("precision_pool"), point.get("recall_pool")
        if p is not None and p >= precision and (recall is None or (r is not None and r >= recall)):
            return int(point["labels"])
    return None


def _coverage(curves: dict[str, list[dict[str, Any]]], confidence: float) -> dict[str, Any]:
    sampled = [p for points in curves.values() for p in points
               if p.get("trials") and not p.get("census") and p.get("true") is not None]
    census = [p for points in curves.values() for p in points if p.get("census")]
    covered = sum(1 for p in sampled if p["covered"])
    n = len(sampled)
    out: dict[str, Any] = {
        "confidence": confidence,
        "intervals": n,
        "covered": covered,
        "rate": covered / n if n else None,
        "census_points": len(census),
        "note": "intervals of one strategy's successive iterations are not independent; "
        "with few intervals the observed rate is itself uncertain (see the binomial interval)",
    }
    if n:
        from oraculum.learning.intervals import binomial_interval

        est, low, high = binomial_interval(covered, n, 0.95, "wilson")
        out["rate_interval_95"] = [low, high]
    return out


def run_backtest(
    spec: ExperimentSpec,
    strategies: Sequence[str],
    iterations: int,
    store: ObjectStore,
    settings: Settings,
    out_dir: str | Path,
    *,
    name_prefix: str = "backtest",
    labels: str | None = None,
    synthetic: bool = False,
    precision: float = 0.9,
    recall: float | None = 0.7,
    echo: Echo | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    plot: bool = True,
) -> BacktestResult:
    """Run ``iterations`` iterations of each strategy with the simulated oracle; write
    ``curves.json`` and ``curves.png`` in ``out_dir`` (see the module docstring).

    Each strategy runs as experiment ``<name_prefix>-<strategy>``; an earlier backtest under the
    same name is removed first, so the curves always start from iteration 0.
    """
    echo = echo or (lambda message: None)
    if iterations < 1:
        raise ExperimentError(f"iterations must be at least 1, got {iterations}")
    if not strategies:
        raise ExperimentError("name at least one strategy")
    strategies = [Strategy.parse(s).value for s in strategies]
    if len(set(strategies)) != len(strategies):
        raise ExperimentError(f"strategies repeat: {list(strategies)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oracle = SimulatedOracle.from_spec(spec, store, labels)
    try:
        pool = Dataset.open(store, spec.dataset, settings.cache_dir)
    except DatasetError as error:
        raise ExperimentError(str(error)) from None
    truth = _truth_by_index(pool, oracle, spec.class_names)
    if (truth < 0).all():
        raise ExperimentError(
            f"the label file knows none of the spectra of dataset {pool.name!r} (or none of its labels is a class "
            f"of the experiment {spec.class_names}): is it the right file?"
        )
    targets = np.array(spec.target_indices, dtype=np.int64)
    curves: dict[str, list[dict[str, Any]]] = {}
    durations: dict[str, float] = {}
    for strategy in strategies:
        name = f"{name_prefix}-{strategy}"
        stale = list(store.list(experiment_prefix(name) + "/"))
        if stale:
            echo(f"removing the previous backtest experiment {name!r} ({len(stale)} objects)")
            for info in stale:
                store.delete(info.key)
        strategy_spec = spec.model_copy(deep=True)
        strategy_spec.acquisition.strategy = strategy  # type: ignore[assignment]
        points: list[dict[str, Any]] = []
        started = time.perf_counter()
        for k in range(iterations):
            bar = (lambda stage, done, total, s=strategy, k=k: progress(f"{s} iteration {k} {stage}", done, total)
                   if done is not None and total is not None else None) if progress else None
            result = run_iteration(name, strategy_spec, k, store, settings, bar)
            answered = oracle.answer(store, name, k)
            metrics = evaluate_iteration(name, strategy_spec, k, store)
            line = f"{strategy:>16} iteration {k}: trained on {result.counts['training']:>4} labels"
            if result.cold_start:
                echo(line + f", cold start (random batch of {len(result.items)})")
                continue
            labelled = load_labelled_set(store, name, strategy_spec, k, pool, settings)
            frame_exclude = IndexSet(labelled.exclude).union(result.oracle_indices)
            true = _true_metrics(store, name, k, truth, targets, frame_exclude)
            tp = metrics["target_precision"]
            low, high, est = tp["low"], tp["high"], tp["estimate"]
            covered = None if est is None or true["true"] is None else bool(low - 1e-12 <= true["true"] <= high + 1e-12)
            point = {
                "iteration": k,
                "labels": result.counts["training"],
                "labels_total": metrics["labels_total"],
                "estimate": est,
                "low": low,
                "high": high,
                "trials": tp["trials"],
                "census": tp["census"],
                "covered": covered,
                **true,
                "estimated_true_targets": metrics["estimated_target_count"],
                "answered": {"oracle": answered.oracle, "estimation": answered.estimation},
            }
            points.append(point)
            echo(line + f", precision estimate {_fmt(est)} [{_fmt(low)}, {_fmt(high)}] from {tp['trials']}, "
                 f"true {_fmt(true['true'])}; pool precision {_fmt(true['precision_pool'])}, "
                 f"recall {_fmt(true['recall_pool'])}")
        curves[strategy] = points
        durations[strategy] = round(time.perf_counter() - started, 2)
    reach = {s: labels_to_reach(points, precision, recall) for s, points in curves.items()}
    document = {
        "synthetic": synthetic,
        "note": SYNTHETIC_NOTE if synthetic else "Figures come from the labelled pool named below.",
        "dataset": {"name": pool.name, "checksum": pool.index.checksum, "count": len(pool)},
        "truth": {"known": int((truth >= 0).sum()), "targets": int(np.isin(truth, targets).sum())},
        "iterations": iterations,
        "seed": spec.model.seed,
        "spec": spec.model_dump(mode="json", by_alias=True),
        "experiments": {s: f"{name_prefix}-{s}" for s in strategies},
        "goal": {"precision": precision, "recall": recall,
                 "meaning": "real precision (and recall) of the model's target predictions over the whole pool"},
        "labels_to_reach": reach,
        "coverage": _coverage(curves, spec.estimation.confidence),
        "durations_s": durations,
        "strategies": curves,
    }
    curves_path = out / "curves.json"
    curves_path.write_text(json.dumps(json_safe(document), indent=2) + "\n")
    figure = plot_curves(document, out / "curves.png") if plot else None
    return BacktestResult(document, curves_path, figure, format_table(document), durations)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(document: dict[str, Any]) -> str:
    """The backtest as a plain-text table (what ``oraculum backtest`` prints)."""
    lines = []
    if document.get("synthetic"):
        lines.append(f"NOTE: {SYNTHETIC_NOTE}")
    conf = document["coverage"]["confidence"]
    lines.append(f"{'strategy':<16} {'iter':>4} {'labels':>6} {'estimate':>8} {f'{conf:.0%} interval':>15} "
                 f"{'true':>6} {'cov':>4} {'P(pool)':>8} {'R(pool)':>8}")
    for strategy, points in document["strategies"].items():
        for p in points:
            interval = f"[{_fmt(p['low'], 2)}, {_fmt(p['high'], 2)}]"
            cov = "-" if p["covered"] is None else ("yes" if p["covered"] else "NO")
            lines.append(f"{strategy:<16} {p['iteration']:>4} {p['labels']:>6} {_fmt(p['estimate']):>8} {interval:>15} "
                         f"{_fmt(p['true']):>6} {cov:>4} {_fmt(p['precision_pool']):>8} {_fmt(p['recall_pool']):>8}")
    goal = document["goal"]
    what = f"pool precision >= {goal['precision']:g}" + (f" and recall >= {goal['recall']:g}" if goal["recall"] is not None else "")
    lines.append(f"labels needed to reach {what}:")
    for strategy, n in document["labels_to_reach"].items():
        lines.append(f"  {strategy:<16} {n if n is not None else 'not reached'}")
    cov = document["coverage"]
    if cov["intervals"]:
        lines.append(f"interval coverage: {cov['covered']}/{cov['intervals']} = {cov['rate']:.2f} "
                     f"(stated {cov['confidence']:.2f}; 95 % interval of the rate "
                     f"[{cov['rate_interval_95'][0]:.2f}, {cov['rate_interval_95'][1]:.2f}]), "
                     f"plus {cov['census_points']} exact census point(s)")
    else:
        lines.append(f"interval coverage: no sampled interval to check ({cov['census_points']} census point(s))")
    return "\n".join(lines)


def plot_curves(document: dict[str, Any], path: str | Path) -> Path:
    """A PNG of the learning curves: the precision estimate with its interval against the truth,
    and the catalogue's real precision and recall, versus training labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (strategy, points) in enumerate(document["strategies"].items()):
        colour = colours[number % len(colours)]
        x = [p["labels"] for p in points]
        est = [np.nan if p["estimate"] is None else p["estimate"] for p in points]
        err = [[0 if p["estimate"] is None else p["estimate"] - p["low"] for p in points],
               [0 if p["estimate"] is None else p["high"] - p["estimate"] for p in points]]
        left.errorbar(x, est, yerr=err, fmt="o", color=colour, capsize=3, label=f"{strategy}: estimate")
        left.plot(x, [np.nan if p["true"] is None else p["true"] for p in points], "-", color=colour, alpha=0.7,
                  label=f"{strategy}: true")
        right.plot(x, [np.nan if p["precision_pool"] is None else p["precision_pool"] for p in points], "-o",
                   color=colour, label=f"{strategy}: precision")
        right.plot(x, [np.nan if p["recall_pool"] is None else p["recall_pool"] for p in points], "--s",
                   color=colour, label=f"{strategy}: recall")
    conf = document["coverage"]["confidence"]
    left.set(xlabel="training labels", ylabel="precision of unlabelled predicted targets", ylim=(-0.02, 1.02),
             title=f"estimate with {conf:.0%} interval vs truth")
    goal = document["goal"]
    right.axhline(goal["precision"], color="grey", lw=0.8, ls=":")
    if goal["recall"] is not None:
        right.axhline(goal["recall"], color="grey", lw=0.8, ls=":")
    right.set(xlabel="training labels", ylabel="whole pool", ylim=(-0.02, 1.02), title="catalogue: true precision and recall")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    suptitle = f"oraculum backtest on {document['dataset']['name']}"
    if document.get("synthetic"):
        suptitle += " (synthetic data)"
    fig.suptitle(suptitle)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

