"""Uncertainty scores: how unsure the network is about each spectrum of a chunk of the pool.

The published method (Škoda, Podsztavek & Tvrdík 2020) asks the oracle about the spectra with the
highest predictive entropy. These are that score and its usual alternatives, all "higher = more
uncertain", so that the batch selection (:mod:`oraculum.learning.acquisition`) can rank by any of
them: :func:`entropy`, :func:`margin`, :func:`least_confidence`, :func:`bald` (from Monte-Carlo
dropout passes) and :func:`random` (the passive baseline), dispatched by :func:`score` from the
:class:`Strategy` named in a manifest.

Pure numpy/scipy: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt
from scipy.special import entr

__all__ = [
    "Strategy",
    "bald",
    "entropy",
    "least_confidence",
    "margin",
    "random",
    "score",
]


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
