"""Performance estimates with confidence intervals: the error bars on the candidate catalogue.

From the oracle's labels of an :class:`~oraculum.learning.estimation_sample.EstimationSample`,
:func:`estimate_metrics` estimates the precision of the candidate catalogue (the fraction of
sampled predicted targets that really are targets, with a binomial interval from
:mod:`oraculum.learning.intervals`), how many true targets the catalogue holds (predicted count x
precision), and, from a stratified sample, accuracy and per-class recall. The result is a pydantic
:class:`Metrics` that serialises to ``metrics.json``.

Pure numpy/pydantic: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from oraculum.learning.estimation_sample import EstimationSample, finite_or_none
from oraculum.learning.intervals import IntervalMethod, binomial_interval, check_confidence, two_sided_z

__all__ = [
    "BinomialEstimate",
    "CountEstimate",
    "Metrics",
    "SampleSummary",
    "StratifiedEstimate",
    "StratumSummary",
    "estimate_metrics",
]

STRATIFIED_METHOD = "stratified-normal-linearised"


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
    conf = check_confidence(confidence)
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
        _add_stratified(metrics, sample, true_labels, two_sided_z(conf), name)
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
        estimate=finite_or_none(est), low=low, high=high, successes=successes, trials=trials, method=method, census=census
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
