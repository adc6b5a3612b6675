"""What the client's calls return: resources, datasets, spectra, batches and tables.

Plain frozen dataclasses over the API's JSON, with numpy arrays where the data is numeric, and
astropy tables (or pandas DataFrames, ``format="pandas"``) for anything with rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from astropy.table import Table

__all__ = ["CURVE_COLUMNS", "FINAL_PHASES", "BatchData", "DatasetInfo", "Format", "LabelledBatch", "Resource", "Spectrum", "as_format",
           "floats", "typed_table"]

Format = Literal["astropy", "pandas"]
#: The phases after which nothing more happens to a resource.
FINAL_PHASES = ("Succeeded", "Failed")
#: The learning curve's columns (:meth:`Client.metrics <oraculum.client.rest.Client.metrics>`): -1
#: where a count is missing (no model yet in a cold start), NaN where a number is.
CURVE_COLUMNS: dict[str, type] = {
    "iteration": int, "labels_total": int, "estimate": float, "low": float, "high": float,
    "predicted_targets": int, "estimated_targets": float, "estimated_targets_low": float,
    "estimated_targets_high": float}


def as_format(table: Table, format: Format) -> Any:
    """``table`` as asked: the astropy Table itself, or a pandas DataFrame."""
    if format == "astropy":
        return table
    if format == "pandas":
        try:
            return table.to_pandas()
        except ImportError:
            raise ImportError("format='pandas' needs pandas: pip install pandas (or use the astropy Table)") from None
    raise ValueError(f"format must be 'astropy' or 'pandas', not {format!r}")


@dataclass(frozen=True)
class Resource:
    """An experiment or preprocessing job as the API shows it (spec, status and progress only from
    a get, not from a list)."""

    kind: str
    name: str
    phase: str
    iteration: int | None = None
    message: str = ""
    created: str = ""
    suspended: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the latest progress report of each running Job (job, step, done, total, message, ...)
    progress: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        """Succeeded or Failed: nothing more will happen to it."""
        return self.phase in FINAL_PHASES

    @classmethod
    def from_api(cls, document: dict[str, Any]) -> "Resource":
        return cls(kind=document["kind"], name=document["name"], phase=document.get("phase", ""),
                   iteration=document.get("iteration"), message=document.get("message", ""),
                   created=document.get("created", ""), suspended=bool(document.get("suspended")),
                   spec=document.get("spec") or {}, status=document.get("status") or {},
                   history=list(document.get("history") or []), progress=list(document.get("progress") or []))


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: size, grid (wavelengths in Å, ``medium`` air or vacuum), source, and the whole index."""

    name: str
    count: int
    rejected: int
    shards: int
    grid: dict[str, Any]
    source: str
    index: dict[str, Any] = field(default_factory=dict)

    @property
    def wavelength(self) -> np.ndarray:
        """The grid's wavelengths in Å (in ``grid['medium']``), as preprocessing made them."""
        from oraculum.spectra.preprocessing import WavelengthGrid

        return np.asarray(WavelengthGrid.model_validate(self.grid).wavelengths, dtype=np.float64)


@dataclass(frozen=True)
class Spectrum:
    """One spectrum: wavelengths in Å (``medium`` air or vacuum) and flux, preprocessed on the
    dataset's grid or raw from the archive file."""

    dataset: str
    index: int
    id: str
    wavelength: np.ndarray
    flux: np.ndarray
    medium: str
    kind: Literal["grid", "raw"]
    normalisation: str | None = None


@dataclass(frozen=True)
class BatchData:
    """The batch of one iteration as arrays, one row per item (oracle items, then estimation
    items, in the API's order). Hidden predictions (blind estimation items not yet labelled) are
    NaN in ``probabilities``/``scores`` and '' in ``predicted``; unlabelled items are '' in
    ``labels``. ``flux`` is float32 (rows x grid points) on the wavelength grid ``wavelength``
    (Å), or None when not fetched."""

    experiment: str
    iteration: int
    dataset: str
    strategy: str | None
    classes: list[str]
    targets: list[str]
    indices: np.ndarray
    ids: np.ndarray
    sets: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    wavelength: np.ndarray | None
    flux: np.ndarray | None
    progress: dict[str, Any]
    items: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.indices.size)

    def table(self) -> Table:
        """One row per item: index, id, set, predicted, score, one probability column per class,
        label (and the flux as a 2-D column when fetched)."""
        table = Table()
        table["index"], table["id"], table["set"] = self.indices, self.ids, self.sets
        table["predicted"], table["score"] = self.predicted, self.scores
        for number, name in enumerate(self.classes):
            table[f"p_{name}"] = self.probabilities[:, number]
        table["label"] = self.labels
        if self.flux is not None:
            table["flux"] = self.flux
        table.meta.update(experiment=self.experiment, iteration=self.iteration, dataset=self.dataset)
        return table


@dataclass(frozen=True)
class LabelledBatch:
    """What :meth:`Client.label_batch <oraculum.client.rest.Client.label_batch>` did to one batch:
    how many labels of each class it wrote, how many items were labelled before (kept as they
    were), whether it submitted the batch, and whether it went through the whole batch
    (``finished`` is False when ``stop()`` ended it early: nothing was submitted then)."""

    experiment: str
    iteration: int
    written: dict[str, int]
    kept: int
    submitted: bool
    finished: bool = True

    @property
    def count(self) -> int:
        """Labels written by this call."""
        return sum(self.written.values())


def floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def typed_table(rows: list[dict[str, Any]], columns: dict[str, type]) -> Table:
    """A table with the given columns and types (also when empty); missing numbers are NaN or
    -1 (integers), missing text ''."""
    table = Table()
    for name, kind in columns.items():
        values = [row.get(name) for row in rows]
        if kind is float:
            table[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif kind is int:
            table[name] = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        elif kind is bool:
            table[name] = np.array([bool(v) for v in values], dtype=bool)
        else:
            table[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return table
