"""Choosing the oracle batch: diversity and composition around the uncertainty ranking.

Each iteration the network scores the whole pool (millions of spectra, streamed shard by shard)
and the oracle labels a small batch. The published method (Škoda, Podsztavek & Tvrdík 2020)
takes the spectra with the highest predictive entropy (the scores are in
:mod:`oraculum.learning.uncertainty`). This module adds what a production loop needs around that
idea:

* :func:`diverse_select`, k-means over a shortlist of top candidates, because the top of an
  entropy ranking is often many near-identical spectra (one artefact repeated across plates)
  and labelling all of them teaches the network one thing many times;
* :class:`BatchSelector` / :func:`compose_batch`, a batch built from declared fractions, e.g.
  ``{"uncertainty": 0.8, "random": 0.2}``: the random part keeps the training set from drifting
  entirely into the model's blind spots and gives an unbiased view of the pool.

Streaming and determinism. The selector keeps only bounded reservoirs
(:mod:`oraculum.learning.reservoirs`): a :class:`~oraculum.learning.reservoirs.TopK` shortlist of
the best scores, and for the random part (and the ``random`` strategy) a *keyed* reservoir: every
spectrum gets a pseudo-random key from ``(seed, global index)``
(:func:`~oraculum.learning.reservoirs.uniform_keys`) and the sample is the spectra with the largest
keys. So the batch does not depend on chunk sizes, on the order shards arrive in, or on how many
pods scored them: two partial selectors over different shards can be
:meth:`merged <BatchSelector.merge>` into exactly the selector of the whole pool.

This module is pure numpy (scikit-learn only inside :func:`diverse_select`); it must not
import TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from oraculum.learning.reservoirs import IndexSet, TopK, as_indices, uniform_keys
from oraculum.learning.uncertainty import Strategy, score

__all__ = [
    "COMPONENTS",
    "BatchItem",
    "BatchSelector",
    "Reason",
    "compose_batch",
    "diverse_select",
    "split_batch",
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
        idx = as_indices(global_indices)
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
