"""The classifier: the 1-D CNN of Škoda, Podsztavek & Tvrdík (2020), training and persistence.

The network is built as two functional sub-models that share weights with the full model:

* ``features`` -- the convolutional extractor, everything up to and including ``Flatten``;
* ``head`` -- ``Dense-Dropout-Dense-Dropout-Dense(softmax)``.

The full model is ``head(features(x))``. Keeping the parts separately callable is what makes
Monte Carlo dropout cheap: dropout lives only in the head, so the (expensive, ~88 % of the FLOPs)
convolutional features are computed once and only the head is resampled (see
:mod:`oraculum.learning.scoring`).

TensorFlow/Keras are imported lazily inside functions, so ``import oraculum.learning.model`` (for
:class:`TrainingConfig`, which the experiment spec embeds) never pulls TensorFlow in.

Conventions: inputs are float32 flux on the dataset's grid, shape ``(n, points)``; the model
itself takes ``(n, points, 1)``. Labels are integer class indices into ``classes`` (or the class
names themselves). FLOPs count one multiply-add as 2 FLOP.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

#: Name of the sub-model holding the convolutional feature extractor.
FEATURES = "features"
#: Name of the sub-model holding the dense classification head.
HEAD = "head"
#: Name of the head's layer whose output is the spectrum embedding: the *penultimate* layer
#: (second Dense, after ReLU, before its dropout), i.e. the representation the softmax reads.
EMBEDDING_LAYER = "hidden_2"

Preset = Literal["podsztavek2020", "tiny"]


@dataclass(frozen=True, slots=True)
class Architecture:
    """Widths of a preset: conv blocks (two 'valid' k=3 convs then MaxPool 2) and dense layers."""

    conv_blocks: tuple[int, ...]
    dense: tuple[int, int]
    kernel_size: int = 3
    pool_size: int = 2
    dropout: float = 0.5


PRESETS: dict[str, Architecture] = {
    # Škoda, Podsztavek & Tvrdík 2020 (A&A 643 A122), github podondra/active-cnn, active_cnn/model.py.
    # The original used Conv2D with (1, 3) kernels on (1, 140, 1) inputs, which is the same
    # computation as Conv1D; its output layer was sigmoid, here softmax (mutually exclusive classes).
    "podsztavek2020": Architecture(conv_blocks=(64, 128, 256), dense=(512, 512)),
    # Same shape, narrow: for CI tests and demos on two cores.
    "tiny": Architecture(conv_blocks=(8, 16, 32), dense=(64, 64)),
}


def _keras() -> Any:
    """Import Keras (TensorFlow backend) on first use, quietening TensorFlow's C++ start-up logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def _seeds(seed: int, count: int) -> list[int]:
    """Independent per-layer seeds derived from one seed (so layers don't share init streams)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count) % (2**31 - 1)]


def conv_output_length(input_length: int, architecture: Architecture) -> int:
    """Spectrum length after the conv blocks ('valid' convolutions, floor pooling)."""
    length = input_length
    for _ in architecture.conv_blocks:
        length -= 2 * (architecture.kernel_size - 1)
        if length < 1:
            return 0
        length //= architecture.pool_size
    return length


def build_model(
    preset: str,
    input_length: int,
    n_classes: int,
    seed: int,
    *,
    learning_rate: float = 1e-3,
) -> "keras.Model":
    """A compiled classifier (Adam, categorical cross-entropy) for spectra of ``input_length`` points.

    Weights and dropout masks are seeded from ``seed`` alone, so two calls with the same
    arguments build identical models whatever the global random state.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    arch = PRESETS[preset]
    if conv_output_length(input_length, arch) < 1:
        raise ValueError(f"input_length {input_length} is too short for preset {preset!r}")
    keras = _keras()
    layers = keras.layers
    seeds = iter(_seeds(seed, 2 * len(arch.conv_blocks) + 5))

    def glorot() -> Any:
        return keras.initializers.GlorotUniform(seed=next(seeds))

    flux = keras.Input((input_length, 1), name="flux")
    x = flux
    for block, width in enumerate(arch.conv_blocks, start=1):
        for conv in (1, 2):
            x = layers.Conv1D(
                width, arch.kernel_size, activation="relu", kernel_initializer=glorot(), name=f"conv{block}_{conv}"
            )(x)
        x = layers.MaxPooling1D(arch.pool_size, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    features = keras.Model(flux, x, name=FEATURES)

    head_in = keras.Input((int(x.shape[-1]),), name="conv_features")
    h = layers.Dense(arch.dense[0], activation="relu", kernel_initializer=glorot(), name="hidden_1")(head_in)
    h = layers.Dropout(arch.dropout, seed=next(seeds), name="dropout_1")(h)
    h = layers.Dense(arch.dense[1], activation="relu", kernel_initializer=glorot(), name=EMBEDDING_LAYER)(h)
    h = layers.Dropout(arch.dropout, seed=next(seeds), name="dropout_2")(h)
    probs = layers.Dense(n_classes, activation="softmax", kernel_initializer=glorot(), name="probs")(h)
    head = keras.Model(head_in, probs, name=HEAD)

    inputs = keras.Input((input_length, 1), name="spectrum")
    model = keras.Model(inputs, head(features(inputs)), name=preset)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=False,  # XLA autoclustering is not covered by op determinism; oneDNN is as fast here
    )
    return model


def feature_extractor(model: "keras.Model") -> "keras.Model":
    """The convolutional part (input -> flattened features), sharing weights with ``model``."""
    return model.get_layer(FEATURES)


def classifier_head(model: "keras.Model") -> "keras.Model":
    """The dense head (flattened features -> class probabilities), sharing weights with ``model``."""
    return model.get_layer(HEAD)


def dropout_layers(model: "keras.Model") -> list[Any]:
    """The head's dropout layers, in call order (their seed generators drive MC dropout)."""
    head = classifier_head(model)
    return [layer for layer in head.layers if layer.__class__.__name__ == "Dropout"]


def reset_dropout_seeds(model: "keras.Model", seed: int) -> None:
    """Put the dropout layers' seed generators in a state derived from ``seed``.

    Keras draws dropout masks statelessly from a per-layer (seed, counter) state that advances on
    every training-mode call; resetting it makes the sequence of masks reproducible.
    """
    layers = dropout_layers(model)
    for layer, layer_seed in zip(layers, _seeds(seed, len(layers)), strict=True):
        layer.seed_generator.state.assign(np.array([layer_seed, 0], dtype=layer.seed_generator.state.dtype))


def input_length(model: "keras.Model") -> int:
    """Number of grid points the model expects."""
    return int(model.input_shape[1])


def n_outputs(model: "keras.Model") -> int:
    """Number of classes the model predicts."""
    return int(model.output_shape[-1])


def _walk(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_walk(layer))
        else:
            out.append(layer)
    return out


def flops_by_layer(model: "keras.Model") -> dict[str, int]:
    """Floating-point operations per spectrum of each Conv1D and Dense layer, from its shapes.

    ``2*k*cin*cout*L_out`` per Conv1D and ``2*in*out`` per Dense (a multiply-add is 2 FLOP);
    biases, activations and pooling are ignored (< 0.5 % here).
    """
    flops = {}
    for layer in _walk(model):
        kind = layer.__class__.__name__
        if kind == "Conv1D":
            k, cin, cout = (int(v) for v in layer.kernel.shape)
            flops[layer.name] = 2 * k * cin * cout * int(layer.output.shape[1])
        elif kind == "Dense":
            n_in, n_out = (int(v) for v in layer.kernel.shape)
            flops[layer.name] = 2 * n_in * n_out
    return flops


def flops_per_spectrum(model: "keras.Model") -> int:
    """Floating-point operations to score one spectrum (see :func:`flops_by_layer`).

    The paper's network at 140 points is 34.0 MFLOP.
    """
    return sum(flops_by_layer(model).values())


def layer_summary(model: "keras.Model") -> list[tuple[str, str, tuple[int | None, ...], int]]:
    """(name, layer type, output shape, parameters) of every leaf layer, in order."""
    return [
        (layer.name, layer.__class__.__name__, tuple(layer.output.shape), int(layer.count_params()))
        for layer in _walk(model)
        if layer.__class__.__name__ != "InputLayer"
    ]


# --------------------------------------------------------------------------------------- training


class TrainingConfig(BaseModel):
    """How the classifier is trained in each iteration."""

    model_config = ConfigDict(extra="forbid")

    preset: Preset = Field("podsztavek2020", description="Network architecture preset.")
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum number of epochs (early stopping usually ends sooner).")
    batch_size: int = Field(64, ge=1, le=65_536, description="Mini-batch size.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    patience: int = Field(
        5, ge=0, le=1000, description="Early stopping: epochs without improvement of the monitored loss before stopping; the best weights are restored."
    )
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction of the labelled set held out, per class (stratified), to monitor for early stopping; 0 monitors the training loss.",
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="'balanced' weights each class by n / (classes present * class count) so rare classes count as much as common ones; 'none' weights every spectrum 1.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 2, description="Seed for weight initialisation, dropout, the validation split and shuffling.")


class TrainingRecord(BaseModel):
    """What happened in one training run: enough to reproduce it and to judge it."""

    preset: str
    classes: list[str]
    seed: int
    config: TrainingConfig
    tensorflow_version: str
    keras_version: str
    op_determinism: bool = Field(description="Whether TensorFlow's deterministic-ops mode was enabled.")
    n_train: int
    n_validation: int
    train_class_counts: dict[str, int]
    validation_class_counts: dict[str, int]
    class_weights: dict[str, float]
    validation: Literal["stratified", "none"]
    monitor: Literal["val_loss", "loss"]
    epochs_run: int
    best_epoch: int = Field(description="1-based epoch whose weights were kept.")
    stopped_early: bool
    loss: float = Field(description="Training loss (weighted) at the kept epoch.")
    val_loss: float | None = Field(description="Validation loss (weighted like training) at the kept epoch.")
    history: dict[str, list[float]]
    parameters: int
    flops_per_spectrum: int
    duration_s: float
    notes: list[str] = Field(default_factory=list, description="Fallbacks taken, e.g. classes too small to stratify.")


@dataclass(slots=True)
class TrainedModel:
    """A trained Keras model with its class names (output order) and training record."""

    model: "keras.Model"
    classes: tuple[str, ...]
    record: TrainingRecord


def encode_labels(y: Sequence[Any] | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Integer class indices (int64) from indices or class names, checked against ``classes``."""
    y = np.asarray(y)
    if y.dtype.kind in "US" or y.dtype == object:
        lookup = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in y.tolist()} - set(lookup))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
        return np.array([lookup[str(v)] for v in y.tolist()], dtype=np.int64)
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices or class names, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"label indices must be in [0, {len(classes)}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights ``n / (present classes * count_c)`` (scikit-learn's 'balanced').

    Every class present contributes the same total weight, which is how the rare target classes
    (emission-line stars are a few per cent) are kept from being ignored. Classes without examples
    get weight 1 (it never multiplies anything).
    """
    counts = np.bincount(labels, minlength=n_classes)
    present = int((counts > 0).sum())
    return {c: (float(labels.size / (present * counts[c])) if counts[c] else 1.0) for c in range(n_classes)}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Indices (train, validation) holding out ``round(fraction * count)`` of each class.

    At least one example of every class stays in training, so a class with a single example is
    never moved to validation; classes too small to contribute are noted. If nothing can be held
    out the validation set is empty and training monitors its own loss.
    """
    rng = np.random.default_rng(seed)
    train, val, notes = [], [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(int(np.floor(fraction * members.size + 0.5)), members.size - 1)
        if fraction > 0 and k == 0:
            notes.append(f"class {int(c)} has {members.size} example(s): none held out for validation")
        val.append(members[:k])
        train.append(members[k:])
    train_idx = np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64)
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return train_idx, val_idx, notes


def _enable_determinism(seed: int) -> bool:
    import tensorflow as tf

    keras = _keras()
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
        return True
    except Exception:  # pragma: no cover - very old TensorFlow
        return False


def _epoch_callback(keras: Any, on_epoch: Callable[[int, int], None] | None, epochs: int) -> list[Any]:
    if on_epoch is None:
        return []
    return [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, epochs))]


def train(
    x: np.ndarray,
    y: Sequence[Any] | np.ndarray,
    classes: Sequence[str],
    config: TrainingConfig | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainedModel:
    """Train a fresh network on flux ``x`` (n x points, float32) with labels ``y``.

    ``on_epoch(epochs_done, epochs)`` is called after each epoch (progress reports; early
    stopping may end training before ``epochs``).

    Deterministic for a given seed on the same machine and library versions: weights, dropout,
    split and shuffling are all seeded and TensorFlow's deterministic-ops mode is switched on
    (process-wide, which it is anyway once set).
    """
    config = config or TrainingConfig()
    classes = tuple(str(c) for c in classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {list(classes)}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be (spectra, points), got shape {x.shape}")
    labels = encode_labels(y, classes)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"{x.shape[0]} spectra but {labels.shape} labels")
    if x.shape[0] == 0:
        raise ValueError("cannot train on an empty labelled set")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite flux; preprocess (and reject) such spectra first")

    keras = _keras()
    import tensorflow as tf

    started = time.perf_counter()
    determinism = _enable_determinism(config.seed)
    n_classes = len(classes)

    train_idx, val_idx, notes = stratified_split(labels, config.validation_fraction, config.seed)
    absent = [classes[c] for c in range(n_classes) if not np.any(labels == c)]
    if absent:
        notes.append(f"no examples of {absent}: still outputs, never predicted confidently")
    if config.validation_fraction > 0 and val_idx.size == 0:
        notes.append("too few examples for a validation set: early stopping monitors the training loss")

    if config.class_weight == "balanced":
        weights = balanced_class_weights(labels[train_idx], n_classes)
    else:
        weights = {c: 1.0 for c in range(n_classes)}
    weight_of = np.array([weights[c] for c in range(n_classes)], dtype=np.float32)

    model = build_model(config.preset, x.shape[1], n_classes, config.seed, learning_rate=config.learning_rate)
    onehot = np.eye(n_classes, dtype=np.float32)
    x3 = x[:, :, None]
    monitor: Literal["val_loss", "loss"] = "val_loss" if val_idx.size else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True)
    validation = None
    if val_idx.size:
        # The validation loss is weighted like the training loss so early stopping optimises the
        # same (class-balanced) objective rather than the majority class.
        validation = (x3[val_idx], onehot[labels[val_idx]], weight_of[labels[val_idx]])
    history = model.fit(
        x3[train_idx],
        onehot[labels[train_idx]],
        sample_weight=weight_of[labels[train_idx]],
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=validation,
        callbacks=[stopper, *_epoch_callback(keras, on_epoch, config.epochs)],
        shuffle=True,
        verbose=0,
    )
    hist = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(hist["loss"])
    monitored = hist[monitor]
    best = int(np.argmin(monitored))

    def counts(idx: np.ndarray) -> dict[str, int]:
        found = np.bincount(labels[idx], minlength=n_classes)
        return {classes[c]: int(found[c]) for c in range(n_classes)}

    record = TrainingRecord(
        preset=config.preset,
        classes=list(classes),
        seed=config.seed,
        config=config,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        op_determinism=determinism,
        n_train=int(train_idx.size),
        n_validation=int(val_idx.size),
        train_class_counts=counts(train_idx),
        validation_class_counts=counts(val_idx),
        class_weights={classes[c]: float(weights[c]) for c in range(n_classes)},
        validation="stratified" if val_idx.size else "none",
        monitor=monitor,
        epochs_run=epochs_run,
        best_epoch=best + 1,
        stopped_early=epochs_run < config.epochs,
        loss=hist["loss"][best],
        val_loss=hist["val_loss"][best] if "val_loss" in hist else None,
        history=hist,
        parameters=int(model.count_params()),
        flops_per_spectrum=flops_per_spectrum(model),
        duration_s=time.perf_counter() - started,
        notes=notes,
    )
    return TrainedModel(model=model, classes=classes, record=record)


# ------------------------------------------------------------------------------------ persistence


def save_model(model: "keras.Model | TrainedModel", path: str | os.PathLike[str]) -> Path:
    """Write the model (architecture, weights, optimiser state) as a ``.keras`` file, atomically.

    The file is written next to its destination and renamed, so a reader (or a retried Job)
    never sees a half-written model.
    """
    if isinstance(model, TrainedModel):
        model = model.model
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files end in .keras, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | os.PathLike[str]) -> "keras.Model":
    """Read a model written by :func:`save_model` (its sub-models come back by name)."""
    keras = _keras()
    model = keras.models.load_model(Path(path), compile=True)
    for name in (FEATURES, HEAD):
        model.get_layer(name)  # raises ValueError if this is not an oraculum model
    return model
