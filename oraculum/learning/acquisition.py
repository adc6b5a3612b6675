"""Choosing the oracle batch: uncertainty scores, streaming top-k, diversity and composition.

Each iteration the network scores the whole pool (millions of spectra, streamed shard by shard)
and the oracle labels a small batch. The published method (Škoda, Podsztavek & Tvrdík 2020)
takes the spectra with the highest predictive entropy. This module adds what a production loop
needs around that idea:

* several uncertainty scores (:func:`entropy`, :func:`margin`, :func:`least_confidence`,
  :func:`bald`, :func:`random`), all "higher = more uncertain", dispatched by :func:`score`;
* :class:`TopK`, a bounded accumulator of the best-scored spectra over a stream of chunks, so the
  pool is never held in memory;
* :func:`diverse_select`, k-means over a shortlist of top candidates, because the top of an
  entropy ranking is often many near-identical spectra (one artefact repeated across plates)
  and labelling all of them teaches the network one thing many times;
* :class:`BatchSelector` / :func:`compose_batch`, a batch built from declared fractions, e.g.
  ``{"uncertainty": 0.8, "random": 0.2}``: the random part keeps the training set from drifting
  entirely into the model's blind spots and gives an unbiased view of the pool.

Streaming and determinism. The random part (and the ``random`` strategy inside
:class:`BatchSelector`) uses a *keyed* reservoir: every spectrum gets a pseudo-random key
computed from ``(seed, global index)`` by a fixed hash (:func:`uniform_keys`), and the sample is
the spectra with the largest keys (bottom-k / "random sort" reservoir sampling). This is a
uniform sample without replacement, like Algorithm R, but the result does not depend on chunk
sizes, on the order shards arrive in, or on how many pods scored them: two partial selectors
over different shards can be :meth:`merged <BatchSelector.merge>` into exactly the selector of
the whole pool. Global indices are assumed unique across the stream.

This module is pure numpy/scipy (scikit-learn only inside :func:`diverse_select`); it must not
import TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import entr

__all__ = [
    "COMPONENTS",
    "BatchItem",
    "BatchSelector",
    "IndexSet",
    "Reason",
    "Strategy",
    "TopK",
    "bald",
    "compose_batch",
    "diverse_select",
    "entropy",
    "least_confidence",
    "margin",
    "random",
    "score",
    "split_batch",
    "uniform_keys",
]

Reason = Literal["uncertainty", "diversity", "random"]
"""Why a spectrum is in the batch; also the names of the composition components."""

COMPONENTS: tuple[Reason, ...] = ("uncertainty", "diversity", "random")
"""Composition components in their fixed order (the order also breaks rounding ties)."""

# Salts separate the pseudo-random streams drawn from one seed, so that e.g. the random part of
# the oracle batch and the estimation sample are independent even with the same seed.
SALT_RANDOM_PART = 1
SALT_RANDOM_STRATEGY = 2

_FRACTION_TOLERANCE = 1e-6


class Strategy(str, enum.Enum):
    """Acquisition strategies; the values are the strings used in manifests."""

    ENTROPY = "entropy"
    MARGIN = "margin"
    LEAST_CONFIDENCE = "least-confidence"
    BALD = "bald"
    RANDOM = "random"

    @classmethod
    def parse(cls, value: Strategy | str) -> Strategy:
        """The strategy named by ``value``; a ValueError lists the valid names otherwise."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown strategy {value!r}; expected one of: {valid}") from None


# --------------------------------------------------------------------------------------------
# Uncertainty scores
# --------------------------------------------------------------------------------------------


def _as_probs(probs: npt.ArrayLike, name: str = "probs") -> np.ndarray:
    """``probs`` as a 2-D float64 array clipped to [0, 1].

    Softmax outputs in float32 can be a hair outside [0, 1] or not sum exactly to one; clipping
    keeps the logarithms finite without renormalising (which would hide a real bug upstream).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n spectra x C classes), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.clip(p, 0.0, 1.0)


def entropy(probs: npt.ArrayLike) -> np.ndarray:
    """Shannon entropy (nats) of each row: the paper's acquisition score.

    Uses ``scipy.special.entr`` so that 0 log 0 = 0 exactly. Uniform over C classes gives
    log C, a one-hot row gives 0.
    """
    return entr(_as_probs(probs)).sum(axis=1)


def _top_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and second-largest probability of each row (second is 0 when C = 1)."""
    if p.shape[1] == 1:
        return p[:, 0], np.zeros(p.shape[0])
    part = np.partition(p, (p.shape[1] - 2, p.shape[1] - 1), axis=1)
    return part[:, -1], part[:, -2]


def margin(probs: npt.ArrayLike) -> np.ndarray:
    """``1 - (p1 - p2)``: high when the two most likely classes are nearly tied.

    Cares only about the decision boundary the spectrum is nearest to, unlike entropy, which is
    raised by probability mass spread over irrelevant classes.
    """
    first, second = _top_two(_as_probs(probs))
    return 1.0 - (first - second)


def least_confidence(probs: npt.ArrayLike) -> np.ndarray:
    """``1 - max p``: how far the predicted class is from certainty."""
    return 1.0 - _as_probs(probs).max(axis=1)


def bald(mc_probs: npt.ArrayLike) -> np.ndarray:
    """BALD mutual information from T Monte-Carlo-dropout passes, ``mc_probs`` of shape (T, n, C).

    ``H(mean_t p_t) - mean_t H(p_t)``: the part of the uncertainty due to disagreement between
    plausible networks (epistemic), which labelling can reduce, as opposed to spectra that are
    ambiguous to every network (noise, which more labels do not fix). Zero when all passes
    agree; clipped at zero against rounding.
    """
    mc = np.asarray(mc_probs, dtype=np.float64)
    if mc.ndim != 3:
        raise ValueError(f"mc_probs must have shape (T passes, n spectra, C classes), got {mc.shape}")
    if not np.all(np.isfinite(mc)):
        raise ValueError("mc_probs contains NaN or infinite values")
    mc = np.clip(mc, 0.0, 1.0)
    entropy_of_mean = entr(mc.mean(axis=0)).sum(axis=1)
    mean_of_entropy = entr(mc).sum(axis=2).mean(axis=0)
    return np.maximum(entropy_of_mean - mean_of_entropy, 0.0)


def random(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform scores in [0, 1): the passive-learning baseline every strategy must beat."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return rng.random(n)


def score(
    strategy: Strategy | str,
    probs: npt.ArrayLike | None = None,
    mc_probs: npt.ArrayLike | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Scores of ``strategy`` (higher = more uncertain) for one chunk of the pool.

    ``bald`` needs ``mc_probs``; the others need ``probs`` or, failing that, use the mean of
    ``mc_probs`` (the MC-dropout predictive distribution). ``random`` needs ``rng`` so that it is
    reproducible.
    """
    strat = Strategy.parse(strategy)
    if strat is Strategy.BALD:
        if mc_probs is None:
            raise ValueError("strategy 'bald' needs mc_probs of shape (T, n, C)")
        return bald(mc_probs)
    if probs is None:
        if mc_probs is None:
            raise ValueError(f"strategy {strat.value!r} needs probs (or mc_probs)")
        probs = np.asarray(mc_probs, dtype=np.float64).mean(axis=0)
    if strat is Strategy.RANDOM:
        if rng is None:
            raise ValueError("strategy 'random' needs rng (a numpy Generator) to be reproducible")
        return random(_as_probs(probs).shape[0], rng)
    functions = {Strategy.ENTROPY: entropy, Strategy.MARGIN: margin, Strategy.LEAST_CONFIDENCE: least_confidence}
    return functions[strat](probs)


# --------------------------------------------------------------------------------------------
# Keyed pseudo-random numbers (chunking-independent)
# --------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijection on uint64 with full avalanche."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_keys(global_indices: npt.ArrayLike, seed: int, salt: int = 0) -> np.ndarray:
    """A pseudo-random number in [0, 1) for each global index, a pure function of (seed, salt, index).

    Why not ``rng.random(len(chunk))``: these keys do not depend on how the pool is chunked or
    which pod scored which shard, which is what makes the streaming reservoirs in this module
    mergeable and reproducible. Different ``salt`` values give independent streams.
    """
    idx = _as_indices(global_indices)
    k1, k2 = np.random.SeedSequence([salt, seed % 2**64]).generate_state(2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(idx.astype(np.uint64) ^ k1) + k2 * _GOLDEN)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


# --------------------------------------------------------------------------------------------
# Streaming top-k
# --------------------------------------------------------------------------------------------


def _as_indices(global_indices: npt.ArrayLike, name: str = "global_indices") -> np.ndarray:
    idx = np.asarray(global_indices)
    if idx.ndim != 1:
        idx = idx.reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and idx.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return idx


class IndexSet:
    """An immutable set of global indices with vectorised membership (a sorted int64 array).

    A sorted array costs 8 bytes per index (a Python set about 60), and ``np.searchsorted``
    tests a whole chunk at once.
    """

    __slots__ = ("_sorted",)

    def __init__(self, indices: Iterable[int] | np.ndarray | None = None) -> None:
        if indices is None:
            arr = np.empty(0, dtype=np.int64)
        elif isinstance(indices, np.ndarray):
            arr = indices
        else:
            arr = np.fromiter((int(i) for i in indices), dtype=np.int64)
        self._sorted = np.unique(_as_indices(arr, "exclude"))

    @classmethod
    def of(cls, exclude: IndexSet | Iterable[int] | np.ndarray | None) -> IndexSet:
        """``exclude`` itself if already an IndexSet, else a new one built from it."""
        return exclude if isinstance(exclude, IndexSet) else cls(exclude)

    def __len__(self) -> int:
        return int(self._sorted.size)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, (int, np.integer)):
            return False
        return bool(self.contains(np.array([index], dtype=np.int64))[0])

    def contains(self, global_indices: npt.ArrayLike) -> np.ndarray:
        """Boolean mask: which of ``global_indices`` are in the set."""
        idx = np.asarray(global_indices, dtype=np.int64)
        if self._sorted.size == 0 or idx.size == 0:
            return np.zeros(idx.shape, dtype=bool)
        pos = np.searchsorted(self._sorted, idx)
        pos[pos == self._sorted.size] = 0
        return self._sorted[pos] == idx

    def union(self, other: Iterable[int] | np.ndarray) -> IndexSet:
        """A new set with the indices of both."""
        extra = other._sorted if isinstance(other, IndexSet) else IndexSet(other)._sorted
        return IndexSet(np.concatenate([self._sorted, extra]))

    def to_array(self) -> np.ndarray:
        """The indices, sorted ascending (a copy)."""
        return self._sorted.copy()


def _best_positions(scores: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best items, best first: higher score wins, then lower global index.

    ``np.partition`` finds the k-th best score in O(n); only items at or above it (k plus ties)
    are sorted, so the cost is O(n + k log k) rather than a full sort of the chunk.
    """
    n = scores.size
    if n > k:
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = np.lexsort((indices[cand], -scores[cand]))
    return cand[order[:k]]


class TopK:
    """The k highest-scoring items of a stream of chunks, with optional per-item payload rows.

    Ties are broken deterministically: a lower global index wins, so the result is the same as a
    stable full sort of the whole pool by (-score, index) regardless of chunking. Indices in
    ``exclude`` (already labelled spectra) are dropped on arrival.

    Memory bound: the kept state is k indices, k scores and k payload rows; an update allocates
    at most O(k + chunk) temporaries (the exclusion mask and the candidates that beat the
    current k-th best). The exclusion set itself costs 8 bytes per excluded index.
    """

    def __init__(self, k: int, exclude: IndexSet | Iterable[int] | np.ndarray | None = None) -> None:
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        self.k = int(k)
        self.exclude = IndexSet.of(exclude)
        self.n_seen = 0  # non-excluded items offered so far: the size of the unlabelled pool
        self._indices = np.empty(0, dtype=np.int64)
        self._scores = np.empty(0, dtype=np.float64)
        self._payload: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._indices.size)

    @property
    def indices(self) -> np.ndarray:
        """Kept global indices, best first."""
        return self._indices

    @property
    def scores(self) -> np.ndarray:
        """Scores of the kept items, best first (non-increasing)."""
        return self._scores

    @property
    def payload(self) -> np.ndarray | None:
        """Payload rows of the kept items, best first, or None if no payload was given."""
        return self._payload

    def update(self, global_indices: npt.ArrayLike, scores: npt.ArrayLike, payload: npt.ArrayLike | None = None) -> None:
        """Offer one chunk. ``payload`` (optional) has one row per item, e.g. an embedding."""
        idx = _as_indices(global_indices)
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        if sc.size != idx.size:
            raise ValueError(f"scores has {sc.size} values for {idx.size} global_indices")
        if not np.all(np.isfinite(sc)):
            raise ValueError("scores contains NaN or infinite values (did the model diverge?)")
        rows = self._check_payload(payload, idx.size)
        keep = ~self.exclude.contains(idx)
        self.n_seen += int(keep.sum())
        if self.k == 0:
            return
        if len(self) == self.k:
            keep &= sc >= self._scores[-1]  # cannot enter otherwise; ties may still win on index
        if not keep.any():
            return
        self._absorb(idx[keep], sc[keep], None if rows is None else rows[keep])

    def merge(self, other: TopK) -> None:
        """Absorb another accumulator (e.g. another shard's); the result equals one stream over both."""
        if other.k != self.k:
            raise ValueError(f"cannot merge TopK with k={other.k} into k={self.k}")
        self.n_seen += other.n_seen
        if len(other):
            keep = ~self.exclude.contains(other.indices)
            payload = None if other.payload is None else other.payload[keep]
            self._check_payload(other.payload, len(other))
            self._absorb(other.indices[keep], other.scores[keep], payload)

    def _check_payload(self, payload: npt.ArrayLike | None, n: int) -> np.ndarray | None:
        if payload is None:
            if self._payload is not None:
                raise ValueError("payload was given in earlier updates and is missing now")
            return None
        rows = np.asarray(payload)
        if rows.shape[:1] != (n,):
            raise ValueError(f"payload has {rows.shape[:1]} rows for {n} global_indices")
        if self._payload is None:
            if len(self):
                raise ValueError("payload is given now but was missing in earlier updates")
            self._payload = np.empty((0, *rows.shape[1:]), dtype=rows.dtype)
        elif rows.shape[1:] != self._payload.shape[1:]:
            raise ValueError(f"payload rows have shape {rows.shape[1:]}, earlier {self._payload.shape[1:]}")
        return rows

    def _absorb(self, idx: np.ndarray, sc: np.ndarray, rows: np.ndarray | None) -> None:
        all_idx = np.concatenate([self._indices, idx])
        all_sc = np.concatenate([self._scores, sc])
        best = _best_positions(all_sc, all_idx, self.k)
        self._indices, self._scores = all_idx[best], all_sc[best]
        if rows is not None and self._payload is not None:
            self._payload = np.concatenate([self._payload, rows.astype(self._payload.dtype, copy=False)])[best]


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def _random_state(rng: np.random.Generator | int | None) -> int:
    """A fixed integer seed for scikit-learn from a Generator or an int (0 when None)."""
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    return int(rng) % (2**31 - 1)


def diverse_select(
    candidates_embedding: npt.ArrayLike,
    candidates_scores: npt.ArrayLike,
    k: int,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Positions (into the shortlist) of k candidates that are uncertain *and* unlike each other.

    The shortlist (typically the top ``k * oversample`` by score) is clustered into k groups by
    k-means on the network's embeddings, and each cluster contributes its highest-scoring member
    (lower position breaks ties). If k-means yields fewer than k non-empty clusters (duplicate
    embeddings), the remaining slots go to the best remaining scores. Returned best score first.
    """
    emb = np.asarray(candidates_embedding, dtype=np.float64)
    sc = np.asarray(candidates_scores, dtype=np.float64).reshape(-1)
    if emb.ndim != 2 or emb.shape[0] != sc.size:
        raise ValueError(
            f"candidates_embedding must be 2-D with one row per score; got {emb.shape} for {sc.size} scores"
        )
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    positions = np.arange(sc.size)
    by_score = np.lexsort((positions, -sc))
    if k >= sc.size:
        return by_score
    if k == 0:
        return np.empty(0, dtype=np.int64)
    labels = _kmeans_labels(emb, k, _random_state(rng))
    _, first = np.unique(labels[by_score], return_index=True)
    picks = by_score[first]
    if picks.size < k:
        rest = by_score[~np.isin(by_score, picks)]
        picks = np.concatenate([picks, rest[: k - picks.size]])
    return picks[np.lexsort((picks, -sc[picks]))]


def _kmeans_labels(embedding: np.ndarray, k: int, random_state: int) -> np.ndarray:
    # Imported here: scikit-learn takes a second to import and only diversity needs it.
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Fewer distinct points than clusters is handled by the caller's fill-up step.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = KMeans(n_clusters=k, random_state=random_state, n_init=3)
        return model.fit_predict(embedding)


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def split_batch(batch_size: int, composition: Mapping[str, float]) -> dict[str, int]:
    """How many spectra each component gets: sizes that sum to ``batch_size`` exactly.

    Rounding: largest remainder (Hamilton) method. Each component first gets
    ``floor(fraction * batch_size)``; the spectra left over go one each to the components with
    the largest fractional parts, ties in the order of :data:`COMPONENTS` (uncertainty,
    diversity, random). So 10 x {0.8, 0.2} gives 8 + 2 and 7 x {0.5, 0.5} gives 4 + 3.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
    fractions = _check_composition(composition)
    exact = {c: fractions[c] * batch_size for c in COMPONENTS}
    sizes: dict[str, int] = {c: math.floor(exact[c] + 1e-9) for c in COMPONENTS}
    left = int(batch_size) - sum(sizes.values())
    by_remainder = sorted(COMPONENTS, key=lambda c: (-(exact[c] - sizes[c]), COMPONENTS.index(c)))
    for c in by_remainder[: max(left, 0)]:
        sizes[c] += 1
    return sizes


def _check_composition(composition: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(composition) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"composition has unknown components {unknown}; expected some of {list(COMPONENTS)}")
    fractions = {c: float(composition.get(c, 0.0)) for c in COMPONENTS}
    for c, f in fractions.items():
        if not (math.isfinite(f) and 0.0 <= f <= 1.0):
            raise ValueError(f"composition fraction for {c!r} must be in [0, 1], got {f}")
    total = sum(fractions.values())
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ValueError(f"composition fractions must sum to 1, got {total:g} ({dict(composition)})")
    # Renormalise so that tolerated rounding (0.1 + 0.2 + 0.7) cannot push sizes past batch_size.
    return {c: f / total for c, f in fractions.items()}


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One spectrum chosen for the oracle.

    Attributes:
        index: global index of the spectrum in the pool.
        reason: which component chose it.
        score: its acquisition score (for ``random`` items too, so the dashboard can show it).
    """

    index: int
    reason: Reason
    score: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (for ``batch.json``)."""
        return {"index": self.index, "reason": self.reason, "score": self.score}


class BatchSelector:
    """Builds the oracle batch from a stream of scored chunks.

    Usage by the iteration code::

        selector = BatchSelector("entropy", 100, {"uncertainty": 0.8, "random": 0.2}, seed=k,
                                 exclude=labelled_indices)
        for shard in pool:
            selector.update(shard.indices, probs=model.predict(shard.flux))
        batch = selector.result()

    Components (see :func:`split_batch` for the sizes):

    * ``uncertainty``: the highest scores among unlabelled spectra (ties: lower index);
    * ``diversity``: :func:`diverse_select` over the next ``n_diversity * oversample`` scores;
    * ``random``: a uniform sample of the unlabelled spectra not chosen by the other two.

    Memory bound, independent of the pool size: a shortlist of
    ``n_uncertainty + n_diversity * oversample`` (index, score, embedding row) triples (the
    embeddings stored as float32, only when diversity is requested), a reservoir of
    ``batch_size`` (index, key, score) triples when a random part is requested, the exclusion
    set (8 bytes per labelled index), and O(chunk) temporaries per update.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        batch_size: int,
        composition: Mapping[str, float] | None = None,
        seed: int = 0,
        exclude: IndexSet | Iterable[int] | np.ndarray | None = None,
        oversample: int = 10,
    ) -> None:
        self.strategy = Strategy.parse(strategy)
        self.composition = dict(composition) if composition is not None else {"uncertainty": 1.0}
        self.sizes = split_batch(batch_size, self.composition)
        if oversample < 1:
            raise ValueError(f"oversample must be at least 1, got {oversample}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.oversample = int(oversample)
        self.exclude = IndexSet.of(exclude)
        n_short = self.sizes["uncertainty"] + self.sizes["diversity"] * self.oversample
        self._shortlist = TopK(n_short, self.exclude)
        # The random part must avoid the (at most batch_size - n_random) spectra chosen by the
        # other components, so keeping the batch_size best keys always leaves enough.
        self._reservoir = TopK(self.batch_size if self.sizes["random"] else 0, self.exclude)

    @property
    def pool_size(self) -> int:
        """Unlabelled spectra seen so far."""
        return self._shortlist.n_seen

    def update(
        self,
        global_indices: npt.ArrayLike,
        scores: npt.ArrayLike | None = None,
        embeddings: npt.ArrayLike | None = None,
        *,
        probs: npt.ArrayLike | None = None,
        mc_probs: npt.ArrayLike | None = None,
    ) -> None:
        """Offer one chunk: precomputed ``scores``, or ``probs`` / ``mc_probs`` to score here.

        ``embeddings`` (one row per spectrum) are required when the composition has a
        diversity part. For the ``random`` strategy the scores are keyed by (seed, index), so
        they too are independent of chunking.
        """
        idx = _as_indices(global_indices)
        if scores is None:
            scores = self._score(idx, probs, mc_probs)
        if self.sizes["diversity"]:
            if embeddings is None:
                raise ValueError("embeddings are required because the composition has a diversity part")
            embeddings = np.asarray(embeddings, dtype=np.float32)
        else:
            embeddings = None
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._shortlist.update(idx, sc, embeddings)
        if self._reservoir.k:
            self._reservoir.update(idx, uniform_keys(idx, self.seed, SALT_RANDOM_PART), payload=sc)

    def _score(self, idx: np.ndarray, probs: npt.ArrayLike | None, mc_probs: npt.ArrayLike | None) -> np.ndarray:
        if self.strategy is Strategy.RANDOM:
            return uniform_keys(idx, self.seed, SALT_RANDOM_STRATEGY)
        if probs is None and mc_probs is None:
            raise ValueError("update() needs scores, probs or mc_probs")
        return score(self.strategy, probs=probs, mc_probs=mc_probs)

    def merge(self, other: BatchSelector) -> None:
        """Absorb a selector that saw other shards; configuration must be identical."""
        same = (other.strategy, other.sizes, other.seed, other.oversample) == (
            self.strategy,
            self.sizes,
            self.seed,
            self.oversample,
        )
        if not same or not np.array_equal(other.exclude.to_array(), self.exclude.to_array()):
            raise ValueError("cannot merge BatchSelectors with different configuration or exclude")
        self._shortlist.merge(other._shortlist)
        self._reservoir.merge(other._reservoir)

    def result(self) -> list[BatchItem]:
        """The batch: uncertainty items (best first), then diversity, then random (key order).

        Raises ValueError if ``batch_size`` exceeds the unlabelled spectra seen. Does not
        change the selector, so it can be called again after more updates.
        """
        if self.batch_size > self.pool_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the unlabelled pool "
                f"({self.pool_size} spectra seen after excluding {len(self.exclude)} labelled)"
            )
        short_idx, short_sc = self._shortlist.indices, self._shortlist.scores
        n_unc, n_div = self.sizes["uncertainty"], self.sizes["diversity"]
        items = [BatchItem(int(i), "uncertainty", float(s)) for i, s in zip(short_idx[:n_unc], short_sc[:n_unc])]
        if n_div:
            emb = self._shortlist.payload
            assert emb is not None  # guaranteed by update()
            picks = diverse_select(emb[n_unc:], short_sc[n_unc:], n_div, _random_state(self.seed))
            items += [BatchItem(int(short_idx[n_unc + p]), "diversity", float(short_sc[n_unc + p])) for p in picks]
        items += self._random_part({item.index for item in items})
        return items

    def _random_part(self, chosen: set[int]) -> list[BatchItem]:
        n_rand = self.sizes["random"]
        if not n_rand:
            return []
        payload = self._reservoir.payload
        assert payload is not None
        out: list[BatchItem] = []
        for i, s in zip(self._reservoir.indices, payload):
            if int(i) not in chosen:
                out.append(BatchItem(int(i), "random", float(s)))
                if len(out) == n_rand:
                    break
        return out


def compose_batch(
    global_indices: npt.ArrayLike,
    scores: npt.ArrayLike,
    batch_size: int,
    composition: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    exclude: IndexSet | Iterable[int] | np.ndarray | None = None,
    embeddings: npt.ArrayLike | None = None,
    oversample: int = 10,
    strategy: Strategy | str = Strategy.ENTROPY,
) -> list[BatchItem]:
    """One-shot :class:`BatchSelector` over arrays already in memory (same result as streaming)."""
    selector = BatchSelector(strategy, batch_size, composition, seed=seed, exclude=exclude, oversample=oversample)
    selector.update(global_indices, scores, embeddings)
    return selector.result()
