"""Streaming scoring of a pool: class probabilities, embeddings and MC-dropout samples.

A pool (millions of spectra) is scored one batch at a time, as it streams out of
:meth:`oraculum.spectra.datasets.Dataset.iter_batches`; each input batch gives one :class:`ScoredBatch`
and nothing is accumulated, so memory is bounded by the batch size, not by the pool.

Each batch is cut into chunks of ``chunk_size`` rows that go through one compiled
``tf.function`` (``model.predict`` has milliseconds of per-call overhead and builds a dataset
pipeline per call, which dominates at this model size).

Monte Carlo dropout (Gal & Ghahramani 2016): the network's only stochastic layers are the two
dropouts in the head, and the first of them comes *after* the first dense layer. So everything up
to the first dropout -- the conv extractor and the first dense layer, 98.5 % of the FLOPs of the
paper's network -- is deterministic and is computed once per spectrum; only the rest of the head
(dropout, dense, dropout, softmax: ~0.5 MFLOP) is run ``T`` times with dropout active. The masks
are drawn from the same per-layer seed generators, in the same order, as a full
``model(x, training=True)`` call would draw them, so the samples are identical, not merely
identically distributed (tested).

Conventions: ``probs`` are the deterministic softmax outputs (dropout off), float32 (n x C), rows
sum to 1; ``predicted`` is their argmax; ``embedding`` is the output of the penultimate layer
(second dense layer, after ReLU; float32, n x 512 for the paper's network); ``mc_probs`` is
float32 (T x n x C).

TensorFlow is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from oraculum.learning.model import (
    EMBEDDING_LAYER,
    _keras,
    classifier_head,
    feature_extractor,
    input_length,
    reset_dropout_seeds,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

#: Rows per compiled call. Measured on 2 AMD EPYC cores (benchmarks/bench_scoring.py): 256-512
#: rows is fastest and 2048 is ~25 % slower, as the largest activation (rows x 136 x 64 float32,
#: 18 MB at 512) outgrows the cache; below ~128 rows per-call overhead shows.
DEFAULT_CHUNK = 512


class BatchLike(Protocol):
    """Anything with global indices and flux, such as :class:`oraculum.spectra.datasets.Batch`."""

    index: np.ndarray
    flux: np.ndarray | None


@dataclass(slots=True)
class ArrayBatch:
    """A batch cut from an in-memory array (tests, benchmarks, small labelled sets)."""

    index: np.ndarray
    flux: np.ndarray
    ids: np.ndarray | None = None


@dataclass(slots=True)
class ScoredBatch:
    """The network's output for one input batch (same rows, same order).

    Attributes:
        index: global indices of the spectra (int64).
        probs: softmax class probabilities with dropout off, float32 (n x C).
        predicted: index of the most probable class (int64, n).
        embedding: penultimate-layer activations, float32 (n x D), or None if not requested.
        mc_probs: MC-dropout probabilities, float32 (T x n x C), or None if T = 0.
        ids: spectrum ids passed through from the input batch, if it had them.
    """

    index: np.ndarray
    probs: np.ndarray
    predicted: np.ndarray
    embedding: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.index.size)


def array_batches(x: np.ndarray, batch_size: int = 4096, start: int = 0) -> Iterator[ArrayBatch]:
    """Consecutive row batches of ``x`` with global indices ``start, start + 1, ...``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for begin in range(0, x.shape[0], batch_size):
        stop = min(begin + batch_size, x.shape[0])
        yield ArrayBatch(index=np.arange(begin, stop, dtype=np.int64) + start, flux=x[begin:stop])


def _head_chain(model: "keras.Model") -> list[Any]:
    """The head's layers in call order; the head is built as a simple chain (see model.py)."""
    head = classifier_head(model)
    chain = [layer for layer in head.layers if layer.__class__.__name__ != "InputLayer"]
    if not any(layer.__class__.__name__ == "Dropout" for layer in chain):
        raise ValueError("the model's head has no dropout layer: MC dropout is not possible")
    return chain


class Scorer:
    """Compiled scoring functions for one model; reuse it to avoid re-tracing per pool pass.

    Args:
        model: a model from :func:`oraculum.learning.model.build_model`, ``train`` or ``load_model``.
        mc_samples: MC-dropout samples T per spectrum (0: none).
        embed: also return the penultimate-layer embedding.
        chunk_size: rows per compiled call.
        mc_seed: if not None, reset the dropout seed generators to this seed first, so MC samples
            are reproducible for a given model, seed and chunking. This changes the model's
            dropout state (harmless: it only affects which masks are drawn next).
    """

    def __init__(
        self,
        model: "keras.Model",
        *,
        mc_samples: int = 0,
        embed: bool = True,
        chunk_size: int = DEFAULT_CHUNK,
        mc_seed: int | None = 0,
    ) -> None:
        if mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        _keras()
        import tensorflow as tf

        self.model = model
        self.points = input_length(model)
        self.mc_samples = mc_samples
        self.embed = embed
        self.chunk_size = chunk_size
        if mc_samples and mc_seed is not None:
            reset_dropout_seeds(model, mc_seed)

        features = feature_extractor(model)
        chain = _head_chain(model)
        first_dropout = next(i for i, layer in enumerate(chain) if layer.__class__.__name__ == "Dropout")
        deterministic, stochastic = chain[:first_dropout], chain[first_dropout:]
        embed_at = [layer.name for layer in chain].index(EMBEDDING_LAYER)

        def run(layers: list[Any], h: Any, training: bool, start: int = 0) -> tuple[Any, Any]:
            emb = None
            for position, layer in enumerate(layers, start=start):
                h = layer(h, training=training)
                if position == embed_at:
                    emb = h
            return h, emb

        @tf.function(input_signature=[tf.TensorSpec([None, self.points], tf.float32)], reduce_retracing=True)
        def step(flux: Any) -> dict[str, Any]:
            cached, _ = run(deterministic, features(tf.expand_dims(flux, -1), training=False), False)
            probs, emb = run(stochastic, cached, False, start=first_dropout)
            out = {"probs": probs}
            if embed:
                out["embedding"] = emb
            if mc_samples:
                out["mc_probs"] = _repeat(lambda: run(stochastic, cached, True, start=first_dropout)[0], mc_samples)
            return out

        self._step = step

    def score(self, flux: np.ndarray, index: np.ndarray | None = None, ids: np.ndarray | None = None) -> ScoredBatch:
        """Score the rows of ``flux`` (n x points), ``chunk_size`` rows per compiled call."""
        flux = np.asarray(flux)
        if flux.ndim != 2 or flux.shape[1] != self.points:
            raise ValueError(f"flux must be (spectra, {self.points}) for this model, got shape {flux.shape}")
        n = flux.shape[0]
        index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        parts: dict[str, list[np.ndarray]] = {}
        for begin in range(0, n, self.chunk_size):
            chunk = np.ascontiguousarray(flux[begin : begin + self.chunk_size], dtype=np.float32)
            for key, value in self._step(chunk).items():
                parts.setdefault(key, []).append(value.numpy())
        if n == 0:
            return self._empty(index, ids)
        probs = _join(parts["probs"], axis=0)
        return ScoredBatch(
            index=index,
            probs=probs,
            predicted=probs.argmax(axis=1).astype(np.int64),
            embedding=_join(parts["embedding"], axis=0) if self.embed else None,
            mc_probs=_join(parts["mc_probs"], axis=1) if self.mc_samples else None,
            ids=ids,
        )

    def _empty(self, index: np.ndarray, ids: np.ndarray | None) -> ScoredBatch:
        classes = int(self.model.output_shape[-1])
        width = int(classifier_head(self.model).get_layer(EMBEDDING_LAYER).output.shape[-1])
        return ScoredBatch(
            index=index,
            probs=np.zeros((0, classes), np.float32),
            predicted=np.zeros(0, np.int64),
            embedding=np.zeros((0, width), np.float32) if self.embed else None,
            mc_probs=np.zeros((self.mc_samples, 0, classes), np.float32) if self.mc_samples else None,
            ids=ids,
        )

    def score_batches(self, batches: Iterable[BatchLike]) -> Iterator[ScoredBatch]:
        """One :class:`ScoredBatch` per input batch, lazily: memory is bounded by the batch size."""
        for batch in batches:
            if batch.flux is None:
                raise ValueError("batches must carry flux (use iter_batches(flux=True))")
            yield self.score(batch.flux, batch.index, getattr(batch, "ids", None))


def _repeat(sample: Any, times: int) -> Any:
    """Stack ``times`` calls of ``sample()`` inside a graph, as a sequential loop.

    A loop rather than unrolling: the graph (and its tracing time) stays the same size whatever T
    is. ``parallel_iterations=1`` keeps the dropout seed generators' draws in call order, so the
    masks are the same as those of T consecutive calls.
    """
    import tensorflow as tf

    return tf.map_fn(lambda _: sample(), tf.range(times), fn_output_signature=tf.float32, parallel_iterations=1)


def _join(parts: list[np.ndarray], axis: int) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def score_batches(
    model: "keras.Model",
    batches: Iterable[BatchLike],
    mc_samples: int = 0,
    embed: bool = True,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    mc_seed: int | None = 0,
) -> Iterator[ScoredBatch]:
    """Score a stream of batches (e.g. ``dataset.iter_batches()``) without accumulating the pool.

    See :class:`Scorer` for the arguments; this builds one and streams through it.
    """
    scorer = Scorer(model, mc_samples=mc_samples, embed=embed, chunk_size=chunk_size, mc_seed=mc_seed)
    yield from scorer.score_batches(batches)


def score_array(
    model: "keras.Model",
    x: np.ndarray,
    mc_samples: int = 0,
    embed: bool = True,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    mc_seed: int | None = 0,
) -> ScoredBatch:
    """Score an in-memory array (n x points) in one :class:`ScoredBatch` (small sets only)."""
    scorer = Scorer(model, mc_samples=mc_samples, embed=embed, chunk_size=chunk_size, mc_seed=mc_seed)
    return scorer.score(x)


def mc_probs_uncached(
    model: "keras.Model",
    x: np.ndarray,
    mc_samples: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    mc_seed: int | None = 0,
) -> np.ndarray:
    """Reference MC dropout: the *whole* network run T times with ``training=True`` (T x n x C).

    About T times the cost of plain scoring; kept to validate the cached path and to measure
    what caching saves, not for production use.
    """
    _keras()
    import tensorflow as tf

    if mc_seed is not None:
        reset_dropout_seeds(model, mc_seed)
    points = input_length(model)

    @tf.function(input_signature=[tf.TensorSpec([None, points], tf.float32)], reduce_retracing=True)
    def step(flux: Any) -> Any:
        x3 = tf.expand_dims(flux, -1)
        return _repeat(lambda: model(x3, training=True), mc_samples)

    out = [step(np.ascontiguousarray(x[b : b + chunk_size], dtype=np.float32)).numpy() for b in range(0, x.shape[0], chunk_size)]
    return np.concatenate(out, axis=1)
