"""Columnar score files: one row per pool spectrum, written as Parquet while scoring streams.

Columns (in this order):

* ``index`` (int64): the spectrum's global index in the dataset;
* ``id`` (string, optional): the spectrum id, if requested and the batches carry ids;
* ``predicted`` (int32): index of the most probable class (into the file's class list);
* ``prob_<class>`` (float32): one softmax probability column per class, in output order;
* uncertainty / extra columns given by the caller, named as given (e.g. ``entropy``, ``bald``).

The class list is stored in the file's key-value metadata (``oraculum.classes``, JSON), so a
score file is self-describing. Rows are buffered to ``row_group_size`` and written as one Parquet
row group at a time: memory is bounded by the row group, never by the pool. A file is written
to a temporary name and renamed when complete, so a crashed Job never leaves a truncated file
that looks finished.

Only pyarrow and numpy are needed here (no TensorFlow): the dashboard, API and acquisition code
read score files without loading the network.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pragma: no cover - typing only
    from oraculum.learning.scoring import ScoredBatch

FORMAT_VERSION = 1
CLASSES_KEY = b"oraculum.classes"
VERSION_KEY = b"oraculum.scores_format"
#: 64 Ki rows x (index, predicted, a few probability and uncertainty columns) is ~2 MB per group.
DEFAULT_ROW_GROUP = 65_536

_RESERVED = {"index", "id", "predicted"}
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def prob_column(class_name: str) -> str:
    """Name of the probability column of a class."""
    return f"prob_{class_name}"


class ScoreWriter:
    """Append scored batches to a Parquet score file; use as a context manager.

    Args:
        path: destination file (conventionally ``scores.parquet``).
        classes: class names in the model's output order.
        include_ids: add the ``id`` column (the batches must carry ids).
        row_group_size: rows per Parquet row group (and the write buffer).

    Extra columns are passed per batch to :meth:`write`; their names and dtypes are fixed by the
    first batch (numeric numpy dtypes), and every later batch must supply the same names.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        classes: Sequence[str],
        *,
        include_ids: bool = False,
        row_group_size: int = DEFAULT_ROW_GROUP,
    ) -> None:
        self.classes = [str(c) for c in classes]
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError(f"class names must be unique and non-empty, got {self.classes}")
        for name in self.classes:
            if not _NAME.match(name):
                raise ValueError(f"class name {name!r} cannot be a column name: use letters, digits, _ . + -")
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be positive, got {row_group_size}")
        self.path = Path(path)
        self.include_ids = include_ids
        self.row_group_size = row_group_size
        self.rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._extra: list[str] | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def __enter__(self) -> "ScoreWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, scored: "ScoredBatch", columns: Mapping[str, np.ndarray] | None = None) -> None:
        """Append one scored batch, with the caller's extra (uncertainty) columns for its rows."""
        columns = dict(columns or {})
        n = len(scored)
        if scored.probs.shape != (n, len(self.classes)):
            raise ValueError(f"probs have shape {scored.probs.shape}, expected ({n}, {len(self.classes)})")
        if self._extra is None:
            clash = sorted(set(columns) & (_RESERVED | {prob_column(c) for c in self.classes}))
            if clash:
                raise ValueError(f"extra column names {clash} clash with the standard columns")
            self._extra = list(columns)
        elif sorted(columns) != sorted(self._extra):
            raise ValueError(f"extra columns {sorted(columns)} differ from the first batch's {sorted(self._extra)}")
        data: dict[str, Any] = {"index": pa.array(np.asarray(scored.index, dtype=np.int64))}
        if self.include_ids:
            if scored.ids is None:
                raise ValueError("include_ids=True but the batch carries no ids")
            data["id"] = pa.array(np.asarray(scored.ids, dtype=str).tolist(), type=pa.string())
        data["predicted"] = pa.array(np.asarray(scored.predicted, dtype=np.int32))
        probs = np.asarray(scored.probs, dtype=np.float32)
        for c, name in enumerate(self.classes):
            data[prob_column(name)] = pa.array(np.ascontiguousarray(probs[:, c]))
        for name in self._extra:
            values = np.asarray(columns[name])
            if values.shape != (n,):
                raise ValueError(f"extra column {name!r} has shape {values.shape}, expected ({n},)")
            data[name] = pa.array(values)
        table = pa.table(data)
        if self._schema is None:
            metadata = {CLASSES_KEY: json.dumps(self.classes).encode(), VERSION_KEY: str(FORMAT_VERSION).encode()}
            self._schema = table.schema.with_metadata(metadata)
        table = table.cast(self._schema)
        self._buffer.append(table)
        self._buffered += n
        self.rows += n
        if self._buffered >= self.row_group_size:
            self._flush()

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            assert self._schema is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        return self._writer

    def _flush(self) -> None:
        if not self._buffered:
            return
        table = pa.concat_tables(self._buffer).combine_chunks()
        self._buffer, self._buffered = [], 0
        self._open().write_table(table, row_group_size=self.row_group_size)

    def close(self) -> Path:
        """Flush, finish the file and move it into place. An empty stream gives an empty file."""
        if self._schema is None:  # nothing written: a valid file with the standard columns only
            fields = [pa.field("index", pa.int64())]
            if self.include_ids:
                fields.append(pa.field("id", pa.string()))
            fields.append(pa.field("predicted", pa.int32()))
            fields += [pa.field(prob_column(c), pa.float32()) for c in self.classes]
            metadata = {CLASSES_KEY: json.dumps(self.classes).encode(), VERSION_KEY: str(FORMAT_VERSION).encode()}
            self._schema = pa.schema(fields, metadata=metadata)
        self._flush()
        self._open().close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard a partly written file."""
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)


def write_scores(
    batches: Iterable["ScoredBatch"],
    path: str | os.PathLike[str],
    classes: Sequence[str],
    uncertainty: Mapping[str, Callable[["ScoredBatch"], np.ndarray]] | None = None,
    *,
    include_ids: bool = False,
    row_group_size: int = DEFAULT_ROW_GROUP,
) -> int:
    """Stream scored batches into a Parquet score file; returns the number of rows written.

    ``uncertainty`` maps column names to functions of a :class:`ScoredBatch` returning one value
    per row (e.g. ``{"entropy": lambda s: entropy(s.probs)}``); they are evaluated batch by batch,
    which is how MC-dropout measures are stored without ever keeping ``mc_probs`` for the pool.
    """
    uncertainty = dict(uncertainty or {})
    with ScoreWriter(path, classes, include_ids=include_ids, row_group_size=row_group_size) as writer:
        for scored in batches:
            writer.write(scored, {name: fn(scored) for name, fn in uncertainty.items()})
    return writer.rows


def score_classes(path: str | os.PathLike[str]) -> list[str]:
    """The class names of a score file, in output order."""
    metadata = pq.read_schema(path).metadata or {}
    if CLASSES_KEY not in metadata:
        raise ValueError(f"{path} is not an oraculum score file (no {CLASSES_KEY.decode()} metadata)")
    return list(json.loads(metadata[CLASSES_KEY]))


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=str)
    return column.to_numpy()


def read_scores(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a score file as numpy arrays (all columns if ``columns`` is None).

    A few columns of a 4-million-row pool are tens of MB; use :func:`iter_scores` to stream.
    """
    table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    return {name: _to_numpy(table.column(name)) for name in table.column_names}


def iter_scores(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None, batch_size: int = DEFAULT_ROW_GROUP
) -> Iterator[dict[str, np.ndarray]]:
    """Stream a score file in record batches of up to ``batch_size`` rows."""
    handle = pq.ParquetFile(path)
    for record_batch in handle.iter_batches(batch_size=batch_size, columns=list(columns) if columns is not None else None):
        table = pa.Table.from_batches([record_batch])
        yield {name: _to_numpy(table.column(name)) for name in table.column_names}
