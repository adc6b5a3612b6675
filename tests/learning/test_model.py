"""The classifier, its training, streaming scoring, MC dropout, persistence and score files.

Learning tests use the ``tiny`` preset on synthetic spectra (Gaussian emission bumps, absorption
dips and flat continua with noise) so the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oraculum.spectra.datasets import Batch
from oraculum.learning.model import (
    TrainingConfig,
    balanced_class_weights,
    build_model,
    classifier_head,
    encode_labels,
    feature_extractor,
    flops_per_spectrum,
    layer_summary,
    load_model,
    reset_dropout_seeds,
    save_model,
    stratified_split,
    train,
)
from oraculum.learning.scores import ScoreWriter, iter_scores, read_scores, score_classes, write_scores
from oraculum.learning.scoring import Scorer, array_batches, mc_probs_uncached, score_array, score_batches

CLASSES = ("continuum", "emission", "absorption")
POINTS = 140


def toy_spectra(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat continua, Gaussian bumps and Gaussian dips (random centre, width, depth) plus noise,
    min-max scaled to [-1, 1] per spectrum as the published preprocessing does (without that
    scaling the tiny network sits on its initial plateau for more epochs than early stopping
    waits)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    grid = np.arange(POINTS, dtype=np.float32)
    centre = rng.uniform(30, 110, (n, 1))
    width = rng.uniform(2, 6, (n, 1))
    depth = rng.uniform(0.5, 1.0, (n, 1))
    line = depth * np.exp(-0.5 * ((grid - centre) / width) ** 2)
    sign = np.select([labels == 1, labels == 2], [1.0, -1.0], 0.0)[:, None]
    x = 1.0 + sign * line + rng.normal(0, 0.08, (n, POINTS))
    low, high = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return (2 * (x - low) / (high - low) - 1).astype(np.float32), labels


@pytest.fixture(scope="module")
def trained():
    x, y = toy_spectra(360, seed=1)
    config = TrainingConfig(preset="tiny", epochs=40, patience=5, seed=7)
    return train(x, y, CLASSES, config)


# ----------------------------------------------------------------------------------- architecture


def test_podsztavek2020_layers_parameters_and_flops():
    model = build_model("podsztavek2020", POINTS, 3, seed=0)
    summary = layer_summary(model)
    expected = [
        # name, type, output length/width, parameters = k*cin*cout + cout (conv), in*out + out (dense)
        ("conv1_1", "Conv1D", (None, 138, 64), 3 * 1 * 64 + 64),
        ("conv1_2", "Conv1D", (None, 136, 64), 3 * 64 * 64 + 64),
        ("pool1", "MaxPooling1D", (None, 68, 64), 0),
        ("conv2_1", "Conv1D", (None, 66, 128), 3 * 64 * 128 + 128),
        ("conv2_2", "Conv1D", (None, 64, 128), 3 * 128 * 128 + 128),
        ("pool2", "MaxPooling1D", (None, 32, 128), 0),
        ("conv3_1", "Conv1D", (None, 30, 256), 3 * 128 * 256 + 256),
        ("conv3_2", "Conv1D", (None, 28, 256), 3 * 256 * 256 + 256),
        ("pool3", "MaxPooling1D", (None, 14, 256), 0),
        ("flatten", "Flatten", (None, 14 * 256), 0),
        ("hidden_1", "Dense", (None, 512), 3584 * 512 + 512),
        ("dropout_1", "Dropout", (None, 512), 0),
        ("hidden_2", "Dense", (None, 512), 512 * 512 + 512),
        ("dropout_2", "Dropout", (None, 512), 0),
        ("probs", "Dense", (None, 3), 512 * 3 + 3),
    ]
    assert summary == expected
    assert model.count_params() == sum(row[3] for row in expected) == 2_481_731
    by_hand = (
        2 * 3 * (1 * 64 * 138 + 64 * 64 * 136 + 64 * 128 * 66 + 128 * 128 * 64 + 128 * 256 * 30 + 256 * 256 * 28)
        + 2 * (3584 * 512 + 512 * 512 + 512 * 3)
    )
    assert flops_per_spectrum(model) == by_hand
    assert abs(flops_per_spectrum(model) - 34e6) / 34e6 < 0.10  # the paper's "about 34 MFLOP"
    assert model.layers[-1].layers[-1].activation.__name__ == "softmax"
    assert model.optimizer.__class__.__name__ == "Adam"


def test_tiny_preset_and_submodels_share_weights():
    model = build_model("tiny", POINTS, 4, seed=3)
    widths = [row[2][-1] for row in layer_summary(model) if row[1] in ("Conv1D", "Dense")]
    assert widths == [8, 8, 16, 16, 32, 32, 64, 64, 4]
    features, head = feature_extractor(model), classifier_head(model)
    x = np.random.default_rng(0).normal(1, 0.1, (5, POINTS, 1)).astype(np.float32)
    composed = head(features(x, training=False), training=False).numpy()
    np.testing.assert_allclose(composed, model(x, training=False).numpy(), rtol=1e-6)
    # Same variables, not copies: changing one changes the other.
    assert {id(v) for v in model.weights} == {id(v) for v in features.weights + head.weights}


def test_build_is_seeded():
    a, b, c = (build_model("tiny", POINTS, 3, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("resnet", POINTS, 3, 0)
    with pytest.raises(ValueError, match="too short"):
        build_model("podsztavek2020", 20, 3, 0)
    with pytest.raises(ValueError, match="not among the classes"):
        encode_labels(["emission", "quasar"], CLASSES)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        encode_labels([0, 3], CLASSES)
    np.testing.assert_array_equal(encode_labels(["absorption", "continuum"], CLASSES), [2, 0])


# --------------------------------------------------------------------------------------- training


def test_training_learns_separable_problem(trained):
    x_test, y_test = toy_spectra(600, seed=2)
    scored = score_array(trained.model, x_test, embed=False)
    accuracy = float(np.mean(scored.predicted == y_test))
    assert accuracy > 0.9, (accuracy, trained.record.history)
    record = trained.record
    assert record.validation == "stratified" and record.monitor == "val_loss"
    assert record.n_train + record.n_validation == 360
    assert 1 <= record.best_epoch <= record.epochs_run <= 40
    assert record.val_loss == pytest.approx(min(record.history["val_loss"]))
    assert record.tensorflow_version and record.keras_version and record.op_determinism


def test_training_is_deterministic_for_a_seed():
    x, y = toy_spectra(120, seed=4)
    config = TrainingConfig(preset="tiny", epochs=2, seed=11)
    first, second = train(x, y, CLASSES, config), train(x, y, CLASSES, config)
    for u, v in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(score_array(first.model, x).probs, score_array(second.model, x).probs)
    assert first.record.history == second.record.history
    assert first.record.epochs_run == 2


def test_balanced_class_weights_match_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 90 + [1] * 9 + [3] * 1)
    weights = balanced_class_weights(labels, 4)
    present = np.unique(labels)
    expected = compute_class_weight("balanced", classes=present, y=labels)
    assert [weights[c] for c in present] == pytest.approx(expected.tolist())
    assert weights[2] == 1.0  # absent class: weight irrelevant, but defined
    # Each present class carries the same total weight.
    totals = [weights[c] * np.sum(labels == c) for c in present]
    assert totals == pytest.approx([totals[0]] * 3)


def test_stratified_split_keeps_proportions_and_singletons():
    labels = np.array([0] * 100 + [1] * 20 + [2] * 1)
    train_idx, val_idx, notes = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val_idx], minlength=3).tolist() == [10, 2, 0]
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(labels.size))
    assert any("class 2 has 1 example" in note for note in notes)


def test_tiny_training_sets_fall_back_and_say_so():
    x, y = toy_spectra(200, seed=5)
    # One emission example, no absorption at all.
    keep = np.concatenate([np.flatnonzero(y == 0)[:30], np.flatnonzero(y == 1)[:1]])
    result = train(x[keep], y[keep], CLASSES, TrainingConfig(preset="tiny", epochs=2, seed=0))
    record = result.record
    assert record.train_class_counts == {"continuum": 27, "emission": 1, "absorption": 0}
    assert record.validation_class_counts == {"continuum": 3, "emission": 0, "absorption": 0}
    assert record.class_weights["emission"] == pytest.approx(28 / (2 * 1))  # n_train / (present * count)
    assert any("1 example" in note for note in record.notes)
    assert any("absorption" in note for note in record.notes)
    assert score_array(result.model, x[:4]).probs.shape == (4, 3)  # the absent class is an output

    # Three spectra: nothing can be held out, so early stopping watches the training loss.
    few = np.array([np.flatnonzero(y == c)[0] for c in range(3)])
    record = train(x[few], y[few], CLASSES, TrainingConfig(preset="tiny", epochs=2, seed=0)).record
    assert record.validation == "none" and record.monitor == "loss" and record.val_loss is None
    assert any("monitors the training loss" in note for note in record.notes)


# ---------------------------------------------------------------------------------------- scoring


def test_streamed_scoring_equals_scoring_all_at_once(trained):
    x, _ = toy_spectra(1000, seed=6)
    whole = Scorer(trained.model, chunk_size=4096).score(x)
    # Real Batch objects as Dataset.iter_batches yields them, uneven sizes, small chunks.
    batches = [
        Batch(index=np.arange(a, b, dtype=np.int64) + 10_000, ids=np.array([f"s{i}" for i in range(a, b)]), flux=x[a:b], meta={})
        for a, b in [(0, 1), (1, 300), (300, 777), (777, 1000)]
    ]
    streamed = list(score_batches(trained.model, iter(batches), chunk_size=128))
    assert [len(s) for s in streamed] == [1, 299, 477, 223]
    np.testing.assert_array_equal(np.concatenate([s.index for s in streamed]), np.arange(1000) + 10_000)
    assert streamed[1].ids[0] == "s1"
    probs = np.concatenate([s.probs for s in streamed])
    np.testing.assert_allclose(probs, whole.probs, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([s.predicted for s in streamed]), whole.predicted)
    np.testing.assert_allclose(np.concatenate([s.embedding for s in streamed]), whole.embedding, atol=1e-5)
    assert whole.embedding.shape == (1000, 64) and whole.embedding.dtype == np.float32
    np.testing.assert_allclose(whole.probs.sum(axis=1), 1, atol=1e-5)
    reference = trained.model(x[:, :, None], training=False).numpy()
    np.testing.assert_allclose(whole.probs, reference, atol=1e-6)
    assert Scorer(trained.model, embed=False).score(x[:0]).probs.shape == (0, 3)


def test_mc_dropout_with_cached_features_matches_full_network(trained):
    x, _ = toy_spectra(200, seed=8)
    samples = 8
    cached = score_array(trained.model, x, mc_samples=samples, chunk_size=64, mc_seed=3)
    full = mc_probs_uncached(trained.model, x, samples, chunk_size=64, mc_seed=3)
    assert cached.mc_probs.shape == (samples, 200, 3) and cached.mc_probs.dtype == np.float32
    # Same dropout seed -> the very same masks -> the same samples (to float rounding), both
    # against the compiled reference and against T plain eager calls of the whole network.
    np.testing.assert_allclose(cached.mc_probs, full, atol=1e-6)
    reset_dropout_seeds(trained.model, 3)
    eager = np.stack([trained.model(x[:64, :, None], training=True).numpy() for _ in range(samples)])
    np.testing.assert_allclose(cached.mc_probs[:, :64], eager, atol=1e-6)
    np.testing.assert_allclose(cached.mc_probs.sum(axis=2), 1, atol=1e-5)
    # Dropout really is active: samples differ from each other and from the deterministic output.
    assert np.abs(np.diff(cached.mc_probs, axis=0)).max() > 1e-3
    np.testing.assert_allclose(cached.probs, score_array(trained.model, x).probs, atol=1e-6)
    # Independent seeds: same distribution, compared by the mean over many samples.
    many = 200
    a = score_array(trained.model, x[:20], mc_samples=many, mc_seed=100).mc_probs
    b = mc_probs_uncached(trained.model, x[:20], many, mc_seed=200)
    # Welch z of the difference of the two sample means (the per-sample distributions are heavy
    # tailed, so each sample's own variance is used); allow 5 sigma for 60 comparisons.
    z = (a.mean(axis=0) - b.mean(axis=0)) / np.sqrt((a.var(axis=0) + b.var(axis=0)) / many + 1e-12)
    assert np.abs(z).max() < 5, z
    # Reproducible for a given seed.
    again = score_array(trained.model, x, mc_samples=samples, chunk_size=64, mc_seed=3)
    np.testing.assert_array_equal(again.mc_probs, cached.mc_probs)


# ------------------------------------------------------------------------------------ persistence


def test_save_load_round_trip(trained, tmp_path):
    path = save_model(trained, tmp_path / "iter-0" / "model.keras")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    loaded = load_model(path)
    x, _ = toy_spectra(300, seed=9)
    np.testing.assert_array_equal(score_array(loaded, x).probs, score_array(trained.model, x).probs)
    # The loaded model still has separable parts and working MC dropout.
    mc = score_array(loaded, x[:10], mc_samples=4, mc_seed=1).mc_probs
    np.testing.assert_allclose(mc, mc_probs_uncached(loaded, x[:10], 4, mc_seed=1), atol=1e-6)
    with pytest.raises(ValueError, match=".keras"):
        save_model(trained.model, tmp_path / "model.h5")


def test_score_file_round_trip(trained, tmp_path):
    x, _ = toy_spectra(1000, seed=10)
    ids = np.array([f"spec-{i:04d}" for i in range(1000)])
    batches = (
        Batch(index=np.arange(a, min(a + 130, 1000), dtype=np.int64), ids=ids[a : a + 130], flux=x[a : a + 130], meta={})
        for a in range(0, 1000, 130)
    )
    scored = list(score_batches(trained.model, batches, mc_samples=3))

    def entropy(s):
        return -(s.probs * np.log(np.clip(s.probs, 1e-12, 1))).sum(axis=1)

    def mc_std(s):
        return s.mc_probs.std(axis=0).max(axis=1)

    path = tmp_path / "scores.parquet"
    rows = write_scores(iter(scored), path, CLASSES, {"entropy": entropy, "mc_std": mc_std}, include_ids=True, row_group_size=256)
    assert rows == 1000
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).metadata.num_row_groups >= 4  # written incrementally
    table = read_scores(path)
    assert list(table) == ["index", "id", "predicted", "prob_continuum", "prob_emission", "prob_absorption", "entropy", "mc_std"]
    assert score_classes(path) == list(CLASSES)
    np.testing.assert_array_equal(table["index"], np.arange(1000))
    np.testing.assert_array_equal(table["id"], ids)
    probs = np.concatenate([s.probs for s in scored])
    np.testing.assert_array_equal(np.stack([table[f"prob_{c}"] for c in CLASSES], axis=1), probs)
    np.testing.assert_array_equal(table["predicted"], probs.argmax(axis=1))
    np.testing.assert_allclose(table["entropy"], np.concatenate([entropy(s) for s in scored]))
    assert table["prob_emission"].dtype == np.float32
    subset = read_scores(path, columns=["index", "mc_std"])
    assert list(subset) == ["index", "mc_std"]
    chunks = list(iter_scores(path, columns=["index"], batch_size=300))
    np.testing.assert_array_equal(np.concatenate([c["index"] for c in chunks]), np.arange(1000))

    # Extra columns must stay the same across batches; a failed write leaves no file behind.
    bad = tmp_path / "bad.parquet"
    with pytest.raises(ValueError, match="differ"):
        with ScoreWriter(bad, CLASSES) as writer:
            writer.write(scored[0], {"entropy": entropy(scored[0])})
            writer.write(scored[1], {})
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))
    # An empty stream still gives a readable file with the standard columns.
    empty = tmp_path / "empty.parquet"
    assert write_scores([], empty, CLASSES) == 0
    assert read_scores(empty)["prob_absorption"].shape == (0,)


def test_core_imports_do_not_load_tensorflow():
    code = (
        "import sys, oraculum.learning.model, oraculum.learning.scoring, oraculum.learning.scores, oraculum.spectra.datasets;"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
