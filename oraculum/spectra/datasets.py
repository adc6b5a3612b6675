"""Datasets: preprocessed spectra on a common grid, stored as HDF5 shards plus a JSON index.

Storage layout (keys in the object store, see DESIGN.md)::

    datasets/<name>/index.json          grid, count, shards, source, parameters, checksums
    datasets/<name>/part-NNNNN.h5       one shard: ids, flux (float32, n x points), metadata
    datasets/<name>/part-NNNNN.json     the shard's manifest; written last, so it marks the shard done
    datasets/<name>/rejected-NNNNN.jsonl  the shard's rejected files (id, key, reason, message)
    datasets/<name>/rejected.jsonl      all rejected files, merged when the index is written

A shard is written by one process (one pod of an Indexed Job) and never modified afterwards.
The index is written once every shard is done; a dataset without an index is incomplete.

Spectra have a *global index*: their position in the concatenation of shards in order. Readers
stream shard by shard in chunks of rows, so memory stays bounded whatever the pool size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import BaseModel, Field

from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid
from oraculum.spectra.spectrum import SpectrumMeta
from oraculum.store import KeyNotFound, ObjectStore

FORMAT_VERSION = 1

_NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")

#: Metadata columns of every shard: name -> (numpy dtype, value stored when missing). Columns
#: added later (from ``redshift`` on) are absent from older shards and read as all-missing, so
#: datasets written before them stay readable.
META_COLUMNS: dict[str, tuple[Any, Any]] = {
    "ra_deg": (np.float64, np.nan),
    "dec_deg": (np.float64, np.nan),
    "obsid": (np.int64, -1),
    "snr": (np.float32, np.nan),
    "mjd": (np.float64, np.nan),
    "designation": (str, ""),
    "header_class": (str, ""),
    "subclass": (str, ""),
    "object_name": (str, ""),
    "source_key": (str, ""),
    "format": (str, ""),
    "redshift": (np.float64, np.nan),
    "objid": (str, ""),
    "masked_fraction": (np.float32, np.nan),
    "warnings": (str, ""),
}

_STRING = h5py.string_dtype("utf-8")


class DatasetError(Exception):
    """A dataset is missing, incomplete or inconsistent; the message says how to fix it."""


def check_name(name: str) -> str:
    """Dataset names are DNS-label-like so they also work as Kubernetes resource names."""
    if not _NAME_PATTERN.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def dataset_prefix(name: str) -> str:
    return f"datasets/{check_name(name)}"


def part_key(name: str, shard: int) -> str:
    return f"{dataset_prefix(name)}/part-{shard:05d}.h5"


def part_manifest_key(name: str, shard: int) -> str:
    return f"{dataset_prefix(name)}/part-{shard:05d}.json"


def part_rejected_key(name: str, shard: int) -> str:
    return f"{dataset_prefix(name)}/rejected-{shard:05d}.jsonl"


def index_key(name: str) -> str:
    return f"{dataset_prefix(name)}/index.json"


def rejected_key(name: str) -> str:
    return f"{dataset_prefix(name)}/rejected.jsonl"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """A checksum of a JSON-serialisable value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class SourceInfo(BaseModel):
    """Where the raw files of a dataset came from."""

    url: str = Field(description="Source folder or s3:// prefix.")
    patterns: list[str] = Field(description="File name patterns that selected the files.")
    files: int = Field(description="Number of files listed.")
    listing_sha256: str = Field(description="Checksum of the sorted list of (key, size).")


class ShardInfo(BaseModel):
    """One finished shard, as recorded in its manifest and in the index."""

    shard: int
    shards: int
    key: str
    count: int = Field(description="Spectra in the shard.")
    rejected: int = Field(description="Files of the shard's part of the listing that were rejected.")
    files: int = Field(description="Files in the shard's part of the listing.")
    sha256: str = Field(description="Checksum of the shard's HDF5 file.")
    bytes: int
    parameters_sha256: str
    listing_sha256: str


class DatasetIndex(BaseModel):
    """The contents of ``index.json``: everything needed to read and to reproduce a dataset."""

    format_version: int = FORMAT_VERSION
    name: str
    grid: WavelengthGrid
    parameters: PreprocessingParameters
    count: int
    rejected: int
    source: SourceInfo
    shards: list[ShardInfo]
    checksum: str = Field(description="sha256 over the shards' checksums, in order.")
    created_by: str = Field(description="oraculum version that wrote the dataset.")

    @property
    def offsets(self) -> np.ndarray:
        """Global index of each shard's first spectrum, plus the total at the end."""
        return np.concatenate([[0], np.cumsum([s.count for s in self.shards])]).astype(np.int64)


@dataclass(slots=True)
class Batch:
    """A run of consecutive spectra of a dataset (or a selection of them).

    Attributes:
        index: global indices of the rows (int64).
        ids: spectrum ids (the source key without extension), or None when not requested.
        flux: float32 array (rows x grid points), or None when not requested.
        meta: metadata columns (see :data:`META_COLUMNS`): those requested, by name.
    """

    index: np.ndarray
    ids: np.ndarray | None
    flux: np.ndarray | None
    meta: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.index.size)


class ShardBuilder:
    """Collects preprocessed spectra of one shard in memory-friendly blocks and writes the HDF5."""

    def __init__(self, grid: WavelengthGrid) -> None:
        self.grid = grid
        self._ids: list[str] = []
        self._flux: list[np.ndarray] = []
        self._meta: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, spectrum_id: str, flux: np.ndarray, meta: SpectrumMeta, source_key: str, fmt: str) -> None:
        if flux.shape != (self.grid.points,):
            raise ValueError(f"flux of {spectrum_id} has shape {flux.shape}, grid has {self.grid.points} points")
        self._ids.append(spectrum_id)
        self._flux.append(flux.astype(np.float32, copy=False))
        values = {
            "ra_deg": meta.ra_deg,
            "dec_deg": meta.dec_deg,
            "obsid": meta.obsid,
            "snr": meta.snr,
            "mjd": meta.mjd,
            "designation": meta.designation,
            "header_class": meta.header_class,
            "subclass": meta.subclass,
            "object_name": meta.object_name,
            "source_key": source_key,
            "format": fmt,
            "redshift": meta.redshift,
            "objid": meta.objid,
            "masked_fraction": meta.masked_fraction,
            "warnings": "; ".join(meta.warnings) or None,
        }
        for name, (_, missing) in META_COLUMNS.items():
            value = values[name]
            self._meta[name].append(missing if value is None else value)

    def write(self, path: str | os.PathLike[str], parameters: PreprocessingParameters) -> None:
        """Write the shard as HDF5 (deterministic bytes for the same content)."""
        n = len(self._ids)
        points = self.grid.points
        flux = np.stack(self._flux) if n else np.zeros((0, points), dtype=np.float32)
        with h5py.File(path, "w") as handle:
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["parameters"] = parameters.model_dump_json()
            handle.create_dataset("wavelength_A", data=np.asarray(self.grid.wavelengths))
            handle.create_dataset("ids", data=np.array(self._ids, dtype=object), dtype=_STRING)
            handle.create_dataset(
                "flux",
                data=flux,
                dtype=np.float32,
                chunks=(max(1, min(n, 1024)), points) if n else None,
            )
            group = handle.create_group("meta")
            for name, (dtype, _) in META_COLUMNS.items():
                if dtype is str:
                    group.create_dataset(name, data=np.array(self._meta[name], dtype=object), dtype=_STRING)
                else:
                    group.create_dataset(name, data=np.array(self._meta[name], dtype=dtype))


def _meta_columns(meta: bool | Collection[str]) -> list[str]:
    """The metadata columns ``meta`` asks for: all (True), none (False) or those named."""
    if isinstance(meta, bool):
        return list(META_COLUMNS) if meta else []
    names = [meta] if isinstance(meta, str) else list(meta)
    unknown = [name for name in names if name not in META_COLUMNS]
    if unknown:
        raise ValueError(f"unknown metadata column(s) {unknown}; the columns are {', '.join(META_COLUMNS)}")
    return names


def _read_meta(handle: h5py.File, rows: slice | np.ndarray, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    meta: dict[str, np.ndarray] = {}
    group = handle["meta"]
    count: int | None = None
    for name in META_COLUMNS if columns is None else columns:
        dtype, missing = META_COLUMNS[name]
        if name not in group:  # a shard written before the column existed
            if count is None:
                count = len(range(*rows.indices(handle["ids"].shape[0]))) if isinstance(rows, slice) else len(rows)
            meta[name] = np.full(count, missing, dtype=object if dtype is str else dtype)
            continue
        column = group[name]
        if dtype is str:
            meta[name] = column.asstr()[rows]
        else:
            meta[name] = column[rows]
    return meta


class Dataset:
    """A finished dataset in an object store, read shard by shard.

    Remote shards (S3) are copied to a local cache folder once and verified against the
    index's checksum; local shards are read in place. Safe to share between threads (the API
    serves many requests from one Dataset): one download per shard at a time, each to a
    temporary file of its own, and a shard verified once is not hashed again by this object.
    """

    def __init__(self, store: ObjectStore, index: DatasetIndex, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.store = store
        self.index = index
        self.name = index.name
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._fetch_lock = threading.Lock()
        self._shard_locks: dict[str, threading.Lock] = {}
        self._verified: dict[str, Path] = {}

    @classmethod
    def open(cls, store: ObjectStore, name: str, cache_dir: str | os.PathLike[str] | None = None) -> "Dataset":
        """The dataset ``name``; :class:`DatasetError` if it does not exist or is incomplete."""
        try:
            raw = store.get_bytes(index_key(name))
        except KeyNotFound:
            partial = any(True for _ in store.list(dataset_prefix(name) + "/"))
            if partial:
                raise DatasetError(
                    f"dataset {name!r} in {store.url} is incomplete (no index.json yet): some "
                    "shards are still running or failed; re-run `oraculum preprocess` for it"
                ) from None
            raise DatasetError(
                f"no dataset {name!r} in {store.url}; create it with `oraculum preprocess SOURCE --dataset {name}`"
            ) from None
        return cls(store, DatasetIndex.model_validate_json(raw), cache_dir)

    def __len__(self) -> int:
        return self.index.count

    @property
    def grid(self) -> WavelengthGrid:
        return self.index.grid

    def _shard_path(self, shard: ShardInfo) -> Path:
        local = self.store.local_path(shard.key)
        if local is not None:
            return local
        known = self._verified.get(shard.key)
        if known is not None and known.is_file():
            return known
        with self._fetch_lock:
            if self._cache_dir is None:
                self._cache_dir = Path(tempfile.mkdtemp(prefix="oraculum-cache-"))
            lock = self._shard_locks.setdefault(shard.key, threading.Lock())
        with lock:  # concurrent first reads of one shard: one download, the others wait for it
            path = self._cache_dir / self.name / Path(shard.key).name
            if not (path.is_file() and path.stat().st_size == shard.bytes and sha256_file(path) == shard.sha256):
                path.parent.mkdir(parents=True, exist_ok=True)
                # a temporary name of its own: another process may share the cache folder
                tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.part"
                try:
                    self.store.get_file(shard.key, tmp)
                    if sha256_file(tmp) != shard.sha256:
                        raise DatasetError(f"shard {shard.key} in {self.store.url} does not match the checksum in its index")
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
            self._verified[shard.key] = path
            return path

    def iter_batches(self, batch_size: int = 4096, flux: bool = True, *, ids: bool = True,
                     meta: bool | Collection[str] = True) -> Iterator[Batch]:
        """Every spectrum in global-index order, ``batch_size`` rows at a time.

        Only what is asked for is read: ``flux=False`` leaves out the flux, ``ids=False`` the ids
        (``Batch.ids`` is then None), ``meta=False`` every metadata column, and ``meta=("snr",)``
        reads only the columns named (``Batch.meta`` holds the columns read). Decoding the ids and the
        metadata strings costs many times reading the flux, so a pass over the flux alone should
        say ``ids=False, meta=False``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        columns = _meta_columns(meta)
        offsets = self.index.offsets
        for number, shard in enumerate(self.index.shards):
            if shard.count == 0:
                continue
            with h5py.File(self._shard_path(shard), "r") as handle:
                for start in range(0, shard.count, batch_size):
                    rows = slice(start, min(start + batch_size, shard.count))
                    yield Batch(
                        index=np.arange(rows.start, rows.stop, dtype=np.int64) + offsets[number],
                        ids=handle["ids"].asstr()[rows] if ids else None,
                        flux=handle["flux"][rows] if flux else None,
                        meta=_read_meta(handle, rows, columns),
                    )

    def take(self, indices: Sequence[int] | np.ndarray, flux: bool = True) -> Batch:
        """The spectra at the given global indices, in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.index.count):
            raise IndexError(f"indices must be in [0, {self.index.count}) for dataset {self.name!r}")
        offsets = self.index.offsets
        shard_of = np.searchsorted(offsets, indices, side="right") - 1
        ids = np.empty(indices.size, dtype=object)
        flux_out = np.empty((indices.size, self.grid.points), dtype=np.float32) if flux else None
        meta: dict[str, np.ndarray] = {}
        for number in np.unique(shard_of):
            positions = np.flatnonzero(shard_of == number)
            local = indices[positions] - offsets[number]
            order = np.argsort(local)
            sorted_local = local[order]
            with h5py.File(self._shard_path(self.index.shards[number]), "r") as handle:
                unique_local, inverse = np.unique(sorted_local, return_inverse=True)
                shard_ids = handle["ids"].asstr()[unique_local][inverse]
                ids[positions[order]] = shard_ids
                if flux_out is not None:
                    flux_out[positions[order]] = handle["flux"][unique_local][inverse]
                for name, column in _read_meta(handle, unique_local).items():
                    if name not in meta:
                        meta[name] = np.empty(indices.size, dtype=column.dtype)
                    meta[name][positions[order]] = column[inverse]
        if not meta:
            meta = {name: np.array([], dtype=object if dtype is str else dtype) for name, (dtype, _) in META_COLUMNS.items()}
        return Batch(index=indices, ids=ids.astype(str), flux=flux_out, meta=meta)

    def rejected(self) -> list[dict[str, Any]]:
        """The rejected files: one dict per file with id, key, reason and message."""
        try:
            raw = self.store.get_bytes(rejected_key(self.name))
        except KeyNotFound:
            return []
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def list_datasets(store: ObjectStore) -> list[str]:
    """Names of the finished datasets (those with an index) in a store."""
    names = []
    for info in store.list("datasets/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "index.json":
            names.append(parts[1])
    return names
