"""Performance estimates with confidence intervals: the error bars on the candidate catalogue.

The published method (Škoda, Podsztavek & Tvrdík 2020) does not trust validation accuracy on
the small, actively chosen training set (it is biased towards hard spectra). Instead, each
iteration the oracle labels a *simple random sample of the spectra predicted as target classes*;
the fraction that really are targets estimates the precision of the candidate catalogue, with a
binomial confidence interval, and predicted count x precision estimates how many true targets
the catalogue holds.

This module provides:

* :func:`binomial_interval`: Wilson score or exact Clopper-Pearson intervals;
* :class:`EstimationSampler` / :func:`draw_estimation_sample`: the precision sample and,
  optionally, a stratified sample over all predicted classes (for accuracy and recall), drawn
  in one streaming pass over the pool;
* :func:`estimate_metrics`: the estimates, returned as a pydantic :class:`Metrics` that
  serialises to ``metrics.json``.

Sampling uses the same keyed reservoirs as :mod:`oraculum.learning.acquisition`: every spectrum gets a
pseudo-random key from (seed, global index) and a sample is the spectra with the best keys. That
is a uniform sample without replacement whose result depends neither on chunk sizes nor on shard
order, so shard-wise samplers can be merged. The precision and stratified samples use
independent keys; a spectrum may fall in both, and the oracle then labels it once.

Pure numpy/scipy/pydantic: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field
from scipy import stats

from oraculum.learning.acquisition import IndexSet, TopK, uniform_keys

__all__ = [
    "BinomialEstimate",
    "CountEstimate",
    "EstimationSample",
    "EstimationSampler",
    "Interval",
    "IntervalMethod",
    "Metrics",
    "SampleSummary",
    "StratifiedEstimate",
    "Stratum",
    "StratumSummary",
    "binomial_interval",
    "draw_estimation_sample",
    "estimate_metrics",
]

IntervalMethod = Literal["wilson", "clopper-pearson"]
STRATIFIED_METHOD = "stratified-normal-linearised"

# Independent pseudo-random streams from one seed (acquisition uses salts 1 and 2).
SALT_PRECISION = 11
SALT_STRATIFIED = 12


# --------------------------------------------------------------------------------------------
# Binomial intervals
# --------------------------------------------------------------------------------------------


class Interval(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    estimate: float
    low: float
    high: float


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not (math.isfinite(c) and 0.0 < c < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return c


@lru_cache(maxsize=32)
def _z(confidence: float) -> float:
    """The two-sided standard-normal quantile for ``confidence`` (1.959964 for 0.95).

    Cached: ``scipy.stats.norm.ppf`` costs ~0.2 ms a call, and a backtest calls this per class
    per iteration per strategy with the same confidence.
    """
    return float(stats.norm.ppf(0.5 + _check_confidence(confidence) / 2.0))


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def binomial_interval(
    successes: int,
    trials: int,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
) -> Interval:
    """Proportion ``successes / trials`` with a two-sided binomial confidence interval.

    ``wilson`` (default): the Wilson score interval; close to nominal coverage even for small
    samples and proportions near 0 or 1, where the textbook Wald interval collapses.
    ``clopper-pearson``: the exact interval from beta quantiles; never under-covers, so it is
    conservative (wider). With ``trials == 0`` nothing is known: estimate NaN, interval (0, 1).
    """
    k, n = _count(successes, "successes"), _count(trials, "trials")
    if k > n:
        raise ValueError(f"successes ({k}) cannot exceed trials ({n})")
    conf = _check_confidence(confidence)
    if method not in ("wilson", "clopper-pearson"):
        raise ValueError(f"unknown method {method!r}; expected 'wilson' or 'clopper-pearson'")
    if n == 0:
        return Interval(math.nan, 0.0, 1.0)
    if method == "wilson":
        low, high = _wilson(k, n, _z(conf))
    else:
        low, high = _clopper_pearson(k, n, conf)
    return Interval(k / n, low, high)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


# --------------------------------------------------------------------------------------------
# Drawing the estimation sample
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stratum:
    """One stratum of the stratified sample: the spectra predicted as one class.

    Attributes:
        predicted_class: the class that defines the stratum.
        population: non-excluded spectra in the pool predicted as this class (N_h).
        sample_size: spectra drawn from it (n_h).
        weight: N_h / n_h, the Horvitz-Thompson weight of each drawn spectrum (NaN if n_h = 0).
    """

    predicted_class: int
    population: int
    sample_size: int
    weight: float


@dataclass(frozen=True)
class EstimationSample:
    """Which spectra the oracle must label to estimate performance, and the frame they came from.

    Attributes:
        target_classes: the classes whose predicted members form the precision population.
        precision_indices: global indices of the simple random sample of non-excluded spectra
            predicted as a target class, in key order (the first m are a random sample of size m).
        precision_predicted: the predicted class of each of those.
        target_population_by_class: non-excluded spectra predicted as each target class.
        predicted_counts: every scored spectrum per predicted class, excluded ones included.
        stratified_indices, stratified_predicted: the stratified sample and its strata.
        strata: per predicted class, sizes and weights (empty without a stratified sample).
        seed: the seed the keys were drawn with.
    """

    target_classes: tuple[int, ...]
    precision_indices: np.ndarray
    precision_predicted: np.ndarray
    target_population_by_class: dict[int, int]
    predicted_counts: dict[int, int]
    stratified_indices: np.ndarray
    stratified_predicted: np.ndarray
    strata: dict[int, Stratum]
    seed: int

    @property
    def target_population(self) -> int:
        """Non-excluded spectra predicted as any target class: the precision sampling frame."""
        return sum(self.target_population_by_class.values())

    @property
    def predicted_target_count(self) -> int:
        """Every scored spectrum predicted as a target class: the size of the candidate catalogue."""
        return sum(self.predicted_counts.get(c, 0) for c in self.target_classes)

    def indices_to_label(self) -> np.ndarray:
        """Global indices the oracle must label (both samples, each spectrum once), sorted."""
        return np.union1d(self.precision_indices, self.stratified_indices)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, to store next to the batch so labels can be matched later."""
        return {
            "seed": self.seed,
            "target_classes": list(self.target_classes),
            "precision": {
                "indices": self.precision_indices.tolist(),
                "predicted": self.precision_predicted.tolist(),
                "population_by_class": {str(c): n for c, n in self.target_population_by_class.items()},
            },
            "predicted_counts": {str(c): n for c, n in self.predicted_counts.items()},
            "stratified": {
                "indices": self.stratified_indices.tolist(),
                "predicted": self.stratified_predicted.tolist(),
                "strata": {
                    str(c): {"population": s.population, "sample_size": s.sample_size, "weight": _finite_or_none(s.weight)}
                    for c, s in self.strata.items()
                },
            },
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _allocate_equal(total: int, populations: Mapping[int, int]) -> dict[int, int]:
    """Split ``total`` draws equally over strata, capped at each stratum's population.

    Equal rather than proportional allocation because the target classes are rare (per mille
    of the pool): proportional allocation would give them no labelled spectra, and per-class
    recall and the accuracy of the classes that matter would not be estimable. Leftovers from
    small strata are redistributed (water-filling); remainders go to the lowest class ids.
    """
    alloc = {c: 0 for c in populations}
    remaining = total
    open_ = sorted(c for c, n in populations.items() if n > 0)
    while remaining > 0 and open_:
        share, extra = divmod(remaining, len(open_))
        for i, c in enumerate(open_):
            add = min(share + (1 if i < extra else 0), populations[c] - alloc[c])
            alloc[c] += add
            remaining -= add
        open_ = [c for c in open_ if alloc[c] < populations[c]]
    return alloc


class EstimationSampler:
    """Streams the pool's predicted classes and draws the estimation sample(s).

    * Precision sample: a simple random sample of ``size`` non-excluded spectra predicted as any
      of ``target_classes`` (all of them if fewer: a census).
    * Stratified sample (``stratified_size > 0``): strata are the predicted classes; the draws
      are allocated equally over strata (see :func:`_allocate_equal`) once their sizes are known,
      and each stratum's draws are a simple random sample of it.

    ``exclude``: spectra never sampled (already labelled ones). Spectra chosen in the same pass
    (the oracle batch) can be excluded late with ``result(also_exclude=...)``; every reservoir
    keeps ``reserve`` spare keys for that, so pass ``reserve=batch_size``.

    Memory bound: ``size + reserve`` kept precision items, ``stratified_size + reserve`` per
    predicted class, one counter per class, the exclusion set; O(chunk) per update.
    """

    def __init__(
        self,
        target_classes: Iterable[int],
        size: int,
        seed: int = 0,
        exclude: IndexSet | Iterable[int] | np.ndarray | None = None,
        stratified_size: int = 0,
        reserve: int = 0,
    ) -> None:
        self.target_classes = tuple(sorted({int(c) for c in target_classes}))
        if not self.target_classes:
            raise ValueError("target_classes must name at least one class")
        self.size = _count(size, "size")
        self.stratified_size = _count(stratified_size, "stratified_size")
        self.reserve = _count(reserve, "reserve")
        self.seed = int(seed)
        self.exclude = IndexSet.of(exclude)
        self._targets = np.asarray(self.target_classes, dtype=np.int64)
        self._precision = TopK(self.size + self.reserve)
        self._strata: dict[int, TopK] = {}
        self._seen: Counter[int] = Counter()
        self._population: Counter[int] = Counter()

    def update(self, global_indices: npt.ArrayLike, predicted_class: npt.ArrayLike) -> None:
        """Offer one chunk: global indices and the predicted class (integer id) of each."""
        idx = np.asarray(global_indices).reshape(-1)
        pred = np.asarray(predicted_class).reshape(-1)
        if idx.size != pred.size:
            raise ValueError(f"predicted_class has {pred.size} values for {idx.size} global_indices")
        if pred.size and not np.issubdtype(pred.dtype, np.integer):
            raise ValueError(f"predicted_class must be integer class ids, got dtype {pred.dtype}")
        pred = pred.astype(np.int64, copy=False)
        self._seen.update(_counts(pred))
        keep = ~self.exclude.contains(idx)
        idx, pred = idx[keep].astype(np.int64, copy=False), pred[keep]
        self._population.update(_counts(pred))
        is_target = np.isin(pred, self._targets)
        self._precision.update(idx[is_target], uniform_keys(idx[is_target], self.seed, SALT_PRECISION), pred[is_target])
        if self.stratified_size:
            keys = uniform_keys(idx, self.seed, SALT_STRATIFIED)
            for c in np.unique(pred):
                member = pred == c
                stratum = self._strata.setdefault(int(c), TopK(self.stratified_size + self.reserve))
                stratum.update(idx[member], keys[member])

    def merge(self, other: EstimationSampler) -> None:
        """Absorb a sampler that saw other shards; configuration must be identical."""
        mine = (self.target_classes, self.size, self.stratified_size, self.reserve, self.seed)
        theirs = (other.target_classes, other.size, other.stratified_size, other.reserve, other.seed)
        if mine != theirs or not np.array_equal(self.exclude.to_array(), other.exclude.to_array()):
            raise ValueError("cannot merge EstimationSamplers with different configuration or exclude")
        self._seen.update(other._seen)
        self._population.update(other._population)
        self._precision.merge(other._precision)
        for c, reservoir in other._strata.items():
            self._strata.setdefault(c, TopK(self.stratified_size + self.reserve)).merge(reservoir)

    def result(self, also_exclude: Mapping[int, int] | None = None) -> EstimationSample:
        """The sample. ``also_exclude`` maps global index -> predicted class of spectra to leave
        out now (e.g. the oracle batch chosen in the same pass); at most ``reserve`` of them.
        Their predicted classes are needed to shrink the strata they came from."""
        late = {int(i): int(c) for i, c in (also_exclude or {}).items() if int(i) not in self.exclude}
        if len(late) > self.reserve:
            raise ValueError(
                f"also_exclude has {len(late)} new indices but the sampler was built with reserve={self.reserve}"
            )
        population = Counter(self._population)
        population.subtract(Counter(late.values()))
        drop = IndexSet(list(late))
        prec_idx, prec_pred = _first_not_in(self._precision, drop, self.size)
        strat_idx, strat_pred, strata = self._stratified(population, drop)
        return EstimationSample(
            target_classes=self.target_classes,
            precision_indices=prec_idx,
            precision_predicted=prec_pred,
            target_population_by_class={c: max(population.get(c, 0), 0) for c in self.target_classes},
            predicted_counts=dict(sorted(self._seen.items())),
            stratified_indices=strat_idx,
            stratified_predicted=strat_pred,
            strata=strata,
            seed=self.seed,
        )

    def _stratified(self, population: Counter[int], drop: IndexSet) -> tuple[np.ndarray, np.ndarray, dict[int, Stratum]]:
        if not self.stratified_size:
            return np.empty(0, np.int64), np.empty(0, np.int64), {}
        sizes = {c: max(population.get(c, 0), 0) for c in sorted(self._strata)}
        alloc = _allocate_equal(self.stratified_size, sizes)
        parts, preds, strata = [], [], {}
        for c in sorted(sizes):
            idx, _ = _first_not_in(self._strata[c], drop, alloc[c])
            parts.append(idx)
            preds.append(np.full(idx.size, c, dtype=np.int64))
            weight = sizes[c] / idx.size if idx.size else math.nan
            strata[c] = Stratum(predicted_class=c, population=sizes[c], sample_size=int(idx.size), weight=weight)
        return np.concatenate(parts), np.concatenate(preds), strata


def _counts(values: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(values, return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts)}


def _first_not_in(reservoir: TopK, drop: IndexSet, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``m`` kept items (best keys) not in ``drop``: a uniform sample of what remains."""
    keep = np.flatnonzero(~drop.contains(reservoir.indices))[:m]
    payload = reservoir.payload
    pred = payload[keep].astype(np.int64) if payload is not None else np.empty(keep.size, np.int64)
    return reservoir.indices[keep], pred


def _seed_from(rng: np.random.Generator | int) -> int:
    """An integer seed: ``rng`` itself if an int, else one drawn from the Generator."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63 - 1))
    return int(rng)


def draw_estimation_sample(
    predicted_class: npt.ArrayLike,
    target_classes: Iterable[int],
    size: int,
    rng: np.random.Generator | int,
    exclude: IndexSet | Iterable[int] | np.ndarray | None = None,
    stratified_size: int = 0,
    *,
    global_indices: npt.ArrayLike | None = None,
) -> EstimationSample:
    """One-shot :class:`EstimationSampler` over a whole array of predicted classes.

    Global indices are the positions in ``predicted_class`` unless ``global_indices`` is given.
    """
    pred = np.asarray(predicted_class)
    idx = np.arange(pred.size) if global_indices is None else np.asarray(global_indices)
    sampler = EstimationSampler(target_classes, size, _seed_from(rng), exclude, stratified_size)
    sampler.update(idx, pred)
    return sampler.result()


# --------------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------------


class BinomialEstimate(BaseModel):
    """A proportion from a simple random sample with a binomial interval."""

    estimate: float | None = Field(description="successes / trials; null when trials = 0")
    low: float
    high: float
    successes: int
    trials: int
    method: str
    census: bool = Field(
        False, description="the sample is the whole population: the value is exact, the interval has zero width"
    )


class StratifiedEstimate(BaseModel):
    """A stratified (Horvitz-Thompson weighted) estimate with a normal-approximation interval."""

    estimate: float | None
    low: float | None
    high: float | None
    std_error: float | None
    method: str = STRATIFIED_METHOD


class CountEstimate(BaseModel):
    """How many true members a set of predicted spectra holds: predicted count x precision."""

    predicted: int
    estimate: float | None
    low: float
    high: float


class SampleSummary(BaseModel):
    """Size of a sample, how much of it is labelled, and the population it was drawn from."""

    size: int
    labelled: int
    population: int


class StratumSummary(BaseModel):
    """One stratum as used by the estimator (weight = population / labelled)."""

    population: int
    sample_size: int
    labelled: int
    weight: float | None


class Metrics(BaseModel):
    """Everything ``metrics.json`` holds for one iteration. Class keys are names (or ids as strings)."""

    confidence: float
    interval_method: str
    target_classes: list[str]
    precision: dict[str, BinomialEstimate] = Field(description="per target class: P(true = c | predicted c)")
    target_precision: BinomialEstimate = Field(
        description="P(true class is a target | predicted a target): the catalogue's precision"
    )
    predicted_target_count: int
    estimated_target_count: CountEstimate
    estimated_class_counts: dict[str, CountEstimate]
    precision_sample: SampleSummary
    accuracy: StratifiedEstimate | None = None
    recall: dict[str, StratifiedEstimate] = Field(default_factory=dict)
    stratified_sample: SampleSummary | None = None
    strata: dict[str, StratumSummary] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def to_json(self) -> str:
        """``metrics.json`` content (NaN never appears: undefined values are null)."""
        return self.model_dump_json(indent=2)


def estimate_metrics(
    sample: EstimationSample,
    true_labels: Mapping[int, int],
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
    class_names: Mapping[int, str] | None = None,
) -> Metrics:
    """Estimates from the oracle's labels of an :class:`EstimationSample`.

    ``true_labels`` maps global index -> true class id; sample spectra without a label (not yet
    labelled, or skipped by the oracle) are left out, assuming they are missing at random.

    Precision (the published method): per target class c, the fraction of sampled spectra
    predicted c that are c; overall, the fraction of sampled predicted targets whose true class
    is *any* target. Intervals from :func:`binomial_interval`; when every spectrum of the
    population is labelled (census) the value is exact and the interval has zero width.
    Estimated true targets = predicted target count (whole scored pool) x precision, with the
    precision interval scaled the same way. The precision refers to the non-excluded spectra.

    Accuracy and recall (stratified sample, strata = predicted classes h with N_h spectra, n_h
    labelled): Horvitz-Thompson estimators with weights N_h / n_h, i.e.
    ``accuracy = sum_h (N_h / N) * acc_h`` and ``recall_c = N_c p_c(c) / sum_h N_h p_h(c)``
    (p_h(c): labelled fraction of true class c in stratum h). Intervals: normal approximation,
    estimate +- z * SE, clipped to [0, 1], with the stratified variance including the finite
    population correction (1 - n_h / N_h); recall's variance by linearisation of the ratio. A
    stratum whose labels are all alike would claim zero variance, so each per-stratum variance
    uses the Wilson-centred proportion (x + z^2/2) / (n + z^2) instead of x / n. If a non-empty
    stratum has no labelled spectrum, accuracy and recall are not estimated (a note says why).
    """
    conf = _check_confidence(confidence)
    if method not in ("wilson", "clopper-pearson"):
        raise ValueError(f"unknown method {method!r}; expected 'wilson' or 'clopper-pearson'")
    name = _namer(class_names)
    notes: list[str] = []
    precision, target_precision, prec_summary = _precision_estimates(sample, true_labels, conf, method, name, notes)
    count = sample.predicted_target_count
    metrics = Metrics(
        confidence=conf,
        interval_method=method,
        target_classes=[name(c) for c in sample.target_classes],
        precision=precision,
        target_precision=target_precision,
        predicted_target_count=count,
        estimated_target_count=_count_estimate(count, target_precision),
        estimated_class_counts={
            name(c): _count_estimate(sample.predicted_counts.get(c, 0), precision[name(c)])
            for c in sample.target_classes
        },
        precision_sample=prec_summary,
        notes=notes,
    )
    if sample.strata:
        _add_stratified(metrics, sample, true_labels, _z(conf), name)
    return metrics


ClassNamer = Callable[[int], str]


def _namer(class_names: Mapping[int, str] | None) -> ClassNamer:
    """Class id -> name for metrics.json keys; ids without a name become their decimal string."""
    names = dict(class_names or {})
    return lambda c: names.get(int(c), str(int(c)))


def _labels_of(indices: np.ndarray, true_labels: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mask of labelled positions and the true labels there (as int64)."""
    found = [(k, true_labels[int(i)]) for k, i in enumerate(indices) if int(i) in true_labels]
    mask = np.zeros(indices.size, dtype=bool)
    mask[[k for k, _ in found]] = True
    return mask, np.asarray([int(label) for _, label in found], dtype=np.int64)


def _binomial(successes: int, trials: int, population: int, conf: float, method: IntervalMethod) -> BinomialEstimate:
    est, low, high = binomial_interval(successes, trials, conf, method)
    census = trials > 0 and trials >= population
    if census:
        low = high = est
    return BinomialEstimate(
        estimate=_finite_or_none(est), low=low, high=high, successes=successes, trials=trials, method=method, census=census
    )


def _precision_estimates(
    sample: EstimationSample,
    true_labels: Mapping[int, int],
    conf: float,
    method: IntervalMethod,
    name: ClassNamer,
    notes: list[str],
) -> tuple[dict[str, BinomialEstimate], BinomialEstimate, SampleSummary]:
    labelled, truth = _labels_of(sample.precision_indices, true_labels)
    predicted = sample.precision_predicted[labelled]
    per_class = {}
    for c in sample.target_classes:
        mine = predicted == c
        per_class[name(c)] = _binomial(
            int((truth[mine] == c).sum()), int(mine.sum()), sample.target_population_by_class.get(c, 0), conf, method
        )
    is_target = np.isin(truth, np.asarray(sample.target_classes))
    overall = _binomial(int(is_target.sum()), int(truth.size), sample.target_population, conf, method)
    if sample.target_population == 0:
        notes.append("no unlabelled spectrum is predicted as a target class: precision not estimable")
    elif truth.size == 0:
        notes.append("no spectrum of the precision sample is labelled yet")
    summary = SampleSummary(
        size=int(sample.precision_indices.size), labelled=int(truth.size), population=sample.target_population
    )
    return per_class, overall, summary


def _count_estimate(predicted: int, precision: BinomialEstimate) -> CountEstimate:
    if predicted == 0:
        return CountEstimate(predicted=0, estimate=0.0, low=0.0, high=0.0)
    est = None if precision.estimate is None else predicted * precision.estimate
    return CountEstimate(predicted=predicted, estimate=est, low=predicted * precision.low, high=predicted * precision.high)


@dataclass(frozen=True, slots=True)
class _StratumData:
    population: int  # N_h
    truth: np.ndarray  # true labels of the labelled draws

    @property
    def n(self) -> int:
        return int(self.truth.size)

    @property
    def fpc(self) -> float:
        """Finite population correction 1 - n_h / N_h."""
        return 1.0 - self.n / self.population if self.population else 0.0


def _smoothed_variance(x: int, n: int, z: float) -> float:
    """Per-stratum variance of a 0/1 variable with x ones in n, Wilson-centred (never zero)."""
    p = (x + z * z / 2) / (n + z * z)
    return p * (1 - p) * n / max(n - 1, 1)


def _normal_interval(est: float, var: float, z: float) -> StratifiedEstimate:
    se = math.sqrt(max(var, 0.0))
    return StratifiedEstimate(
        estimate=est, low=max(0.0, est - z * se), high=min(1.0, est + z * se), std_error=se
    )


def _add_stratified(
    metrics: Metrics, sample: EstimationSample, true_labels: Mapping[int, int], z: float, name: ClassNamer
) -> None:
    labelled, truth = _labels_of(sample.stratified_indices, true_labels)
    predicted = sample.stratified_predicted[labelled]
    data = {h: _StratumData(s.population, truth[predicted == h]) for h, s in sample.strata.items()}
    metrics.strata = {
        name(h): StratumSummary(
            population=d.population,
            sample_size=sample.strata[h].sample_size,
            labelled=d.n,
            weight=d.population / d.n if d.n else None,
        )
        for h, d in data.items()
    }
    metrics.stratified_sample = SampleSummary(
        size=int(sample.stratified_indices.size), labelled=int(truth.size), population=sum(d.population for d in data.values())
    )
    empty = [name(h) for h, d in data.items() if d.population > 0 and d.n == 0]
    if empty:
        metrics.notes.append(f"strata {empty} have no labelled spectra: accuracy and recall not estimated")
        return
    live = {h: d for h, d in data.items() if d.population > 0}
    if not live:
        metrics.notes.append("the stratified sample is empty: accuracy and recall not estimated")
        return
    metrics.accuracy = _stratified_accuracy(live, z)
    classes = sorted(set(live) | {int(t) for t in truth})
    for c in classes:
        recall = _stratified_recall(live, c, z)
        if recall is None:
            metrics.notes.append(f"no labelled spectrum of class {name(c)} in the stratified sample: recall unknown")
        else:
            metrics.recall[name(c)] = recall


def _stratified_accuracy(strata: Mapping[int, _StratumData], z: float) -> StratifiedEstimate:
    total = sum(d.population for d in strata.values())
    est = var = 0.0
    for h, d in strata.items():
        w, correct = d.population / total, int((d.truth == h).sum())
        est += w * correct / d.n
        var += w * w * d.fpc * _smoothed_variance(correct, d.n, z) / d.n
    return _normal_interval(est, var, z)


def _stratified_recall(strata: Mapping[int, _StratumData], c: int, z: float) -> StratifiedEstimate | None:
    """recall_c = Y / X with X = sum_h N_h p_h(c) (true c anywhere), Y = N_c p_c(c) (and predicted c).

    Linearised variance: z_i = (y_i - R x_i) / X; in stratum c y = x so z = (1 - R) x / X,
    elsewhere y = 0 so z = -R x / X.
    """
    x_hat = sum(d.population * float((d.truth == c).mean()) for d in strata.values())
    if x_hat <= 0:
        return None
    own = strata.get(c)
    y_hat = own.population * float((own.truth == c).mean()) if own is not None else 0.0
    ratio = y_hat / x_hat
    var = 0.0
    for h, d in strata.items():
        a = (1.0 - ratio) if h == c else -ratio
        s2 = _smoothed_variance(int((d.truth == c).sum()), d.n, z)
        var += d.population**2 * d.fpc * a * a * s2 / d.n
    return _normal_interval(ratio, var / x_hat**2, z)
