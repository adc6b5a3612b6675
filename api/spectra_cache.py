"""Fast single-spectrum reads for the API: shards kept open, their metadata columns in memory.

``Dataset.take`` opens the shard file and reads every metadata column for each call (right for
batches of rows, ~8 ms for one). A dashboard asks for one spectrum at a time, so the gateway keeps
the few most recently used shards open (an LRU) with their ids and metadata loaded once; a
spectrum is then an array lookup plus one row of flux from the open file (~0.01 ms).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from oraculum.spectra.datasets import Dataset, _read_meta

#: Shards kept open at once (each holds its ids and metadata in memory: ~100 bytes per spectrum).
OPEN_SHARDS = 16


@dataclass
class _Shard:
    handle: h5py.File
    flux: Any
    ids: np.ndarray
    meta: dict[str, np.ndarray]
    lock: threading.Lock


@dataclass
class Row:
    """One spectrum: id, metadata (one value per column, as stored) and flux (when asked)."""

    id: str
    meta: dict[str, Any]
    flux: np.ndarray | None


class ShardCache:
    def __init__(self, capacity: int = OPEN_SHARDS) -> None:
        self.capacity = capacity
        self._shards: OrderedDict[tuple[str, str, int], _Shard] = OrderedDict()
        self._lock = threading.Lock()

    def _open(self, dataset: Dataset, number: int) -> _Shard:
        key = (dataset.name, dataset.index.checksum, number)
        with self._lock:
            shard = self._shards.get(key)
            if shard is not None:
                self._shards.move_to_end(key)
                return shard
        path = dataset._shard_path(dataset.index.shards[number])  # a verified local copy for remote stores
        handle = h5py.File(path, "r")
        shard = _Shard(handle, handle["flux"], handle["ids"].asstr()[:], _read_meta(handle, slice(None)), threading.Lock())
        with self._lock:
            existing = self._shards.get(key)
            if existing is not None:  # another thread opened it meanwhile
                handle.close()
                return existing
            self._shards[key] = shard
            while len(self._shards) > self.capacity:
                _, old = self._shards.popitem(last=False)
                with old.lock:
                    old.handle.close()
        return shard

    def is_open(self, dataset: Dataset, index: int) -> bool:
        """Whether the shard holding ``index`` is open (a read is then a memory lookup)."""
        if not 0 <= index < len(dataset):
            return False
        number = int(np.searchsorted(dataset.index.offsets, index, side="right") - 1)
        return (dataset.name, dataset.index.checksum, number) in self._shards

    def row(self, dataset: Dataset, index: int, flux: bool) -> Row:
        """Spectrum ``index`` (global) of ``dataset``; IndexError when out of range."""
        if not 0 <= index < len(dataset):
            raise IndexError(index)
        offsets = dataset.index.offsets
        number = int(np.searchsorted(offsets, index, side="right") - 1)
        local = int(index - offsets[number])
        shard = self._open(dataset, number)
        values = None
        if flux:
            with shard.lock:
                values = np.asarray(shard.flux[local], dtype=np.float32)
        return Row(id=str(shard.ids[local]), meta={name: column[local] for name, column in shard.meta.items()}, flux=values)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.handle.close()
            self._shards.clear()
