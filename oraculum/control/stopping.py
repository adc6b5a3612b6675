"""When an experiment's loop stops: the stopping criteria of ``spec.stopping``, as pure functions.

Apart from the state machine (:mod:`oraculum.control.reconcile`) because the criteria are a policy
of their own, read by people tuning an experiment and tested row by row, while the machine only
asks "stop, and why?" after each evaluated iteration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from oraculum.manifests import ExperimentSpec, HistoryEntry, StoppingSpec

__all__ = ["StopReason", "next_batch_labels", "stopping_reason"]


@dataclass(frozen=True)
class StopReason:
    """Why the loop stops: a CamelCase reason and a sentence."""

    reason: str
    message: str


def next_batch_labels(spec: ExperimentSpec) -> int:
    """Labels the next iteration asks for at most (oracle batch plus estimation samples)."""
    return spec.acquisition.batch_size + spec.estimation.size + spec.estimation.stratified_size


def stopping_reason(
    stopping: StoppingSpec, history: Sequence[HistoryEntry], labels_total: int, next_batch: int
) -> StopReason | None:
    """Whether the loop should stop after the last evaluated iteration in ``history``.

    Criteria, whichever holds first in this order (all that hold are named in the message):
    TargetReached (lower bound of the precision interval at least ``targetPrecision``), Plateau
    (no estimate in the last ``plateau.iterations`` iterations beat the best before them by more
    than ``plateau.tolerance``), LabelBudget (the next batch would exceed ``labelBudget``),
    MaxIterations (``maxIterations`` iterations ran).
    """
    found: list[StopReason] = []
    estimated = [entry for entry in history if entry.estimate is not None]
    if stopping.target_precision is not None and estimated:
        last = estimated[-1]
        if last.low is not None and last.low >= stopping.target_precision:
            found.append(StopReason(
                "TargetReached",
                f"precision lower bound {last.low:.3f} at iteration {last.iteration} reached the target "
                f"{stopping.target_precision:g}",
            ))
    if stopping.plateau is not None:
        window, tolerance = stopping.plateau.iterations, stopping.plateau.tolerance
        values = [float(entry.estimate) for entry in estimated]  # type: ignore[arg-type]
        if len(values) > window:
            best_before = max(values[:-window])
            recent = max(values[-window:])
            if recent < best_before + tolerance or math.isclose(recent, best_before + tolerance):
                found.append(StopReason(
                    "Plateau",
                    f"the precision estimate has not improved by more than {tolerance:g} in {window} "
                    f"iteration(s) (best before {best_before:.3f}, best since {recent:.3f})",
                ))
    if stopping.label_budget is not None and labels_total + next_batch > stopping.label_budget:
        found.append(StopReason(
            "LabelBudget",
            f"{labels_total} labels used; the next batch of up to {next_batch} would exceed the budget of "
            f"{stopping.label_budget}",
        ))
    iterations_run = (max(entry.iteration for entry in history) + 1) if history else 0
    if iterations_run >= stopping.max_iterations:
        found.append(StopReason("MaxIterations", f"{iterations_run} of {stopping.max_iterations} iterations ran"))
    if not found:
        return None
    message = found[0].message + "".join(f"; also {other.message}" for other in found[1:])
    return StopReason(found[0].reason, message)
