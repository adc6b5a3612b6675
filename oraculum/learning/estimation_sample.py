"""The estimation sample: which spectra the oracle labels so that performance can be estimated.

The published method (Škoda, Podsztavek & Tvrdík 2020) does not trust validation accuracy on
the small, actively chosen training set (it is biased towards hard spectra). Instead, each
iteration the oracle labels a *simple random sample of the spectra predicted as target classes*;
the fraction that really are targets estimates the precision of the candidate catalogue
(:mod:`oraculum.learning.metrics`).

:class:`EstimationSampler` / :func:`draw_estimation_sample` draw that precision sample and,
optionally, a stratified sample over all predicted classes (for accuracy and recall), in one
streaming pass over the pool; :class:`EstimationSample` is the result, stored as
``estimation.json`` (:meth:`EstimationSample.to_dict`, read back by :func:`sample_from_dict`).

Sampling uses the same keyed reservoirs as the oracle batch (:mod:`oraculum.learning.reservoirs`):
every spectrum gets a pseudo-random key from (seed, global index) and a sample is the spectra with
the best keys. That is a uniform sample without replacement whose result depends neither on chunk
sizes nor on shard order, so shard-wise samplers can be merged. The precision and stratified
samples use independent keys; a spectrum may fall in both, and the oracle then labels it once.

Pure numpy: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from oraculum.learning.intervals import check_count
from oraculum.learning.reservoirs import IndexSet, TopK, uniform_keys

__all__ = [
    "EstimationSample",
    "EstimationSampler",
    "Stratum",
    "draw_estimation_sample",
    "finite_or_none",
    "sample_from_dict",
]

# Independent pseudo-random streams from one seed (acquisition uses salts 1 and 2).
SALT_PRECISION = 11
SALT_STRATIFIED = 12


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
                    str(c): {"population": s.population, "sample_size": s.sample_size, "weight": finite_or_none(s.weight)}
                    for c, s in self.strata.items()
                },
            },
        }


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or None for NaN and infinities (JSON has no NaN)."""
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
        self.size = check_count(size, "size")
        self.stratified_size = check_count(stratified_size, "stratified_size")
        self.reserve = check_count(reserve, "reserve")
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


def sample_from_dict(data: dict[str, Any]) -> EstimationSample:
    """The :class:`EstimationSample` stored by :meth:`EstimationSample.to_dict` (``estimation.json``)."""
    precision, stratified = data["precision"], data["stratified"]
    return EstimationSample(
        target_classes=tuple(int(c) for c in data["target_classes"]),
        precision_indices=np.asarray(precision["indices"], dtype=np.int64),
        precision_predicted=np.asarray(precision["predicted"], dtype=np.int64),
        target_population_by_class={int(c): int(n) for c, n in precision["population_by_class"].items()},
        predicted_counts={int(c): int(n) for c, n in data["predicted_counts"].items()},
        stratified_indices=np.asarray(stratified["indices"], dtype=np.int64),
        stratified_predicted=np.asarray(stratified["predicted"], dtype=np.int64),
        strata={
            int(c): Stratum(int(c), int(s["population"]), int(s["sample_size"]),
                            float("nan") if s["weight"] is None else float(s["weight"]))
            for c, s in stratified["strata"].items()
        },
        seed=int(data["seed"]),
    )
