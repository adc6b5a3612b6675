"""The demo's closing table: one line per evaluated iteration, from the learning curve the API
serves (:meth:`oraculum.client.Client.metrics`) and the experiment's history (durations), with
the true precision and recall beside the estimate when the pool's labels are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table

__all__ = ["IterationRow", "performance_rows", "performance_table"]


@dataclass(frozen=True)
class IterationRow:
    """One line of the performance table."""

    iteration: int
    labels: int | None
    estimate: float | None
    low: float | None
    high: float | None
    predicted: int | None
    estimated: float | None
    estimated_low: float | None
    estimated_high: float | None
    seconds: float | None
    true_precision: float | None = None
    true_recall: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float, np.number)) and math.isfinite(float(value)) else None


def _count(value: Any) -> int | None:
    """A count of the curve table (-1 where the API had none, e.g. no model in a cold start)."""
    return None if value is None or int(value) < 0 else int(value)


def performance_rows(curve: Table, history: list[dict[str, Any]],
                     truth: dict[int, tuple[float, float]] | None = None) -> list[IterationRow]:
    """Rows from the learning curve (:meth:`oraculum.client.Client.metrics`: one row per evaluated
    iteration) and the resource's ``status.history`` (durations), plus, when known, the true
    precision and recall of each iteration's candidates."""
    seconds = {int(h["iteration"]): sum(float(v) for v in (h.get("durations") or {}).values())
               for h in history if "iteration" in h}
    rows = []
    for point in sorted(curve, key=lambda p: int(p["iteration"])):
        k = int(point["iteration"])
        true = (truth or {}).get(k)
        rows.append(IterationRow(
            iteration=k, labels=_count(point["labels_total"]), estimate=_number(point["estimate"]),
            low=_number(point["low"]), high=_number(point["high"]), predicted=_count(point["predicted_targets"]),
            estimated=_number(point["estimated_targets"]), estimated_low=_number(point["estimated_targets_low"]),
            estimated_high=_number(point["estimated_targets_high"]), seconds=seconds.get(k) or None,
            true_precision=true[0] if true else None, true_recall=true[1] if true else None,
        ))
    return rows


def performance_table(rows: list[IterationRow], confidence: float, with_truth: bool) -> str:
    """The table the demo prints at the end: one line per evaluated iteration."""
    level = f"{confidence:.0%}"
    header = ["iteration", "labels", f"precision [{level} interval]", "predicted targets",
              f"true targets, estimated [{level}]", "iteration s"]
    if with_truth:
        header += ["true precision*", "true recall*"]
    lines = []
    for row in rows:
        precision = "n/a (no model yet)" if row.predicted is None and row.estimate is None else (
            "n/a" if row.estimate is None else f"{row.estimate:.3f} [{row.low:.3f}, {row.high:.3f}]")
        estimated = "n/a" if row.estimated is None else (
            f"{row.estimated:.0f} [{row.estimated_low:.0f}, {row.estimated_high:.0f}]"
            if row.estimated_low is not None and row.estimated_high is not None else f"{row.estimated:.0f}")
        cells = [str(row.iteration), "n/a" if row.labels is None else str(row.labels), precision,
                 "n/a" if row.predicted is None else str(row.predicted), estimated,
                 "n/a" if row.seconds is None else f"{row.seconds:.1f}"]
        if with_truth:
            cells += ["n/a" if row.true_precision is None else f"{row.true_precision:.3f}",
                      "n/a" if row.true_recall is None else f"{row.true_recall:.3f}"]
        lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)
