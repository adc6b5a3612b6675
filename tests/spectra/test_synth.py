"""Tests of the synthetic LAMOST-format spectra and archives (oraculum.spectra.synth).

One 2000-file run is generated once per module (the slow part, bound by the local store's fsync)
and shared by the tests that only read it.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oraculum.spectra.synth.generator import SynthConfig, SynthSummary, generate
from oraculum.spectra.synth.lamost_fits import designation, lamost_wavelength_A
from oraculum.spectra.synth.lines import double_peak_profile
from oraculum.spectra.synth.star import BAD_KINDS, CLASSES, simulate, spectral_type, synth_spectrum
from oraculum.store import LocalStore

HALPHA_A = 6564.61
WL = lamost_wavelength_A()
FILE_SIZE = 2880 * 2 + 2880 * 28  # 2 header blocks + 5 x 3909 float32 padded to 28 blocks


def _read_csv(store: LocalStore, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.get_bytes(key).decode("utf-8"))))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, SynthSummary, SynthConfig]:
    store = LocalStore(tmp_path_factory.mktemp("synth"))
    config = SynthConfig(count=2000, seed=11)
    increments: list[int] = []
    summary = generate(store, "synth/run", config, progress=increments.append)
    assert sum(increments) == config.count
    return store, summary, config


def test_label_fractions_match_config(run: tuple[LocalStore, SynthSummary, SynthConfig]) -> None:
    store, summary, config = run
    rows = _read_csv(store, summary.labels_key)
    assert list(rows[0]) == ["filename", "obsid", "label"]
    assert len(rows) == config.count == len(summary.files)
    for label in CLASSES:
        share = sum(row["label"] == label for row in rows) / len(rows)
        assert share == pytest.approx(config.fractions[label], abs=0.005), label
        assert summary.counts[label] == sum(row["label"] == label for row in rows)
    assert len({row["obsid"] for row in rows}) == len(rows)
    assert {f"synth/run/{row['filename']}" for row in rows} == set(summary.files)
    # labels are shuffled, not in blocks
    first = [row["label"] for row in rows[:200]]
    assert first.count("absorption") < 200


def test_files_are_valid_lamost_layout(run: tuple[LocalStore, SynthSummary, SynthConfig]) -> None:
    store, summary, _ = run
    rows = _read_csv(store, summary.truth_key)
    good = [row for row in rows if row["label"] != "bad"][:25]
    for row in good:
        path = store.local_path(f"synth/run/{row['filename']}")
        assert path is not None and path.stat().st_size == FILE_SIZE
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any astropy verification warning fails the test
            with fits.open(path) as hdul:
                hdul.verify("exception")
                assert len(hdul) == 1
                header, data = hdul[0].header, hdul[0].data
                assert data.shape == (5, 3909) and data.dtype == np.dtype(">f4")
                assert header["BITPIX"] == -32
                assert header["CRVAL1"] == 3.5682 and header["CD1_1"] == 1e-4 and header["CRPIX1"] == 1
                assert header["CTYPE1"] == "LINEAR" and header["VACUUM"] is True
                assert header["DATA_V"] == "SYNTHETIC" and header["CLASS"] == "STAR"
                assert any("SYNTHETIC" in str(card) for card in header["COMMENT"])
                assert header["OBSID"] == int(row["obsid"])
                assert header["FILENAME"] == row["filename"]
                assert header["SUBCLASS"] == row["subclass"]
                assert header["SNRR"] == pytest.approx(float(row["snr"]), abs=0.01)
                assert header["DESIG"] == designation(header["RA"], header["DEC"])
                assert header["DESIG"].startswith("LAMOST J")
                assert "DATE" not in header  # no timestamps: same bytes for the same seed
                pix = np.arange(3909) + 1 - header["CRPIX1"]
                wcs = 10.0 ** (header["CRVAL1"] + header["CD1_1"] * pix)
                np.testing.assert_allclose(data[2], wcs, atol=5e-3)
                assert np.isfinite(data[0]).all() and (data[1] >= 0).all()
                assert (data[3] == 0).all() and (data[4] == 0).all()


def test_designation_follows_lamost() -> None:
    # the real DR7 file spec-58397-EG014118N254444M01_sp03-031.fits
    assert designation(24.376852, 25.427147) == "LAMOST J013730.44+252537.7"
    assert designation(0.0, -0.5) == "LAMOST J000000.00-003000.0"


def test_subclass_matches_temperature() -> None:
    assert spectral_type(5770.0) == "G2"
    assert spectral_type(9700.0) == "A0"
    assert spectral_type(4450.0) == "K5"
    assert spectral_type(15700.0) == "B5"


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    fractions = {"absorption": 0.4, "emission": 0.2, "double-peak": 0.2, "bad": 0.2}
    stores = [LocalStore(tmp_path / name) for name in ("a", "b", "c")]
    summaries = [
        generate(store, "s", SynthConfig(count=24, seed=seed, fractions=fractions))
        for store, seed in zip(stores, (3, 3, 4), strict=True)
    ]
    a, b, c = stores
    assert summaries[0].files == summaries[1].files
    for key in [*summaries[0].files, summaries[0].labels_key, summaries[0].truth_key]:
        assert a.get_bytes(key) == b.get_bytes(key), key
    assert any(a.get_bytes(key) != c.get_bytes(key) for key in summaries[0].files)
    # the damage mix is allocated exactly, so even 5 bad files cover every kind
    assert summaries[0].bad_kinds == {"nan": 2, "zero": 1, "nan-block": 1, "truncated": 1}


def test_compressed_files_read_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    config = SynthConfig(count=6, seed=1, compress=True, fractions={"absorption": 1.0})
    summary = generate(store, "gz", config)
    assert all(key.endswith(".fits.gz") for key in summary.files)
    assert _read_csv(store, summary.labels_key)[0]["filename"].endswith(".fits.gz")
    again = generate(LocalStore(tmp_path / "again"), "gz", config)
    for key in summary.files:
        raw = store.get_bytes(key)
        assert raw == LocalStore(tmp_path / "again").get_bytes(key)
        assert len(gzip.decompress(raw)) == FILE_SIZE
        with fits.open(store.local_path(key)) as hdul:
            assert hdul[0].data.shape == (5, 3909)
    assert again.files == summary.files


def test_bad_files_are_bad(run: tuple[LocalStore, SynthSummary, SynthConfig]) -> None:
    store, summary, _ = run
    rows = [row for row in _read_csv(store, summary.truth_key) if row["label"] == "bad"]
    kinds = {row["bad_kind"] for row in rows}
    assert kinds == set(BAD_KINDS)
    for row in rows:
        path = store.local_path(f"synth/run/{row['filename']}")
        assert path is not None
        if row["bad_kind"] == "truncated":
            size = path.stat().st_size
            assert 2 * 2880 < size < FILE_SIZE
            with pytest.raises((OSError, ValueError, TypeError)), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path) as hdul:
                    np.asarray(hdul[0].data).sum()
            continue
        with fits.open(path) as hdul:
            flux, ivar = hdul[0].data[0], hdul[0].data[1]
        if row["bad_kind"] == "nan":
            assert np.isnan(flux).all() and (ivar == 0).all()
        elif row["bad_kind"] == "zero":
            assert (flux == 0).all() and (ivar == 0).all()
        else:
            near = np.abs(WL - HALPHA_A) < 5
            assert np.isnan(flux[near]).all() and (ivar[near] == 0).all()
            assert np.isfinite(flux[WL < 6400]).all()


def test_emission_peak_and_absorption_dip() -> None:
    window = np.abs(WL - HALPHA_A) < 10
    side = ((WL > 6600) & (WL < 6650)) | ((WL > 6480) & (WL < 6530))
    strong = 0
    for k in range(40):
        spec = simulate(np.random.default_rng([1, k]), "emission", WL, 100.0)
        p = spec.params
        emission = spec.model / spec.continuum - spec.lines
        centre = HALPHA_A * (1 + p.rv_km_s / 299_792.458)
        assert abs(WL[np.argmax(np.where(window, emission, 0))] - centre) < 1.6  # one pixel
        assert np.max(emission[window]) == pytest.approx(p.ha_amplitude, rel=0.1)
        if p.ha_amplitude >= 1.0:  # strong lines stand out of the noisy flux
            strong += 1
            assert spec.flux[window].max() > 1.3 * np.median(spec.flux[side])
    assert strong >= 5
    for k in range(40):
        spec = simulate(np.random.default_rng([2, k]), "absorption", WL, 100.0)
        assert spec.model[window].min() < 0.9 * np.median(spec.model[side])
        assert spec.flux[window].min() < np.median(spec.flux[side])
        assert (spec.model / spec.continuum).max() <= 1.0 + 1e-12  # absorption only


def _maxima_above_continuum(values: np.ndarray) -> int:
    i = np.arange(1, values.size - 1)
    return int(np.sum((values[i] > values[i - 1]) & (values[i] >= values[i + 1]) & (values[i] > 1.0)))


def test_double_peak_has_two_maxima() -> None:
    profile = double_peak_profile(WL, HALPHA_A, 8.0, 1.8, 2.0, 0.7, 0.4)
    window = np.abs(WL - HALPHA_A) < 15
    assert _maxima_above_continuum(1.0 + profile[window]) == 2
    y = profile[window]
    i = np.arange(1, y.size - 1)
    peaks = WL[window][i[(y[i] > y[i - 1]) & (y[i] >= y[i + 1])]]
    assert peaks.size == 2 and np.ptp(peaks) == pytest.approx(8.0, abs=1.6)  # within a pixel
    # V/R < 1: the red peak is the stronger one
    assert WL[window][np.argmax(profile[window])] > HALPHA_A
    # drawn profiles (noise-free) are mostly resolved into two peaks at LAMOST's sampling; the
    # narrowest separations (3-4 Å, 2 pixels) may merge, as they would in real LAMOST data
    two = 0
    for k in range(60):
        spec = simulate(np.random.default_rng([3, k]), "double-peak", WL, 100.0)
        two += _maxima_above_continuum((spec.model / spec.continuum)[window]) >= 2
    assert two >= 0.7 * 60


def test_synth_spectrum_api() -> None:
    flux = synth_spectrum(np.random.default_rng(0), "absorption", WL, 50.0)
    assert flux.shape == WL.shape and np.isfinite(flux).all()
    again = synth_spectrum(np.random.default_rng(0), "absorption", WL, 50.0)
    np.testing.assert_array_equal(flux, again)
    # noise level: per-pixel continuum S/N in the r band equals the requested snr
    spec = simulate(np.random.default_rng(1), "absorption", WL, 50.0)
    r_band = (WL > 6000) & (WL < 7000)
    snr = spec.continuum[r_band] * np.sqrt(spec.ivar[r_band])
    assert np.median(snr) == pytest.approx(50.0, rel=0.1)
    # any wavelength grid works (e.g. a linear grid around H-alpha)
    grid = np.linspace(6500.0, 6650.0, 300)
    assert synth_spectrum(np.random.default_rng(0), "emission", grid, 30.0).shape == grid.shape
    with pytest.raises(ValueError, match="label"):
        synth_spectrum(np.random.default_rng(0), "quasar", WL, 50.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"count": -5}, "count"),
        ({"count": 0}, "count"),
        ({"count": 10, "seed": -1}, "seed"),
        ({"count": 10, "fractions": {"absorption": 0.5, "emission": 0.4}}, "fractions"),
        ({"count": 10, "fractions": {"absorption": 0.9, "quasar": 0.1}}, "fractions"),
        ({"count": 10, "fractions": {"absorption": 1.2, "emission": -0.2}}, "fractions"),
        ({"count": 10, "snr_range": (50.0, 10.0)}, "snr_range"),
        ({"count": 10, "snr_range": (0.0, 10.0)}, "snr_range"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_and_partial_fractions() -> None:
    config = SynthConfig(count=3)
    assert config.fractions == {"absorption": 0.90, "emission": 0.05, "double-peak": 0.03, "bad": 0.02}
    assert config.snr_range == (10.0, 150.0) and config.compress is False
    partial = SynthConfig(count=3, fractions={"absorption": 0.5, "emission": 0.5})
    assert partial.fractions["bad"] == 0.0
