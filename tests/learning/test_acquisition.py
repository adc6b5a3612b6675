"""Tests for choosing the oracle batch: the uncertainty scores (oraculum.learning.uncertainty), keyed
keys, index sets and streaming top-k (oraculum.learning.reservoirs), diversity and batch composition
(oraculum.learning.acquisition)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection

import numpy as np
import pytest

from oraculum.learning.acquisition import BatchSelector, compose_batch, diverse_select, split_batch
from oraculum.learning.reservoirs import IndexSet, TopK, uniform_keys
from oraculum.learning.uncertainty import Strategy, bald, entropy, least_confidence, margin, random, score

# ---------------------------------------------------------------------------------- scores


@pytest.mark.parametrize("n_classes", [2, 3, 5, 10])
def test_entropy_of_uniform_is_log_c(n_classes: int) -> None:
    probs = np.full((4, n_classes), 1.0 / n_classes)
    np.testing.assert_allclose(entropy(probs), math.log(n_classes))


def test_entropy_of_one_hot_is_zero_and_finite() -> None:
    probs = np.eye(4)
    out = entropy(probs)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, 0.0)


def test_entropy_hand_computed_and_tolerates_float32_noise() -> None:
    row = np.array([[0.5, 0.25, 0.25]])
    assert entropy(row)[0] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    noisy = np.array([[1.0000001, -1e-8, 0.0]], dtype=np.float32)  # softmax rounding
    assert entropy(noisy)[0] == pytest.approx(0.0, abs=1e-12)


def test_margin_and_least_confidence_hand_computed() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.05, 0.9, 0.05], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(margin(probs), [0.8, 0.15, 1.0, 0.0])
    np.testing.assert_allclose(least_confidence(probs), [0.5, 0.1, 0.6, 0.0])


def test_scores_rank_uncertain_rows_higher() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33]])
    for func in (entropy, margin, least_confidence):
        out = func(probs)
        assert out[1] > out[0], func.__name__


def test_bald_zero_when_passes_agree_positive_when_they_disagree() -> None:
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])  # (T=2, n=1, C=2)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # same mean (0.5, 0.5)
    assert bald(agree)[0] == pytest.approx(0.0, abs=1e-12)
    assert bald(disagree)[0] == pytest.approx(math.log(2))
    np.testing.assert_allclose(agree.mean(axis=0), disagree.mean(axis=0))


def test_bald_is_non_negative_on_random_input() -> None:
    rng = np.random.default_rng(3)
    mc = rng.dirichlet(np.ones(4), size=(8, 50))
    assert np.all(bald(mc) >= 0.0)


def test_random_scores_are_uniform_and_reproducible() -> None:
    a = random(1000, np.random.default_rng(5))
    b = random(1000, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0 and a.max() < 1.0
    assert 0.45 < a.mean() < 0.55


def test_score_dispatch_matches_functions() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=20)
    np.testing.assert_array_equal(score("entropy", probs), entropy(probs))
    np.testing.assert_array_equal(score(Strategy.MARGIN, probs), margin(probs))
    np.testing.assert_array_equal(score("least-confidence", probs), least_confidence(probs))
    mc = rng.dirichlet(np.ones(3), size=(4, 20))
    np.testing.assert_array_equal(score("bald", mc_probs=mc), bald(mc))
    np.testing.assert_allclose(score("entropy", mc_probs=mc), entropy(mc.mean(axis=0)))
    np.testing.assert_array_equal(
        score("random", probs, rng=np.random.default_rng(1)), random(20, np.random.default_rng(1))
    )


def test_score_errors_name_the_problem() -> None:
    probs = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="strategy"):
        score("entropie", probs)
    with pytest.raises(ValueError, match="mc_probs"):
        score("bald", probs)
    with pytest.raises(ValueError, match="rng"):
        score("random", probs)
    with pytest.raises(ValueError, match="NaN"):
        entropy(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        entropy(np.array([0.5, 0.5]))


# ---------------------------------------------------------------------------------- keys


def test_uniform_keys_depend_only_on_seed_salt_and_index() -> None:
    idx = np.arange(100_000)
    keys = uniform_keys(idx, seed=42)
    np.testing.assert_array_equal(keys[::-1], uniform_keys(idx[::-1], seed=42))
    np.testing.assert_array_equal(keys[500:600], uniform_keys(idx[500:600], seed=42))
    assert not np.array_equal(keys, uniform_keys(idx, seed=43))
    assert not np.array_equal(keys, uniform_keys(idx, seed=42, salt=1))
    assert keys.min() >= 0.0 and keys.max() < 1.0
    counts, _ = np.histogram(keys, bins=20, range=(0, 1))
    expected = idx.size / 20
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))


# ---------------------------------------------------------------------------------- TopK


def _full_sort_top(indices: np.ndarray, scores: np.ndarray, k: int, exclude: Collection[int] = ()) -> list[int]:
    rows = sorted((-s, i) for i, s in zip(indices.tolist(), scores.tolist()) if i not in exclude)
    return [i for _, i in rows[:k]]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_topk_over_chunks_equals_full_sort_with_ties(chunk: int) -> None:
    rng = np.random.default_rng(11)
    n, k = 1000, 37
    scores = np.round(rng.random(n), 1)  # many ties: lower index must win
    indices = rng.permutation(n) + 10_000  # arrive in scrambled order
    top = TopK(k)
    for start in range(0, n, chunk):
        top.update(indices[start : start + chunk], scores[start : start + chunk])
        assert len(top) <= k
    assert top.indices.tolist() == _full_sort_top(indices, scores, k)
    assert np.all(np.diff(top.scores) <= 0)
    assert top.n_seen == n


def test_topk_excludes_labelled_and_carries_payload() -> None:
    rng = np.random.default_rng(2)
    n, k = 500, 20
    scores = rng.random(n)
    indices = np.arange(n)
    labelled = set(_full_sort_top(indices, scores, 10))  # the very best are already labelled
    top = TopK(k, exclude=sorted(labelled))
    payload = np.stack([indices, indices * 2], axis=1)
    for start in range(0, n, 33):
        top.update(indices[start : start + 33], scores[start : start + 33], payload[start : start + 33])
    assert not labelled & set(top.indices.tolist())
    assert top.indices.tolist() == _full_sort_top(indices, scores, k, labelled)
    assert top.payload is not None
    np.testing.assert_array_equal(top.payload[:, 1], top.indices * 2)
    assert top.n_seen == n - len(labelled)


def test_topk_merge_of_shards_equals_one_stream() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(300), 2)
    whole, a, b = TopK(15), TopK(15), TopK(15)
    whole.update(np.arange(300), scores)
    a.update(np.arange(150), scores[:150])
    b.update(np.arange(150, 300), scores[150:])
    b.merge(a)
    np.testing.assert_array_equal(b.indices, whole.indices)
    assert b.n_seen == whole.n_seen


def test_topk_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must"):
        TopK(-1)
    top = TopK(3)
    with pytest.raises(ValueError, match="NaN"):
        top.update([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="scores has"):
        top.update([0, 1], [0.5])


def test_index_set_membership() -> None:
    s = IndexSet([5, 1, 9, 5])
    assert len(s) == 3
    np.testing.assert_array_equal(s.contains(np.array([0, 1, 5, 9, 10])), [False, True, True, True, False])
    assert 9 in s and 2 not in s


# ---------------------------------------------------------------------------------- composition


@pytest.mark.parametrize(
    ("batch", "composition", "expected"),
    [
        (10, {"uncertainty": 0.8, "random": 0.2}, {"uncertainty": 8, "diversity": 0, "random": 2}),
        (7, {"uncertainty": 0.5, "random": 0.5}, {"uncertainty": 4, "diversity": 0, "random": 3}),
        (10, {"uncertainty": 0.7, "random": 0.3}, {"uncertainty": 7, "diversity": 0, "random": 3}),
        (3, {"uncertainty": 1 / 3, "diversity": 1 / 3, "random": 1 / 3}, {"uncertainty": 1, "diversity": 1, "random": 1}),
        (5, {"uncertainty": 0.45, "diversity": 0.45, "random": 0.1}, {"uncertainty": 2, "diversity": 2, "random": 1}),
        (0, {"random": 1.0}, {"uncertainty": 0, "diversity": 0, "random": 0}),
    ],
)
def test_split_batch_largest_remainder(batch: int, composition: dict[str, float], expected: dict[str, int]) -> None:
    assert split_batch(batch, composition) == expected


def test_split_batch_always_sums_to_batch_size() -> None:
    rng = np.random.default_rng(8)
    for _ in range(300):
        fractions = rng.dirichlet(np.ones(3))
        batch = int(rng.integers(0, 500))
        sizes = split_batch(batch, dict(zip(("uncertainty", "diversity", "random"), fractions)))
        assert sum(sizes.values()) == batch
        for name, f in zip(("uncertainty", "diversity", "random"), fractions):
            assert abs(sizes[name] - f * batch) < 1.0


@pytest.mark.parametrize(
    ("batch", "composition", "message"),
    [
        (10, {"uncertainty": 0.8, "random": 0.1}, "sum to 1"),
        (10, {"uncertainty": 1.2, "random": -0.2}, "'uncertainty'"),
        (10, {"uncertainty": 0.5, "novelty": 0.5}, "unknown components"),
        (-1, {"uncertainty": 1.0}, "batch_size"),
    ],
)
def test_split_batch_errors_name_the_parameter(batch: int, composition: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_batch(batch, composition)


def _pool(n: int = 2000, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.3), size=n)
    embeddings = rng.normal(size=(n, 5))
    return np.arange(n), probs, embeddings


def _stream(selector: BatchSelector, indices: np.ndarray, probs: np.ndarray, emb: np.ndarray | None, chunk: int) -> None:
    order = np.arange(indices.size)
    for start in range(0, indices.size, chunk):
        part = order[start : start + chunk]
        selector.update(indices[part], embeddings=None if emb is None else emb[part], probs=probs[part])


def test_batch_composition_respected_exactly_and_never_labelled_or_duplicated() -> None:
    indices, probs, emb = _pool()
    scores = entropy(probs)
    labelled = _full_sort_top(indices, scores, 50)  # the most uncertain are labelled already
    composition = {"uncertainty": 0.5, "diversity": 0.3, "random": 0.2}
    selector = BatchSelector("entropy", 40, composition, seed=3, exclude=labelled, oversample=4)
    _stream(selector, indices, probs, emb, 128)
    batch = selector.result()
    reasons = Counter(item.reason for item in batch)
    assert reasons == {"uncertainty": 20, "diversity": 12, "random": 8}
    chosen = [item.index for item in batch]
    assert len(set(chosen)) == len(chosen) == 40
    assert not set(chosen) & set(labelled)
    # The uncertainty part is exactly the top 20 of the unlabelled pool.
    assert [b.index for b in batch if b.reason == "uncertainty"] == _full_sort_top(indices, scores, 20, set(labelled))
    # Every item reports its own score.
    for item in batch:
        assert item.score == pytest.approx(scores[item.index])


def test_batch_is_deterministic_for_a_seed_and_random_part_changes_with_it() -> None:
    indices, probs, emb = _pool()
    composition = {"uncertainty": 0.4, "diversity": 0.4, "random": 0.2}

    def run(seed: int) -> list[tuple[int, str]]:
        selector = BatchSelector("margin", 30, composition, seed=seed)
        _stream(selector, indices, probs, emb, 300)
        return [(b.index, b.reason) for b in selector.result()]

    assert run(1) == run(1)
    random_part = lambda batch: {i for i, r in batch if r == "random"}  # noqa: E731
    assert random_part(run(1)) != random_part(run(2))


@pytest.mark.parametrize("strategy", ["entropy", "random"])
def test_streaming_tiny_chunks_equals_one_big_chunk(strategy: str) -> None:
    indices, probs, emb = _pool(n=600)
    composition = {"uncertainty": 0.5, "diversity": 0.25, "random": 0.25}
    big = BatchSelector(strategy, 20, composition, seed=9, exclude=[3, 4, 5], oversample=3)
    big.update(indices, embeddings=emb, probs=probs)
    small = BatchSelector(strategy, 20, composition, seed=9, exclude=[3, 4, 5], oversample=3)
    _stream(small, indices, probs, emb, 1)
    assert small.result() == big.result()
    # ...and two shards scored by different pods, merged, give the same batch.
    first = BatchSelector(strategy, 20, composition, seed=9, exclude=[3, 4, 5], oversample=3)
    second = BatchSelector(strategy, 20, composition, seed=9, exclude=[3, 4, 5], oversample=3)
    _stream(first, indices[:250], probs[:250], emb[:250], 50)
    _stream(second, indices[250:], probs[250:], emb[250:], 70)
    second.merge(first)
    assert second.result() == big.result()


def test_random_part_is_uniform_over_the_rest_of_the_pool() -> None:
    n, batch = 40, 10
    scores = np.linspace(0, 1, n)  # the top 5 always go to the uncertainty part
    hits: Counter[int] = Counter()
    runs = 600
    for seed in range(runs):
        items = compose_batch(np.arange(n), scores, batch, {"uncertainty": 0.5, "random": 0.5}, seed=seed, exclude=[0])
        hits.update(i.index for i in items if i.reason == "random")
    eligible = set(range(1, n - 5))  # not labelled (0) and not in the uncertainty top 5
    assert set(hits) <= eligible
    expected = runs * 5 / len(eligible)
    sd = math.sqrt(expected)
    assert all(abs(hits[i] - expected) < 5 * sd for i in eligible)


def test_batch_larger_than_unlabelled_pool_raises() -> None:
    selector = BatchSelector("entropy", 10, exclude=range(5))
    selector.update(np.arange(12), np.random.default_rng(0).random(12))
    with pytest.raises(ValueError, match="batch_size=10"):
        selector.result()


def test_batch_selector_errors() -> None:
    with pytest.raises(ValueError, match="strategy"):
        BatchSelector("maximum-fun", 10)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSelector("entropy", -3)
    with pytest.raises(ValueError, match="oversample"):
        BatchSelector("entropy", 10, oversample=0)
    selector = BatchSelector("entropy", 4, {"diversity": 1.0})
    with pytest.raises(ValueError, match="embeddings"):
        selector.update(np.arange(3), np.ones(3))


def test_update_with_probs_equals_precomputed_scores() -> None:
    indices, probs, _ = _pool(n=300)
    a = BatchSelector("least-confidence", 12, {"uncertainty": 0.75, "random": 0.25}, seed=1)
    a.update(indices, probs=probs)
    b = BatchSelector("least-confidence", 12, {"uncertainty": 0.75, "random": 0.25}, seed=1)
    b.update(indices, least_confidence(probs))
    assert a.result() == b.result()


# ---------------------------------------------------------------------------------- diversity


def _blobs(rng: np.random.Generator, per_blob: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], dtype=float)
    blob = np.repeat(np.arange(4), per_blob)
    emb = centres[blob] + rng.normal(scale=1.0, size=(blob.size, 2))
    # Blob 0 holds all of the highest scores: plain top-k would take only blob 0.
    scores = np.where(blob == 0, 0.9, 0.5) + rng.uniform(0, 0.05, blob.size)
    return emb, scores, blob


def test_diverse_select_picks_the_best_of_each_blob() -> None:
    rng = np.random.default_rng(21)
    emb, scores, blob = _blobs(rng)
    picks = diverse_select(emb, scores, 4, rng=7)
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3]
    for p in picks:
        members = np.flatnonzero(blob == blob[p])
        assert scores[p] == scores[members].max()
    assert np.all(np.diff(scores[picks]) <= 0)  # best first
    np.testing.assert_array_equal(picks, diverse_select(emb, scores, 4, rng=7))
    assert set(np.argsort(-scores)[:4].tolist()) <= set(np.flatnonzero(blob == 0).tolist())


def test_diverse_select_edge_cases() -> None:
    emb = np.zeros((5, 2))  # all identical: k-means finds one cluster; fill by score
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.2])
    assert diverse_select(emb, scores, 3, rng=0).tolist() == [3, 1, 2]
    assert diverse_select(emb, scores, 10, rng=0).tolist() == [3, 1, 2, 4, 0]
    assert diverse_select(emb, scores, 0, rng=0).size == 0
    with pytest.raises(ValueError, match="candidates_embedding"):
        diverse_select(np.zeros((4, 2)), scores, 2)


def test_batch_diversity_part_spreads_over_blobs() -> None:
    rng = np.random.default_rng(5)
    emb, scores, blob = _blobs(rng)
    batch = compose_batch(np.arange(blob.size), scores, 4, {"diversity": 1.0}, embeddings=emb, oversample=30)
    assert {item.reason for item in batch} == {"diversity"}
    assert sorted(blob[[item.index for item in batch]].tolist()) == [0, 1, 2, 3]
