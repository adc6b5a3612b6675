"""Parallel ingestion: one pool of workers per run, started once with the modules already imported
(forked), fed chunks of files, so a single shard uses every worker; the dataset is the same, byte
for byte, whatever the workers and the start method. And the dataset iterator reads only what it
is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oraculum.ingest.pipeline import PreprocessReport, run_preprocess
from oraculum.settings import Settings
from oraculum.spectra.datasets import Dataset
from oraculum.spectra.preprocessing import PreprocessingParameters
from oraculum.spectra.synth import generator as synth
from oraculum.store import LocalStore

COUNT = 200


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of synthetic LAMOST-format files, some of them broken (rejected with a reason)."""
    folder = tmp_path_factory.mktemp("archive")
    synth.generate(LocalStore(folder), "", synth.SynthConfig(count=COUNT, seed=3))
    return folder


def _run(archive: Path, store: Path, dataset: str, **options: object) -> PreprocessReport:
    return run_preprocess(str(archive), dataset, PreprocessingParameters(), Settings(store=str(store)), **options)


def _shard_bytes(store: Path, dataset: str) -> dict[str, bytes]:
    folder = store / "datasets" / dataset
    return {path.name: path.read_bytes() for path in sorted(folder.glob("part-*.h5")) + [folder / "rejected.jsonl"]}


@pytest.fixture(scope="module")
def serial(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, PreprocessReport]]:
    """The dataset made with one worker, with 1 and with 3 shards: (store, report) by shard count."""
    made = {}
    for shards in (1, 3):
        store = tmp_path_factory.mktemp(f"serial-{shards}")
        report = _run(archive, store, "one", workers=1, shards=shards)
        assert report.pool is None and report.index is not None
        made[shards] = store, report
    return made


@pytest.mark.parametrize("method", ["auto", "fork", "forkserver", "thread"])
@pytest.mark.parametrize("shards", [1, 3])
def test_two_workers_make_the_same_dataset_as_one(archive: Path, tmp_path: Path, method: str, shards: int,
                                                   serial: dict[int, tuple[Path, PreprocessReport]]) -> None:
    report = _run(archive, tmp_path, "two", workers=2, shards=shards, start_method=method)
    assert report.index is not None and report.pool is not None
    assert report.pool.chunks > shards, "the shards are split into chunks of files"
    one_store, one = serial[shards]
    assert one.index is not None
    assert _shard_bytes(tmp_path, "two") == _shard_bytes(one_store, "one")
    assert report.index.checksum == one.index.checksum
    assert report.index.count + report.index.rejected == COUNT and report.index.rejected > 0
    assert report.reasons == one.reasons


def test_one_shard_is_spread_over_a_pool_of_workers_that_import_nothing(archive: Path, tmp_path: Path) -> None:
    """The default shard count for a few thousand files is one: two workers both take part, each
    forked with the readers already imported (no fresh interpreter per worker or per task)."""
    for method in ("fork", "forkserver"):
        report = _run(archive, tmp_path / method, "pool", workers=2, start_method=method)
        assert len(report.shards) == 1
        assert report.pool is not None
        assert (report.pool.method, report.pool.processes) == (method, 2)
        assert report.pool.preloaded, f"{method}: a worker imported the pipeline itself"
        assert report.cpu_seconds > 0


def test_auto_forks_a_process_with_one_thread_else_uses_the_fork_server() -> None:
    import threading

    from oraculum.ingest.pipeline import pool_start_method

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    assert pool_start_method("auto") == ("fork" if threading.active_count() == 1 else "forkserver")
    other.start()
    try:
        assert pool_start_method("auto") == "forkserver"
    finally:
        stop.set()
        other.join()
    assert pool_start_method("spawn") == "spawn"
    with pytest.raises(ValueError, match="unknown start method"):
        pool_start_method("vfork")


def test_the_iterator_reads_only_what_it_is_asked_for(serial: dict[int, tuple[Path, PreprocessReport]]) -> None:
    store, _ = serial[3]
    dataset = Dataset.open(LocalStore(store), "one")
    full = list(dataset.iter_batches(batch_size=37))
    flux_only = list(dataset.iter_batches(batch_size=37, ids=False, meta=False))
    assert len(full) == len(flux_only) > 1
    for whole, lean in zip(full, flux_only, strict=True):
        assert lean.ids is None and lean.meta == {}
        assert lean.flux is not None and whole.flux is not None
        assert np.array_equal(lean.flux, whole.flux) and lean.flux.dtype == np.float32
        assert np.array_equal(lean.index, whole.index)
    some = list(dataset.iter_batches(batch_size=37, flux=False, ids=False, meta=("snr", "designation")))
    for whole, part in zip(full, some, strict=True):
        assert part.flux is None and set(part.meta) == {"snr", "designation"}
        assert np.array_equal(part.meta["snr"], whole.meta["snr"], equal_nan=True)
        assert list(part.meta["designation"]) == list(whole.meta["designation"])
    with pytest.raises(ValueError, match="unknown metadata column"):
        next(dataset.iter_batches(meta=("no-such-column",)))
