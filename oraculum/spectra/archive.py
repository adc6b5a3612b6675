"""An archive of spectrum files: which files a source holds, their order, and their shards.

The vocabulary shared by ingestion (:mod:`oraculum.ingest`) and the Virtual Observatory sources
(:mod:`oraculum.vo`): a :class:`Source` lists the files below a store prefix that match its
patterns, in key order; that order defines the shards (:func:`shard_bounds`), and a spectrum's
id is its key without the file extension (:func:`spectrum_id`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from oraculum.store import ObjectInfo, ObjectStore

#: FITS in its usual spellings, plain or gzip-compressed: what a folder source and the VO sources
#: pick by default.
FITS_PATTERNS: tuple[str, ...] = ("*.fits", "*.fit", "*.fts", "*.fits.gz", "*.fit.gz", "*.fts.gz")

#: Files a source picks when it is given no patterns.
DEFAULT_PATTERNS: tuple[str, ...] = FITS_PATTERNS


@dataclass(frozen=True)
class Source:
    """Raw files to ingest: the files below ``prefix`` of a store whose names match ``patterns``."""

    store: ObjectStore
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    url: str = ""

    def list(self) -> list[ObjectInfo]:
        """The matching files, sorted by key (the order that defines the shards)."""
        files = [
            info
            for info in self.store.list("")
            if any(fnmatch.fnmatch(posixpath.basename(info.key), pattern) for pattern in self.patterns)
        ]
        return sorted(files, key=lambda info: info.key)

    def prepare(self, ranges: list[tuple[int, int]], progress: Callable[[int, int], None] | None = None) -> object:
        """Make the files of these slices of :meth:`list` readable before they are processed:
        nothing to do for a store; a fetching source (:mod:`oraculum.vo`) downloads them."""
        return None


def listing_checksum(files: list[ObjectInfo]) -> str:
    """Identifies a listing: shards of one dataset must all come from the same listing."""
    digest = hashlib.sha256()
    for info in files:
        digest.update(f"{info.key}\0{info.size}\n".encode())
    return digest.hexdigest()


def shard_bounds(total: int, shard: int, shards: int) -> tuple[int, int]:
    """[start, stop) of shard ``shard`` of ``shards`` over ``total`` files: contiguous slices
    whose sizes differ by at most one (the first ``total % shards`` get one more)."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards} is not valid: need 0 <= shard < shards")
    base, extra = divmod(total, shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def spectrum_id(key: str) -> str:
    """A spectrum's id: its key in the source without the FITS/gzip extension."""
    for suffix in (".gz", ".fits", ".fit", ".fts", ".csv", ".txt"):
        if key.lower().endswith(suffix):
            key = key[: -len(suffix)]
    return key
