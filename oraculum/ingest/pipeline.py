"""Ingestion: raw archive files in a folder or bucket -> a sharded, gridded dataset.

The unit of work is one *shard*: a contiguous slice of the sorted file listing. ``oraculum
preprocess --shard i/n`` processes shard ``i`` of ``n`` (what one pod of a Kubernetes Indexed Job
runs); without ``--shard`` all shards run here. Every file ends up either in the dataset or in
``rejected.jsonl`` with its reason; a bad file never stops the run.

Parallelism on one machine: one pool of workers per run, started once (forked from this process,
or from a fork server that has imported the heavy modules once; see :func:`pool_start_method`),
fed chunks of a few hundred files, so no worker re-imports astropy and h5py per task and one
shard keeps every core busy. The workers only read and preprocess; this process writes each
shard from their results in listing order, so the dataset's bytes do not depend on the workers.

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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

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
from oraculum.spectra.spectrum import RejectReason, SpectrumMeta, SpectrumRejected
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


def _finished_shard(source: Source, store: ObjectStore, dataset: str, shard: int, shards: int, params_sha: str,
                    listing_sha: str) -> ShardInfo | None:
    """The manifest of shard ``shard`` when it is done with the same parameters and listing; None
    when it is still to do; :class:`DatasetError` when it was made otherwise."""
    existing = _existing_shard(store, dataset, shard)
    if existing is None:
        return None
    if existing.parameters_sha256 != params_sha or existing.shards != shards:
        raise DatasetError(
            f"dataset {dataset!r} already has shard {shard} made with different parameters or "
            f"shard count; choose a new --dataset name or delete datasets/{dataset}/ first"
        )
    if existing.listing_sha256 == listing_sha:
        return existing
    raise DatasetError(
        f"the files in {source.url} changed since shard {shard} of dataset {dataset!r} was made; "
        f"choose a new --dataset name or delete datasets/{dataset}/ first"
    )


@dataclass
class _Processed:
    """What preprocessing a run of consecutive files gave: the rows to store in order (flux as one
    float32 array), the rejected files, and who did the work (for :class:`PoolStats`)."""

    rows: list[tuple[str, SpectrumMeta, str, str]]  # (id, metadata, key, format)
    flux: np.ndarray
    rejected: list[dict[str, str]]
    pid: int = 0
    cpu_seconds: float = 0.0  # the worker process's CPU time so far
    preloaded: bool = False  # the worker found this module imported when it started


def _preprocess_files(
    source: Source, keys: list[str], params: PreprocessingParameters, progress: Callable[[int], None] | None = None
) -> _Processed:
    """Read and preprocess ``keys`` in order; a file that cannot be used becomes a rejection."""
    rows: list[tuple[str, SpectrumMeta, str, str]] = []
    fluxes: list[np.ndarray] = []
    rejected: list[dict[str, str]] = []
    done_since_report = 0
    for key, data in _read_ahead(source, keys):
        sid = spectrum_id(key)
        try:
            if isinstance(data, SpectrumRejected):  # a fetching source knows why a file is missing
                raise data
            if isinstance(data, Exception):
                raise SpectrumRejected(RejectReason.UNREADABLE, f"cannot read from {source.url}: {data}")
            spectrum = read_spectrum(data, key, grid=params.grid)
            fluxes.append(preprocess(spectrum, params))
            rows.append((sid, spectrum.meta, key, spectrum.format))
        except SpectrumRejected as rejection:
            rejected.append({"id": sid, "key": key, "reason": rejection.reason.value, "message": rejection.message})
        done_since_report += 1
        if progress and done_since_report >= 64:
            progress(done_since_report)
            done_since_report = 0
    if progress and done_since_report:
        progress(done_since_report)
    flux = np.zeros((0, params.grid.points), np.float32) if not fluxes else np.stack(fluxes).astype(np.float32)
    return _Processed(rows, flux, rejected)


def _write_shard(
    store: ObjectStore, dataset: str, params: PreprocessingParameters, shard: int, shards: int,
    bounds: tuple[int, int], parts: list[_Processed], checksums: tuple[str, str], started: float,
) -> ShardResult:
    """Write shard ``shard`` from its processed ``parts`` (in listing order)."""
    params_sha, listing_sha = checksums
    builder = ShardBuilder(params.grid)
    rejected: list[dict[str, str]] = []
    for part in parts:
        for (sid, meta, key, fmt), flux in zip(part.rows, part.flux, strict=True):
            builder.add(sid, flux, meta, key, fmt)
        rejected.extend(part.rejected)
    reasons: dict[str, int] = {}
    for line in rejected:
        reasons[line["reason"]] = reasons.get(line["reason"], 0) + 1

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
        files=bounds[1] - bounds[0],
        sha256=checksum,
        bytes=size,
        parameters_sha256=params_sha,
        listing_sha256=listing_sha,
    )
    store.put_bytes(part_manifest_key(dataset, shard), info.model_dump_json(indent=1).encode())
    return ShardResult(info, skipped=False, seconds=time.perf_counter() - started, reasons=reasons)


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
    """Preprocess shard ``shard`` of ``shards`` of the listing ``files`` into ``store``, here."""
    check_name(dataset)
    started = time.perf_counter()
    checksums = parameters_checksum(params), listing_checksum(files)
    start, stop = shard_bounds(len(files), shard, shards)
    existing = _finished_shard(source, store, dataset, shard, shards, *checksums)
    if existing is not None:
        if progress:
            progress(stop - start)
        return ShardResult(existing, skipped=True, seconds=time.perf_counter() - started)
    part = _preprocess_files(source, [info.key for info in files[start:stop]], params, progress)
    return _write_shard(store, dataset, params, shard, shards, (start, stop), [part], checksums, started)


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


#: Files per task of the worker pool: enough that a task's overhead (pickling, a read-ahead
#: thread pool) is noise, few enough that every worker stays busy to the end and progress moves.
MIN_CHUNK = 32
MAX_CHUNK = 1024

#: How the worker pool may start its workers (:func:`pool_start_method` resolves ``auto``).
START_METHODS: tuple[str, ...] = ("auto", "fork", "forkserver", "spawn", "thread")

#: Modules a fork server imports once before it forks the workers (astropy, h5py, numpy, the
#: readers, preprocessing): a worker then starts with them in memory instead of importing them.
PRELOAD = ["oraculum.ingest.pipeline"]

#: The process that imported this module: a worker forked from a process that had imported it
#: (the caller, or a fork server with it preloaded) sees another pid here than its own.
_IMPORTED_BY = os.getpid()

_worker_state: tuple[Source, PreprocessingParameters] | None = None  # set in each worker process


def _init_worker(source_spec: str, patterns: tuple[str, ...], settings: Settings,
                 params: PreprocessingParameters) -> None:
    global _worker_state
    _worker_state = (open_source(source_spec, patterns, settings), params)


def _worker_chunk(keys: list[str]) -> _Processed:  # top level: the pool pickles it by name
    assert _worker_state is not None, "_init_worker did not run"
    source, params = _worker_state
    part = _preprocess_files(source, keys, params)
    part.pid, part.cpu_seconds, part.preloaded = os.getpid(), time.process_time(), _IMPORTED_BY != os.getpid()
    return part


def pool_start_method(requested: str = "auto") -> str:
    """The start method ``auto`` means here: ``fork`` when this process runs a single thread (the
    workers then inherit every imported module, at no cost, and no lock another thread could hold),
    else ``forkserver`` with :data:`PRELOAD` (one clean process imports them once, then forks the
    workers), else ``spawn``."""
    import multiprocessing
    import threading

    if requested not in START_METHODS:
        raise ValueError(f"unknown start method {requested!r}; use one of {', '.join(START_METHODS)}")
    if requested != "auto":
        return requested
    available = multiprocessing.get_all_start_methods()
    if "fork" in available and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in available else "spawn"


@dataclass
class PoolStats:
    """How the worker pool of a run went: its start method, the worker processes that did work,
    whether each found the heavy modules already imported, and the CPU time they used."""

    method: str
    workers: int
    processes: int
    chunks: int
    preloaded: bool
    worker_cpu_seconds: float


def _chunk_bounds(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, stop)) for lo in range(start, stop, size)]


def _run_pool(
    source_spec: str, source: Source, files: list[ObjectInfo], store: ObjectStore, dataset: str,
    params: PreprocessingParameters, settings: Settings, wanted: list[int], shards: int, workers: int,
    method: str, report: Callable[[int], None],
) -> tuple[list[ShardResult], PoolStats]:
    """Every shard of ``wanted`` on one pool of ``workers``, in chunks of files; this process
    writes each shard as soon as its chunks are back (in order, so the bytes are those of a run
    with one worker)."""
    import multiprocessing
    from multiprocessing.pool import ThreadPool

    started = time.perf_counter()
    checksums = parameters_checksum(params), listing_checksum(files)
    results: dict[int, ShardResult] = {}
    todo: dict[int, tuple[int, int]] = {}
    for number in wanted:
        bounds = shard_bounds(len(files), number, shards)
        existing = _finished_shard(source, store, dataset, number, shards, *checksums)
        if existing is not None:
            report(bounds[1] - bounds[0])
            results[number] = ShardResult(existing, skipped=True, seconds=0.0)
        else:
            todo[number] = bounds
    files_todo = sum(stop - start for start, stop in todo.values())
    size = max(MIN_CHUNK, min(MAX_CHUNK, -(-files_todo // (workers * 4))))
    tasks = [(number, lo, hi) for number, (start, stop) in todo.items() for lo, hi in _chunk_bounds(start, stop, size)]
    chunks_of = {number: sum(1 for task in tasks if task[0] == number) for number in todo}
    parts: dict[int, list[_Processed]] = {number: [] for number in todo}

    def finish(number: int) -> None:
        results[number] = _write_shard(store, dataset, params, number, shards, todo[number], parts.pop(number),
                                       checksums, started)

    for number in [n for n, count in chunks_of.items() if count == 0]:  # a shard without files
        finish(number)
    cpu: dict[int, float] = {}
    preloaded = True
    if tasks:
        if method == "thread":
            pool: Any = ThreadPool(min(workers, len(tasks)))
            work: Callable[[list[str]], _Processed] = partial(_preprocess_files, source, params=params)
        else:
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload(PRELOAD)  # takes effect when the fork server starts
            pool = context.Pool(min(workers, len(tasks)), initializer=_init_worker,
                                initargs=(source_spec, source.patterns, settings, params))
            work = _worker_chunk
        with pool:
            keys = ([info.key for info in files[lo:hi]] for _, lo, hi in tasks)
            for (number, lo, hi), part in zip(tasks, pool.imap(work, keys), strict=True):
                if part.pid and part.pid != os.getpid():
                    cpu[part.pid] = max(cpu.get(part.pid, 0.0), part.cpu_seconds)
                    preloaded = preloaded and part.preloaded
                parts[number].append(part)
                report(hi - lo)
                if len(parts[number]) == chunks_of[number]:
                    finish(number)
    stats = PoolStats(method=method, workers=workers, processes=len(cpu) if method != "thread" else 0,
                      chunks=len(tasks), preloaded=preloaded if method != "thread" else True,
                      worker_cpu_seconds=sum(cpu.values()))
    return [results[number] for number in wanted], stats


@dataclass
class PreprocessReport:
    """The outcome of ``oraculum preprocess``: per-shard results and the index, if complete."""

    dataset: str
    files: int
    shards: list[ShardResult]
    index: DatasetIndex | None
    seconds: float
    #: CPU time of this process during the run plus that of its worker processes.
    cpu_seconds: float = 0.0
    #: The worker pool, when one ran (``workers`` above 1 and more than one chunk of work).
    pool: PoolStats | None = None

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
    start_method: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    fetch_progress: Callable[[int, int], None] | None = None,
) -> PreprocessReport:
    """Preprocess ``source_spec`` into dataset ``dataset`` of the store ``store_url``.

    With ``shard`` given, only that shard runs (a pod of an Indexed Job); otherwise every shard
    runs. With ``workers`` above 1 the files are preprocessed on one pool of that many workers,
    started once for the run and fed chunks of files (:data:`MIN_CHUNK`-:data:`MAX_CHUNK`), so
    one shard is spread over every worker too; ``start_method`` says how the pool starts (see
    :func:`pool_start_method`; ``thread`` runs them as threads of this process). The dataset is
    the same, byte for byte, whatever the workers and the start method. ``progress(done, total)``
    is called as files are processed. A source that fetches (``votable:``, ``urls:``, ``index:``)
    first downloads the files of the wanted shards, calling ``fetch_progress(done, total)``.
    """
    check_name(dataset)
    method = pool_start_method(start_method)
    started, cpu_started = time.perf_counter(), time.process_time()
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

    stats: PoolStats | None = None
    if workers <= 1 or total <= MIN_CHUNK:
        results = [process_shard(source, files, store, dataset, params, number, shards, report) for number in wanted]
    else:
        results, stats = _run_pool(source_spec, source, files, store, dataset, params, settings, wanted, shards,
                                   workers, method, report)
    index = finalize(store, dataset, shards, params, source, files)
    cpu = time.process_time() - cpu_started + (stats.worker_cpu_seconds if stats else 0.0)
    return PreprocessReport(dataset, len(files), results, index, time.perf_counter() - started, cpu, stats)


def environment_worker_count() -> int:
    """Worker processes to use by default: the CPUs this process may run on, and no more than its
    CPU quota allows (a container's cgroup ``cpu.max``, e.g. a pod's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cpus
