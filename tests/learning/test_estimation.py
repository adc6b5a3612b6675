"""Tests for performance estimation: binomial intervals (oraculum.learning.intervals), estimation
samples (oraculum.learning.estimation_sample) and metrics (oraculum.learning.metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from oraculum.learning.estimation_sample import EstimationSampler, draw_estimation_sample
from oraculum.learning.intervals import IntervalMethod, binomial_interval
from oraculum.learning.metrics import Metrics, StratifiedEstimate, estimate_metrics

# ---------------------------------------------------------------------------------- intervals


def test_wilson_known_values() -> None:
    est, low, high = binomial_interval(8, 10, 0.95, "wilson")
    assert est == pytest.approx(0.8)
    assert (low, high) == (pytest.approx(0.4902, abs=5e-5), pytest.approx(0.9433, abs=5e-5))


def test_clopper_pearson_known_values() -> None:
    _, low, high = binomial_interval(8, 10, 0.95, "clopper-pearson")
    assert (low, high) == (pytest.approx(0.4439, abs=5e-5), pytest.approx(0.9748, abs=5e-5))
    est, low, high = binomial_interval(0, 10, 0.95, "clopper-pearson")
    assert (est, low) == (0.0, 0.0)
    assert high == pytest.approx(0.3085, abs=5e-5)
    _, low, high = binomial_interval(10, 10, 0.95, "clopper-pearson")
    assert high == 1.0 and low == pytest.approx(0.6915, abs=5e-5)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (3, 7), (8, 10), (17, 50), (49, 50), (412, 1000)])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_intervals_agree_with_scipy_binomtest(k: int, n: int, confidence: float) -> None:
    reference = binomtest(k, n)
    methods: tuple[tuple[IntervalMethod, str], ...] = (("wilson", "wilson"), ("clopper-pearson", "exact"))
    for method, scipy_method in methods:
        _, low, high = binomial_interval(k, n, confidence, method)
        ci = reference.proportion_ci(confidence_level=confidence, method=scipy_method)
        assert low == pytest.approx(ci.low, abs=1e-9), method
        assert high == pytest.approx(ci.high, abs=1e-9), method


def test_clopper_pearson_is_wider_than_wilson() -> None:
    _, wl, wh = binomial_interval(30, 100)
    _, cl, ch = binomial_interval(30, 100, method="clopper-pearson")
    assert cl < wl and ch > wh


def test_zero_trials_is_nan_with_the_whole_unit_interval() -> None:
    est, low, high = binomial_interval(0, 0)
    assert math.isnan(est) and (low, high) == (0.0, 1.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_confidence_outside_unit_interval_raises(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        binomial_interval(3, 10, confidence)


def test_interval_argument_errors() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        binomial_interval(11, 10)
    with pytest.raises(ValueError, match="successes"):
        binomial_interval(-1, 10)
    with pytest.raises(ValueError, match="trials"):
        binomial_interval(1, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        binomial_interval(1, 2, method="wald")  # type: ignore[arg-type]


def test_wilson_interval_covers_true_precision_about_95_percent() -> None:
    """2000 precision samples from one known population, drawn by the real sampler."""
    rng = np.random.default_rng(2020)
    n_pool, target = 4000, 1
    predicted = rng.choice([0, 1], size=n_pool, p=[0.5, 0.5])
    is_true_target = (predicted == target) & (rng.random(n_pool) < 0.7)
    true_precision = is_true_target[predicted == target].mean()
    covered = 0
    draws = 2000
    for seed in range(draws):
        sample = draw_estimation_sample(predicted, [target], 60, seed)
        successes = int(is_true_target[sample.precision_indices].sum())
        _, low, high = binomial_interval(successes, sample.precision_indices.size)
        covered += low <= true_precision <= high
    assert 0.90 <= covered / draws <= 0.99


# ---------------------------------------------------------------------------------- sampling


def _population(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2, 3], size=n, p=[0.6, 0.25, 0.1, 0.05])


def test_precision_sample_only_predicted_targets_never_excluded() -> None:
    predicted = _population()
    exclude = np.flatnonzero(predicted == 3)[:40]
    sample = draw_estimation_sample(predicted, [2, 3], 100, np.random.default_rng(1), exclude=exclude)
    assert sample.precision_indices.size == 100
    assert len(set(sample.precision_indices.tolist())) == 100
    assert set(predicted[sample.precision_indices].tolist()) <= {2, 3}
    np.testing.assert_array_equal(sample.precision_predicted, predicted[sample.precision_indices])
    assert not set(exclude.tolist()) & set(sample.precision_indices.tolist())
    assert sample.target_population == int(np.isin(predicted, [2, 3]).sum()) - 40
    assert sample.predicted_target_count == int(np.isin(predicted, [2, 3]).sum())


def test_sample_is_deterministic_for_a_seed() -> None:
    predicted = _population()
    a = draw_estimation_sample(predicted, [3], 30, 5, stratified_size=40)
    b = draw_estimation_sample(predicted, [3], 30, 5, stratified_size=40)
    c = draw_estimation_sample(predicted, [3], 30, 6, stratified_size=40)
    np.testing.assert_array_equal(a.precision_indices, b.precision_indices)
    np.testing.assert_array_equal(a.stratified_indices, b.stratified_indices)
    assert set(a.precision_indices.tolist()) != set(c.precision_indices.tolist())


def test_sample_larger_than_population_takes_everything() -> None:
    predicted = _population(n=500)
    sample = draw_estimation_sample(predicted, [3], 10_000, 0)
    assert sorted(sample.precision_indices.tolist()) == np.flatnonzero(predicted == 3).tolist()


def test_streaming_sampler_equals_one_shot_and_merges_across_shards() -> None:
    predicted = _population()
    indices = np.arange(predicted.size) + 7
    one_shot = draw_estimation_sample(predicted, [2, 3], 50, 4, exclude=[7, 8, 9], stratified_size=60, global_indices=indices)
    streamed = EstimationSampler([3, 2], 50, 4, exclude=[7, 8, 9], stratified_size=60)
    for start in range(0, predicted.size, 13):
        streamed.update(indices[start : start + 13], predicted[start : start + 13])
    shard_a = EstimationSampler([2, 3], 50, 4, exclude=[7, 8, 9], stratified_size=60)
    shard_b = EstimationSampler([2, 3], 50, 4, exclude=[7, 8, 9], stratified_size=60)
    shard_b.update(indices[1000:], predicted[1000:])
    shard_a.update(indices[:1000], predicted[:1000])
    shard_a.merge(shard_b)
    for other in (streamed.result(), shard_a.result()):
        np.testing.assert_array_equal(other.precision_indices, one_shot.precision_indices)
        np.testing.assert_array_equal(other.stratified_indices, one_shot.stratified_indices)
        assert other.strata == one_shot.strata


def test_stratified_allocation_and_weights() -> None:
    predicted = _population()
    sample = draw_estimation_sample(predicted, [3], 10, 0, stratified_size=100)
    sizes = {c: int((predicted == c).sum()) for c in range(4)}
    assert {c: s.sample_size for c, s in sample.strata.items()} == {0: 25, 1: 25, 2: 25, 3: 25}
    for c, stratum in sample.strata.items():
        assert stratum.population == sizes[c]
        assert stratum.weight == pytest.approx(sizes[c] / 25)
        members = sample.stratified_indices[sample.stratified_predicted == c]
        assert np.all(predicted[members] == c) and members.size == 25
    # A tiny stratum is taken whole and its share goes to the others.
    small = np.array([0] * 100 + [1] * 100 + [2] * 5)
    sample = draw_estimation_sample(small, [2], 3, 0, stratified_size=30)
    assert {c: s.sample_size for c, s in sample.strata.items()} == {0: 13, 1: 12, 2: 5}


def test_late_exclusion_of_the_oracle_batch_uses_the_reserve() -> None:
    predicted = _population()
    sampler = EstimationSampler([3], 20, seed=2, stratified_size=40, reserve=10)
    sampler.update(np.arange(predicted.size), predicted)
    before = sampler.result()
    batch = before.precision_indices[:5].tolist() + before.stratified_indices[:5].tolist()
    after = sampler.result(also_exclude={i: int(predicted[i]) for i in batch})
    assert after.precision_indices.size == 20
    assert not set(batch) & set(after.indices_to_label().tolist())
    assert after.target_population == before.target_population - sum(predicted[batch] == 3)
    # The surviving draws keep their order: the sample is the first 20 remaining keys.
    kept = [i for i in before.precision_indices.tolist() if i not in batch]
    assert after.precision_indices.tolist()[: len(kept)] == kept
    with pytest.raises(ValueError, match="reserve"):
        sampler.result(also_exclude={i: 0 for i in range(11)})


def test_sampler_argument_errors() -> None:
    with pytest.raises(ValueError, match="target_classes"):
        EstimationSampler([], 10)
    with pytest.raises(ValueError, match="size"):
        EstimationSampler([1], -1)
    sampler = EstimationSampler([1], 10)
    with pytest.raises(ValueError, match="predicted_class"):
        sampler.update(np.arange(3), np.array([0.5, 1.0, 2.0]))


# ---------------------------------------------------------------------------------- metrics


def test_metrics_hand_computed_precision_and_counts() -> None:
    # 20 spectra: 8 predicted as target 1, 2 as target 2, 10 as class 0. Sample all targets.
    predicted = np.array([1] * 8 + [2] * 2 + [0] * 10)
    truth = {i: (1 if i < 6 else 0) for i in range(8)} | {8: 2, 9: 1}
    sample = draw_estimation_sample(predicted, [1, 2], 5, 0)
    labels = {i: truth[i] for i in sample.precision_indices.tolist()}
    metrics = estimate_metrics(sample, labels, class_names={0: "other", 1: "emission", 2: "double-peak"})
    expected_target = sum(labels[i] in (1, 2) for i in labels)
    assert metrics.target_precision.successes == expected_target
    assert metrics.target_precision.trials == 5
    assert metrics.target_precision.estimate == pytest.approx(expected_target / 5)
    emission = [i for i in labels if predicted[i] == 1]
    assert metrics.precision["emission"].trials == len(emission)
    assert metrics.precision["emission"].successes == sum(labels[i] == 1 for i in emission)
    assert metrics.predicted_target_count == 10
    count = metrics.estimated_target_count
    precision = metrics.target_precision.estimate
    assert precision is not None
    assert count.estimate == pytest.approx(10 * precision)
    assert (count.low, count.high) == (
        pytest.approx(10 * metrics.target_precision.low),
        pytest.approx(10 * metrics.target_precision.high),
    )
    assert metrics.estimated_class_counts["double-peak"].predicted == 2


def test_metrics_serialise_to_json_and_back() -> None:
    predicted = _population()
    sample = draw_estimation_sample(predicted, [3], 30, 1, stratified_size=40)
    labels = {int(i): int(predicted[i]) for i in sample.indices_to_label()}
    metrics = estimate_metrics(sample, labels)
    text = metrics.to_json()
    assert "NaN" not in text
    again = Metrics.model_validate(json.loads(text))
    assert again == metrics
    json.dumps(sample.to_dict())  # the sample description is JSON-ready too


def test_census_gives_exact_precision() -> None:
    predicted = np.array([0] * 50 + [1] * 6)
    sample = draw_estimation_sample(predicted, [1], 100, 0)
    labels = {i: (1 if i % 2 else 0) for i in range(50, 56)}
    metrics = estimate_metrics(sample, labels)
    assert metrics.target_precision.census
    assert metrics.target_precision.low == metrics.target_precision.high == pytest.approx(0.5)


def test_no_predicted_targets() -> None:
    predicted = np.zeros(100, dtype=int)
    sample = draw_estimation_sample(predicted, [1], 20, 0)
    assert sample.precision_indices.size == 0
    metrics = estimate_metrics(sample, {})
    assert metrics.target_precision.estimate is None
    assert (metrics.target_precision.low, metrics.target_precision.high) == (0.0, 1.0)
    assert metrics.predicted_target_count == 0
    assert metrics.estimated_target_count.estimate == 0.0
    assert metrics.estimated_target_count.high == 0.0
    assert any("not estimable" in note for note in metrics.notes)


def test_unlabelled_sample_items_are_left_out() -> None:
    predicted = _population()
    sample = draw_estimation_sample(predicted, [2], 40, 3)
    labels = {int(i): 2 for i in sample.precision_indices[:25]}
    metrics = estimate_metrics(sample, labels)
    assert metrics.precision_sample.labelled == 25 and metrics.target_precision.trials == 25
    assert metrics.target_precision.estimate == 1.0


def test_estimate_metrics_rejects_bad_confidence() -> None:
    sample = draw_estimation_sample(_population(n=100), [3], 5, 0)
    with pytest.raises(ValueError, match="confidence"):
        estimate_metrics(sample, {}, confidence=1.0)


def _values(estimate: StratifiedEstimate | None) -> tuple[float, float, float]:
    """(estimate, low, high) of an estimate that must exist."""
    assert estimate is not None
    assert estimate.estimate is not None and estimate.low is not None and estimate.high is not None
    return estimate.estimate, estimate.low, estimate.high


def _confused_population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True classes and predictions with a known, class-dependent confusion."""
    truth = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    confusion = np.array([[0.9, 0.07, 0.03], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    cumulative = confusion.cumsum(axis=1)[truth]
    predicted = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return truth, np.minimum(predicted, 2)


def test_stratified_estimators_unbiased_and_intervals_cover() -> None:
    rng = np.random.default_rng(7)
    truth, predicted = _confused_population(5000, rng)
    true_accuracy = float((truth == predicted).mean())
    true_recall = float(((predicted == 2) & (truth == 2)).sum() / (truth == 2).sum())
    accuracies: list[float] = []
    recalls: list[float] = []
    covered = recall_covered = 0
    runs = 400
    for seed in range(runs):
        sample = draw_estimation_sample(predicted, [2], 1, seed, stratified_size=90)
        labels = {int(i): int(truth[i]) for i in sample.stratified_indices}
        metrics = estimate_metrics(sample, labels)
        accuracy, low, high = _values(metrics.accuracy)
        accuracies.append(accuracy)
        covered += low <= true_accuracy <= high
        recall, low, high = _values(metrics.recall["2"])
        recalls.append(recall)
        recall_covered += low <= true_recall <= high
    mean, sd = float(np.mean(accuracies)), float(np.std(accuracies))
    # Unbiased: the mean of the estimates is within 4 standard errors of the truth.
    assert abs(mean - true_accuracy) < 4 * sd / math.sqrt(runs)
    # The unweighted sample accuracy (equal allocation over unequal strata) would be far off.
    assert abs(mean - true_accuracy) < 0.01
    # Recall is a ratio estimator: unbiased to first order only, so a looser tolerance.
    assert abs(np.mean(recalls) - true_recall) < 0.03
    # Normal-approximation intervals (conservative by the Wilson-centred variance): near 95 %.
    assert 0.88 <= covered / runs <= 1.0
    assert 0.88 <= recall_covered / runs <= 1.0


def test_stratified_estimate_on_hand_example() -> None:
    # Stratum 0: 90 spectra, stratum 1: 10 spectra; sample 4 from each (equal allocation).
    predicted = np.array([0] * 90 + [1] * 10)
    sample = draw_estimation_sample(predicted, [1], 1, 0, stratified_size=8)
    drawn0 = sample.stratified_indices[sample.stratified_predicted == 0]
    drawn1 = sample.stratified_indices[sample.stratified_predicted == 1]
    # In stratum 0: 3 of 4 correct (one is really class 1); in stratum 1: 2 of 4 correct.
    labels = {int(i): 0 for i in drawn0} | {int(drawn0[0]): 1}
    labels |= {int(i): 1 for i in drawn1[:2]} | {int(i): 0 for i in drawn1[2:]}
    metrics = estimate_metrics(sample, labels)
    assert metrics.strata["0"].weight == pytest.approx(90 / 4)
    accuracy, low, high = _values(metrics.accuracy)
    assert accuracy == pytest.approx(0.9 * 0.75 + 0.1 * 0.5)
    # recall(1) = N_1 p_1(1) / (N_0 p_0(1) + N_1 p_1(1)) = 10*0.5 / (90*0.25 + 10*0.5)
    assert metrics.recall["1"].estimate == pytest.approx(5 / 27.5)
    assert metrics.recall["0"].estimate == pytest.approx(67.5 / (67.5 + 5))
    assert low < accuracy < high


def test_stratum_without_labels_means_no_accuracy() -> None:
    predicted = _population()
    sample = draw_estimation_sample(predicted, [3], 5, 0, stratified_size=40)
    labels = {int(i): 0 for i, p in zip(sample.stratified_indices, sample.stratified_predicted) if p != 3}
    metrics = estimate_metrics(sample, labels)
    assert metrics.accuracy is None and metrics.recall == {}
    assert any("no labelled spectra" in note for note in metrics.notes)
