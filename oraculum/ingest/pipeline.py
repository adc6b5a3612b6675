"""Ingestion: raw archive files in a folder or bucket -> a sharded, gridded dataset.

The unit of work is one *shard*: a contiguous slice of the sorted file listing. ``oraculum
preprocess --shard i/n`` processes shard ``i`` of ``n`` (what one pod of a Kubernetes Indexed Job
runs); without ``--shard`` all shards run here, in parallel worker processes. Every file ends up
either in the dataset or in ``rejected.jsonl`` with its reason; a bad file never stops the run.

Idempotence: a shard whose manifest exists with the same parameters and the same listing is
skipped, so a re-run (a retried pod, a restarted laptop) only does the missing work. The index
is written by whichever process finishes the last shard (and by any re-run), so an Indexed Job
needs no extra step.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from oraculum import __version__
from oraculum.spectra.datasets import (
    DatasetError,
    DatasetIndex,
    ShardBuilder,
    ShardInfo,
    SourceInfo,
    check_name,
    index_key,
    part_key,
    part_manifest_key,
    part_rejected_key,
    rejected_key,
    sha256_file,
)
from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
from oraculum.spectra.readers import read_spectrum
from oraculum.settings import Settings
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected
from oraculum.store import KeyNotFound, LocalStore, ObjectInfo, ObjectStore, StoreError, open_store
from oraculum.spectra.archive import DEFAULT_PATTERNS, Source, listing_checksum, shard_bounds, spectrum_id
from oraculum.ingest.sources import open_source

#: How many files are read ahead of the one being processed (hides object-store latency).
READ_AHEAD = 16


def parameters_checksum(params: PreprocessingParameters) -> str:
    return hashlib.sha256(params.model_dump_json().encode()).hexdigest()


@dataclass
class ShardResult:
    """What happened to one shard."""

    info: ShardInfo
    skipped: bool
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)


def _read_ahead(source: Source, keys: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
    """The bytes of each file in order, fetched ``READ_AHEAD`` files ahead on a thread pool."""
    def fetch(key: str) -> bytes | Exception:
        try:
            return source.store.get_bytes(key)
        except Exception as error:  # reported as a rejection, never a crash
            return error

    with ThreadPoolExecutor(max_workers=min(READ_AHEAD, 8)) as pool:
        pending = []
        iterator = iter(keys)
        for key in iterator:
            pending.append((key, pool.submit(fetch, key)))
            if len(pending) >= READ_AHEAD:
                break
        while pending:
            key, future = pending.pop(0)
            nxt = next(iterator, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fetch, nxt)))
            yield key, future.result()


def _existing_shard(store: ObjectStore, dataset: str, shard: int) -> ShardInfo | None:
    try:
        return ShardInfo.model_validate_json(store.get_bytes(part_manifest_key(dataset, shard)))
    except KeyNotFound:
        return None


def process_shard(
    source: Source,
    files: list[ObjectInfo],
    store: ObjectStore,
    dataset: str,
    params: PreprocessingParameters,
    shard: int,
    shards: int,
    progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Preprocess shard ``shard`` of ``shards`` of the listing ``files`` into ``store``."""
    check_name(dataset)
    started = time.perf_counter()
    listing_sha = listing_checksum(files)
    params_sha = parameters_checksum(params)
    start, stop = shard_bounds(len(files), shard, shards)
    existing = _existing_shard(store, dataset, shard)
    if existing is not None:
        if existing.parameters_sha256 != params_sha or existing.shards != shards:
            raise DatasetError(
                f"dataset {dataset!r} already has shard {shard} made with different parameters or "
                f"shard count; choose a new --dataset name or delete datasets/{dataset}/ first"
            )
        if existing.listing_sha256 == listing_sha:
            if progress:
                progress(stop - start)
            return ShardResult(existing, skipped=True, seconds=time.perf_counter() - started)
        raise DatasetError(
            f"the files in {source.url} changed since shard {shard} of dataset {dataset!r} was made; "
            f"choose a new --dataset name or delete datasets/{dataset}/ first"
        )

    builder = ShardBuilder(params.grid)
    rejected: list[dict[str, str]] = []
    reasons: dict[str, int] = {}
    done_since_report = 0
    for key, data in _read_ahead(source, [info.key for info in files[start:stop]]):
        sid = spectrum_id(key)
        try:
            if isinstance(data, SpectrumRejected):  # a fetching source knows why a file is missing
                raise data
            if isinstance(data, Exception):
                raise SpectrumRejected(RejectReason.UNREADABLE, f"cannot read from {source.url}: {data}")
            spectrum = read_spectrum(data, key, grid=params.grid)
            flux = preprocess(spectrum, params)
            builder.add(sid, flux, spectrum.meta, key, spectrum.format)
        except SpectrumRejected as rejection:
            rejected.append({"id": sid, "key": key, "reason": rejection.reason.value, "message": rejection.message})
            reasons[rejection.reason.value] = reasons.get(rejection.reason.value, 0) + 1
        done_since_report += 1
        if progress and done_since_report >= 64:
            progress(done_since_report)
            done_since_report = 0
    if progress and done_since_report:
        progress(done_since_report)

    # The HDF5 shard first, its rejected list second, the manifest last: the manifest marks the
    # shard done, so a crash in between leaves the shard to be redone, never half-recorded.
    with tempfile.TemporaryDirectory(prefix="oraculum-shard-") as tmp:
        path = Path(tmp) / "part.h5"
        builder.write(path, params)
        checksum = sha256_file(path)
        size = path.stat().st_size
        store.put_file(part_key(dataset, shard), path)
    store.put_bytes(
        part_rejected_key(dataset, shard),
        "".join(json.dumps(line, sort_keys=True) + "\n" for line in rejected).encode(),
    )
    info = ShardInfo(
        shard=shard,
        shards=shards,
        key=part_key(dataset, shard),
        count=len(builder),
        rejected=len(rejected),
        files=stop - start,
        sha256=checksum,
        bytes=size,
        parameters_sha256=params_sha,
        listing_sha256=listing_sha,
    )
    store.put_bytes(part_manifest_key(dataset, shard), info.model_dump_json(indent=1).encode())
    return ShardResult(info, skipped=False, seconds=time.perf_counter() - started, reasons=reasons)


def finalize(
    store: ObjectStore,
    dataset: str,
    shards: int,
    params: PreprocessingParameters,
    source: Source,
    files: list[ObjectInfo],
) -> DatasetIndex | None:
    """Write ``index.json`` and ``rejected.jsonl`` when all shards are done; else return None."""
    infos = [_existing_shard(store, dataset, shard) for shard in range(shards)]
    if any(info is None for info in infos):
        return None
    infos_done = [info for info in infos if info is not None]
    listing_sha = listing_checksum(files)
    stale = [info.shard for info in infos_done if info.listing_sha256 != listing_sha]
    if stale:
        raise DatasetError(
            f"shards {stale} of dataset {dataset!r} were made from a different listing of {source.url}; "
            f"the source changed during preprocessing: delete datasets/{dataset}/ and run again"
        )
    lines: list[bytes] = []
    for shard in range(shards):
        lines.append(store.get_bytes(part_rejected_key(dataset, shard)))
    store.put_bytes(rejected_key(dataset), b"".join(lines))
    checksum = hashlib.sha256("".join(info.sha256 for info in infos_done).encode()).hexdigest()
    index = DatasetIndex(
        name=dataset,
        grid=params.grid,
        parameters=params,
        count=sum(info.count for info in infos_done),
        rejected=sum(info.rejected for info in infos_done),
        source=SourceInfo(
            url=source.url, patterns=list(source.patterns), files=len(files), listing_sha256=listing_sha
        ),
        shards=infos_done,
        checksum=checksum,
        created_by=f"oraculum {__version__}",
    )
    store.put_bytes(index_key(dataset), index.model_dump_json(indent=1).encode())
    return index


def default_shards(file_count: int, files_per_shard: int = 20_000) -> int:
    """Enough shards that one holds at most ``files_per_shard`` files (about 11 MB at 140 points)."""
    return max(1, -(-file_count // files_per_shard))


_progress_counter = None  # a shared multiprocessing.Value, set in each worker process


def _init_worker(counter) -> None:  # type: ignore[no-untyped-def]
    global _progress_counter
    _progress_counter = counter


def _worker(args: tuple) -> ShardResult:  # top level: must be picklable for the process pool
    source_spec, patterns, store_url, settings, dataset, params, shard, shards, files = args
    source = open_source(source_spec, patterns, settings)
    store = open_store(store_url, settings)
    counter = _progress_counter

    def report(n: int) -> None:
        if counter is not None:
            with counter.get_lock():
                counter.value += n

    return process_shard(source, files, store, dataset, params, shard, shards, report)


@dataclass
class PreprocessReport:
    """The outcome of ``oraculum preprocess``: per-shard results and the index, if complete."""

    dataset: str
    files: int
    shards: list[ShardResult]
    index: DatasetIndex | None
    seconds: float

    @property
    def reasons(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for result in self.shards:
            for reason, count in result.reasons.items():
                total[reason] = total.get(reason, 0) + count
        return total


def run_preprocess(
    source_spec: str,
    dataset: str,
    params: PreprocessingParameters,
    settings: Settings,
    *,
    store_url: str | None = None,
    patterns: tuple[str, ...] | None = None,
    shard: int | None = None,
    shards: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    fetch_progress: Callable[[int, int], None] | None = None,
) -> PreprocessReport:
    """Preprocess ``source_spec`` into dataset ``dataset`` of the store ``store_url``.

    With ``shard`` given, only that shard runs (a pod of an Indexed Job); otherwise every shard
    runs, on ``workers`` processes. ``progress(done, total)`` is called as files are processed.
    A source that fetches (``votable:``, ``urls:``, ``index:``) first downloads the files of the
    wanted shards, calling ``fetch_progress(done, total)``.
    """
    import multiprocessing

    check_name(dataset)
    started = time.perf_counter()
    source = open_source(source_spec, patterns, settings)
    store = open_store(store_url, settings)
    files = source.list()
    if shards is None:
        shards = default_shards(len(files))
    wanted = [shard] if shard is not None else list(range(shards))
    bounds = [shard_bounds(len(files), n, shards) for n in wanted]  # validates early, with a clear message
    source.prepare(bounds, fetch_progress)
    total = sum(stop - start for start, stop in bounds)
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    results: list[ShardResult] = []
    if workers <= 1 or len(wanted) == 1:
        for number in wanted:
            results.append(process_shard(source, files, store, dataset, params, number, shards, report))
    else:
        context = multiprocessing.get_context("spawn")
        counter = context.Value("q", 0)
        jobs = [
            (source_spec, source.patterns, store.url, settings, dataset, params, number, shards, files)
            for number in wanted
        ]
        with context.Pool(
            processes=min(workers, len(wanted)), initializer=_init_worker, initargs=(counter,)
        ) as pool:
            pending = pool.map_async(_worker, jobs, chunksize=1)
            while not pending.ready():
                pending.wait(0.2)
                if progress:
                    progress(counter.value, total)
            results = pending.get()
            if progress:
                progress(counter.value, total)
    index = finalize(store, dataset, shards, params, source, files)
    return PreprocessReport(dataset, len(files), results, index, time.perf_counter() - started)


def environment_worker_count() -> int:
    """Worker processes to use by default: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
