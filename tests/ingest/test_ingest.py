"""Ingestion end to end: real archive files (all formats) plus corrupt ones -> a dataset.

Uses the real spectra in ../shared/data (skipped when absent) and a real S3 endpoint (moto in
server mode, spoken to by the minio client).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oraculum.spectra.datasets import Dataset, DatasetError
from oraculum.ingest.pipeline import run_preprocess
from oraculum.ingest.sources import open_source
from oraculum.spectra.archive import DEFAULT_PATTERNS, shard_bounds, spectrum_id
from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid
from oraculum.settings import Settings
from oraculum.store import LocalStore, open_store

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: Corrupt files made by the test, and the reason each must be rejected with.
CORRUPT = {
    "corrupt/not-fits.fits": "not-fits",
    "corrupt/empty.fits": "truncated",  # a zero-byte file is a failed download
    "corrupt/truncated.fits": "truncated",
    "corrupt/header-only.fits": "truncated",
    "corrupt/garbage.fits.gz": "not-fits",
    "corrupt/all-nan.fits": "non-finite",
    "corrupt/flat.fits": "flat-flux",
    "corrupt/cube.fits": "unknown-layout",
}


def _lamost_files() -> list[Path]:
    return sorted(p for p in (SHARED_DATA / "lamost-dr2").rglob("spec-*.fits"))


def _make_archive(root: Path) -> Path:
    """A copy of ../shared/data plus corrupt files; returns the archive folder."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real spectra not found at {SHARED_DATA}")
    archive = root / "archive"
    shutil.copytree(SHARED_DATA, archive)
    corrupt = archive / "corrupt"
    corrupt.mkdir()
    good = _lamost_files()[0].read_bytes()
    (corrupt / "not-fits.fits").write_text("this is a README, not a spectrum\n")
    (corrupt / "empty.fits").write_bytes(b"")
    (corrupt / "truncated.fits").write_bytes(good[: len(good) // 2])
    (corrupt / "header-only.fits").write_bytes(good[:2880 * 2])
    (corrupt / "garbage.fits.gz").write_bytes(gzip.compress(b"\x00garbage" * 100))
    with fits.open(_lamost_files()[0]) as hdul:
        data = hdul[0].data.copy()
        header = hdul[0].header.copy()
    nan = data.copy()
    nan[0] = np.nan
    fits.PrimaryHDU(nan, header).writeto(corrupt / "all-nan.fits")
    flat = data.copy()
    flat[0] = 42.0
    fits.PrimaryHDU(flat, header).writeto(corrupt / "flat.fits")
    fits.PrimaryHDU(np.zeros((2, 3, 4), dtype=np.float32)).writeto(corrupt / "cube.fits")
    return archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_archive(tmp_path_factory.mktemp("ingest"))


@pytest.fixture(scope="module")
def local_run(archive: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("store")
    settings = Settings(store=str(store))
    report = run_preprocess(str(archive), "mixed", PreprocessingParameters(), settings, shards=3, workers=2)
    return report, Dataset.open(LocalStore(store), "mixed"), settings


def test_every_file_is_stored_or_rejected_with_a_reason(archive: Path, local_run) -> None:
    report, dataset, _ = local_run
    files = [info.key for info in open_source(str(archive)).list()]
    assert report.files == len(files) > 60
    assert report.index is not None
    ids = [sid for batch in dataset.iter_batches(batch_size=7) for sid in batch.ids]
    rejected = {line["key"]: line for line in dataset.rejected()}
    assert len(ids) == len(set(ids)) == dataset.index.count
    assert sorted(ids + [spectrum_id(key) for key in rejected]) == sorted(spectrum_id(key) for key in files)
    assert dataset.index.rejected == len(rejected)
    for key, reason in CORRUPT.items():
        assert rejected[key]["reason"] == reason, rejected[key]
        assert rejected[key]["message"]
    # Every real spectrum covers the default grid (6519-6732 Å), so none of them is rejected.
    real_rejected = [key for key in rejected if not key.startswith("corrupt/")]
    assert real_rejected == [], [rejected[key] for key in real_rejected]


def test_stored_spectra_have_the_grid_and_metadata(local_run) -> None:
    _, dataset, _ = local_run
    assert dataset.grid == WavelengthGrid()
    formats: set[str] = set()
    for batch in dataset.iter_batches(batch_size=16):
        assert batch.flux is not None and batch.flux.dtype == np.float32
        assert batch.flux.shape[1] == 140
        assert np.allclose(batch.flux.min(axis=1), -1) and np.allclose(batch.flux.max(axis=1), 1)
        formats.update(batch.meta["format"])
        lamost = np.char.startswith(batch.ids.astype(str), "lamost-dr2/")
        assert np.all(batch.meta["designation"][lamost] != "")
        assert np.all(np.isfinite(batch.meta["ra_deg"][lamost]))
    assert {"lamost-lrs-image", "lamost-mrs", "ondrejov-table", "fits-image-1d"} <= formats


def test_values_match_an_independent_computation(local_run) -> None:
    """Redo three LAMOST files by hand with astropy and numpy, the way the earlier system did."""
    _, dataset, _ = local_run
    grid = WavelengthGrid().wavelengths
    by_id = {sid: i for batch in dataset.iter_batches(flux=False) for sid, i in zip(batch.ids, batch.index)}
    for path in _lamost_files()[:3]:
        with fits.open(path) as hdul:
            header = hdul[0].header
            flux = hdul[0].data[0].astype(np.float64)
            wavelength = 10 ** (header["CRVAL1"] + header["CD1_1"] * (np.arange(flux.size) + 1 - header["CRPIX1"]))
        expected = np.interp(grid, wavelength, flux)
        expected = 2 * (expected - expected.min()) / (expected.max() - expected.min()) - 1
        row = dataset.take([by_id[spectrum_id(str(path.relative_to(SHARED_DATA)))]])
        assert np.allclose(row.flux[0], expected, atol=1e-6)


def test_gamma_cas_h_alpha_emission_peaks_at_its_vacuum_wavelength(local_run) -> None:
    """gamma Cas, a Be star observed at Ondřejov in air wavelengths: after preprocessing onto
    the vacuum grid its H-alpha emission peak sits at 6564.6 Å; Vega shows absorption there."""
    _, dataset, _ = local_run
    grid = dataset.grid.wavelengths
    by_id = {sid: i for batch in dataset.iter_batches(flux=False) for sid, i in zip(batch.ids, batch.index)}
    rows = dataset.take([by_id["ondrejov/gamma-cas-emission"], by_id["ondrejov/alpha-lyr-absorption"]])
    gamma_cas, vega = rows.flux
    assert abs(grid[np.argmax(gamma_cas)] - 6564.6) < 1.6  # grid step is 1.53 Å
    assert abs(grid[np.argmin(vega)] - 6564.6) < 1.6


def test_rerun_skips_finished_shards_and_redoes_a_missing_one(archive: Path, tmp_path: Path) -> None:
    settings = Settings(store=str(tmp_path / "store"))
    first = run_preprocess(str(archive), "again", PreprocessingParameters(), settings, shards=3)
    assert not any(result.skipped for result in first.shards)
    second = run_preprocess(str(archive), "again", PreprocessingParameters(), settings, shards=3)
    assert all(result.skipped for result in second.shards)
    (tmp_path / "store/datasets/again/part-00001.json").unlink()
    third = run_preprocess(str(archive), "again", PreprocessingParameters(), settings, shards=3)
    assert [result.skipped for result in third.shards] == [True, False, True]
    assert first.index is not None and third.index is not None
    assert third.index.checksum == first.index.checksum


def test_one_shard_at_a_time_like_an_indexed_job(archive: Path, tmp_path: Path, local_run) -> None:
    """Pods of an Indexed Job each run one shard; the last one to finish writes the index, and
    the dataset is the same as when all shards run in one process pool."""
    settings = Settings(store=str(tmp_path / "store"))
    reports = [
        run_preprocess(str(archive), "mixed", PreprocessingParameters(), settings, shard=i, shards=3)
        for i in (2, 0, 1)
    ]
    assert [report.index is not None for report in reports] == [False, False, True]
    assert reports[-1].index.checksum == local_run[1].index.checksum


def test_changed_parameters_under_the_same_name_are_refused(archive: Path, tmp_path: Path) -> None:
    settings = Settings(store=str(tmp_path / "store"))
    run_preprocess(str(archive / "ondrejov"), "x", PreprocessingParameters(), settings)
    with pytest.raises(DatasetError, match="different parameters"):
        run_preprocess(str(archive / "ondrejov"), "x", PreprocessingParameters(blur_sigma_px=7), settings)


def test_missing_and_incomplete_datasets_have_clear_errors(archive: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetError, match="oraculum preprocess"):
        Dataset.open(store, "nothing")
    settings = Settings(store=str(tmp_path / "store"))
    run_preprocess(str(archive / "ondrejov"), "half", PreprocessingParameters(), settings, shard=0, shards=2)
    with pytest.raises(DatasetError, match="incomplete"):
        Dataset.open(store, "half")
    with pytest.raises(DatasetError, match="invalid dataset name"):
        run_preprocess(str(archive), "Bad Name", PreprocessingParameters(), settings)


def test_take_and_iter_batches_agree_across_shards(local_run) -> None:
    _, dataset, _ = local_run
    assert len(dataset.index.shards) == 3
    everything = list(dataset.iter_batches(batch_size=5))
    flux = np.concatenate([batch.flux for batch in everything])
    ids = np.concatenate([batch.ids for batch in everything])
    index = np.concatenate([batch.index for batch in everything])
    assert np.array_equal(index, np.arange(len(dataset)))
    rng = np.random.default_rng(1)
    picks = rng.choice(len(dataset), size=20, replace=True)
    rows = dataset.take(picks)
    assert np.array_equal(rows.flux, flux[picks])
    assert list(rows.ids) == list(ids[picks])
    with pytest.raises(IndexError):
        dataset.take([len(dataset)])


def test_s3_source_and_store_give_an_identical_dataset(archive: Path, s3_settings: Settings, local_run) -> None:
    """Upload the archive to S3, preprocess from S3 into an S3 store: same shards, same index."""
    source_store = open_store("s3://raw-archive/lamost", s3_settings)
    for path in sorted(archive.rglob("*")):
        if path.is_file():
            source_store.put_file(path.relative_to(archive).as_posix(), path)
    report = run_preprocess(
        "s3://raw-archive/lamost", "mixed", PreprocessingParameters(), s3_settings, shards=3, workers=2
    )
    assert report.index is not None
    local = local_run[1]
    assert report.index.checksum == local.index.checksum
    assert [s.sha256 for s in report.index.shards] == [s.sha256 for s in local.index.shards]
    remote = Dataset.open(open_store(settings=s3_settings), "mixed", cache_dir=s3_settings.cache_dir)
    assert remote.rejected() == local.rejected()
    remote_flux = np.concatenate([b.flux for b in remote.iter_batches()])
    local_flux = np.concatenate([b.flux for b in local.iter_batches()])
    assert np.array_equal(remote_flux, local_flux)

    # many threads reading one remote dataset for the first time (the API serving parallel spectrum
    # requests): one download per shard, every read right, no temporary file left behind
    from concurrent.futures import ThreadPoolExecutor

    fresh = Dataset.open(open_store(settings=s3_settings), "mixed", cache_dir=Path(s3_settings.cache_dir) / "fresh")
    picks = list(range(len(fresh))) * 3
    with ThreadPoolExecutor(max_workers=12) as pool:
        rows = list(pool.map(lambda i: fresh.take([i]).flux[0], picks))
    assert np.array_equal(np.stack(rows), local_flux[picks])
    assert not list((Path(s3_settings.cache_dir) / "fresh").rglob("*.part"))


def test_shard_bounds_partition_exactly() -> None:
    for total in (0, 1, 7, 100):
        for shards in (1, 3, 8):
            bounds = [shard_bounds(total, i, shards) for i in range(shards)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="shard 3 of 3"):
        shard_bounds(10, 3, 3)


def test_default_patterns_pick_fits_files_only(archive: Path) -> None:
    keys = [info.key for info in open_source(str(archive)).list()]
    assert all(any(key.endswith(ext) for ext in (".fits", ".fits.gz")) for key in keys)
    assert "lamost-dr2/candidates-catalogue.csv" not in keys
    assert DEFAULT_PATTERNS
    csv_only = open_source(str(archive), ("*.csv",)).list()
    assert {Path(info.key).suffix for info in csv_only} == {".csv"}


def test_rejected_lines_are_json_with_id_key_reason_message(local_run) -> None:
    _, dataset, _ = local_run
    raw = dataset.store.get_bytes("datasets/mixed/rejected.jsonl").decode()
    for line in raw.splitlines():
        assert set(json.loads(line)) == {"id", "key", "reason", "message"}
