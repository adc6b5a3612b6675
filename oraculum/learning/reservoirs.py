"""Keyed reservoirs: bounded-memory selection over a pool streamed shard by shard.

The pool (millions of spectra) is never held in memory: each iteration streams it once, and the
oracle batch (:mod:`oraculum.learning.acquisition`) and the estimation sample
(:mod:`oraculum.learning.estimation_sample`) are kept by these pieces as the chunks go by:

* :func:`uniform_keys`: a pseudo-random number in [0, 1) per global index, a pure function of
  ``(seed, salt, index)``. A uniform sample without replacement is then the spectra with the
  largest keys (bottom-k / "random sort" reservoir sampling, like Algorithm R), but the result
  does not depend on chunk sizes, on the order shards arrive in, or on how many pods scored them.
  Global indices are assumed unique across the stream.
* :class:`IndexSet`: the already-labelled spectra, as a sorted array with vectorised membership.
* :class:`TopK`: the k best-scored items of a stream (scores or keys), with deterministic ties,
  mergeable: two partial accumulators over different shards merge into exactly the accumulator
  of the whole pool.

Pure numpy: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = [
    "IndexSet",
    "TopK",
    "as_indices",
    "uniform_keys",
]


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
    idx = as_indices(global_indices)
    k1, k2 = np.random.SeedSequence([salt, seed % 2**64]).generate_state(2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(idx.astype(np.uint64) ^ k1) + k2 * _GOLDEN)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


# --------------------------------------------------------------------------------------------
# Streaming top-k
# --------------------------------------------------------------------------------------------


def as_indices(global_indices: npt.ArrayLike, name: str = "global_indices") -> np.ndarray:
    """``global_indices`` as a flat int64 array; a ValueError unless they are non-negative integers."""
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
        self._sorted = np.unique(as_indices(arr, "exclude"))

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
        idx = as_indices(global_indices)
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

