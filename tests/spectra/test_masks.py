"""Bad-pixel masks as first-class data (issue 16, item 2), on files built in the real layouts.

Before: pixels with inverse variance 0 and flux 0 (and mask bits) were stored as real flux 0,
which min-max normalisation turned into deep fake absorption lines; LAMOST DR1 spectra with a
dead red arm were stored as valid.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits

from oraculum.ingest.pipeline import run_preprocess
from oraculum.settings import Settings
from oraculum.spectra.datasets import Dataset
from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
from oraculum.spectra.readers import read_spectrum
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.store import LocalStore
from tests.spectra.layouts import (
    H_ALPHA_A,
    fits_bytes,
    lamost_lrs_image,
    lamost_wavelength_A,
    read_both,
    star_flux,
)

WAVELENGTH = lamost_wavelength_A()
DEFAULT = PreprocessingParameters()
GRID = DEFAULT.grid.wavelengths


def _pixel(wavelength_A: float) -> int:
    return int(np.argmin(np.abs(WAVELENGTH - wavelength_A)))


def test_lamost_rows_make_the_mask() -> None:
    """Flux 0 (with ivar 0 or not), negative ivar, and-mask bits and NaN are bad; the or-mask
    and ivar 0 under real flux are not."""
    flux, ivar = star_flux(WAVELENGTH), np.full(WAVELENGTH.size, 1e-4)
    andmask, ormask = np.zeros(WAVELENGTH.size), np.zeros(WAVELENGTH.size)
    zero_dead, zero_live, negative, anded, nan = (_pixel(w) for w in (6600, 6610, 6620, 6630, 6640))
    ored, core = _pixel(6650), _pixel(H_ALPHA_A)
    flux[[zero_dead, zero_live]] = 0.0
    ivar[zero_dead] = 0.0
    ivar[negative] = -1.0
    andmask[anded] = 2
    flux[nan] = np.nan
    ormask[ored] = 64
    ivar[core] = 0.0  # what the DR1/DR2 pipeline does on strong line cores: real flux, ivar 0
    spectrum = read_both(lamost_lrs_image(flux, ivar=ivar, andmask=andmask, ormask=ormask))
    assert spectrum.mask is not None and spectrum.mask.dtype == np.bool_
    assert sorted(np.flatnonzero(spectrum.mask)) == sorted([zero_dead, zero_live, negative, anded, nan])


def test_a_few_bad_pixels_are_interpolated_and_make_no_fake_line() -> None:
    clean = star_flux(WAVELENGTH)
    flux, ivar, andmask = clean.copy(), np.full(WAVELENGTH.size, 1e-4), np.zeros(WAVELENGTH.size)
    bad = [_pixel(6620), _pixel(6621.5), _pixel(6690)]
    flux[bad] = 0.0
    ivar[bad] = 0.0
    andmask[bad[0]] = 1
    spectrum = read_both(lamost_lrs_image(flux, ivar=ivar, andmask=andmask))
    vector = preprocess(spectrum, DEFAULT)
    expected = preprocess(read_both(lamost_lrs_image(clean)), DEFAULT)
    assert np.allclose(vector, expected, atol=0.01)  # the bad pixels lie on a smooth continuum
    assert abs(GRID[np.argmin(vector)] - H_ALPHA_A) < 1.6  # the deepest point is still H-alpha
    assert spectrum.meta.masked_fraction == pytest.approx(3 / 140, abs=0.01)
    blurred = preprocess(spectrum, PreprocessingParameters(blur_sigma_px=7))
    assert abs(GRID[np.argmin(blurred)] - H_ALPHA_A) < 1.6


def test_dr1_spectrum_with_a_dead_red_arm_is_rejected() -> None:
    """30 % of the pixels, from 6600 Å on, are zeros with ivar 0 (DR1 layout: no wavelength row)."""
    flux, ivar = star_flux(WAVELENGTH), np.full(WAVELENGTH.size, 1e-4)
    dead = slice(_pixel(6600), _pixel(6600) + int(0.3 * WAVELENGTH.size))
    flux[dead] = 0.0
    ivar[dead] = 0.0
    spectrum = read_both(lamost_lrs_image(flux, ivar=ivar, wavelength_row=False))
    with pytest.raises(SpectrumRejected) as info:
        preprocess(spectrum, DEFAULT)
    assert info.value.reason is RejectReason.MASKED_PIXELS
    assert "max_masked_fraction 0.2" in info.value.message
    assert spectrum.meta.masked_fraction == pytest.approx(0.6, abs=0.05)
    # the threshold is a parameter: allowed that many bad pixels, the spectrum is kept
    relaxed = PreprocessingParameters(max_masked_fraction=0.7, max_masked_gap_A=200)
    assert preprocess(spectrum, relaxed).shape == (140,)


def test_a_masked_hole_that_could_hide_a_line_is_rejected() -> None:
    """30 Å of zeros over H-alpha is 14 % of the grid, under max_masked_fraction, but
    interpolating across it would erase the line: max_masked_gap_A (10 Å) rejects it."""
    flux, ivar = star_flux(WAVELENGTH, line=2.0), np.full(WAVELENGTH.size, 1e-4)
    hole = np.abs(WAVELENGTH - H_ALPHA_A) < 15
    flux[hole] = 0.0
    ivar[hole] = 0.0
    spectrum = read_both(lamost_lrs_image(flux, ivar=ivar))
    with pytest.raises(SpectrumRejected, match=r"widest hole 3\d\.\d Å, max_masked_gap_A 10") as info:
        preprocess(spectrum, DEFAULT)
    assert info.value.reason is RejectReason.MASKED_PIXELS
    assert spectrum.meta.masked_fraction is not None and spectrum.meta.masked_fraction < 0.2


def test_emission_peak_with_zero_ivar_is_kept() -> None:
    """The DR1/DR2 pipeline sets ivar 0 on strong H-alpha emission (BT CMi and the three
    cross-matched emission-line stars in ../shared/data): real flux, so no mask, and the line
    survives."""
    flux = star_flux(WAVELENGTH, line=3.0)
    ivar = np.where(np.abs(WAVELENGTH - H_ALPHA_A) < 8, 0.0, 1e-4)
    spectrum = read_both(lamost_lrs_image(flux, ivar=ivar))
    assert not spectrum.mask.any()
    vector = preprocess(spectrum, DEFAULT)
    assert vector.max() == 1.0 and abs(GRID[np.argmax(vector)] - H_ALPHA_A) < 1.6


@pytest.mark.parametrize(
    "name",
    [
        "lamost-dr2/bt-cmi-lamost.fits",
        "crossmatch/lamost/spec-56265-VB069N07V2_sp04-027.fits",
        "crossmatch/lamost/spec-56284-GAC122S02V2_sp14-183.fits",
        "crossmatch/lamost/spec-56351-GAC108N13V4_sp14-219.fits",
    ],
)
def test_real_emission_peaks_with_zero_ivar_are_kept(shared_data: Path, name: str) -> None:
    """Real DR1/DR2 files whose H-alpha emission peak has ivar 0: nothing masked inside the grid,
    and the peak of the network input is H-alpha."""
    spectrum = read_spectrum((shared_data / name).read_bytes(), name)
    with fits.open(shared_data / name) as hdul:
        assert (hdul[0].data[1][np.abs(spectrum.wavelength_A - H_ALPHA_A) < 3] == 0).any()
    vector = preprocess(spectrum, DEFAULT)
    assert spectrum.meta.masked_fraction == 0.0
    assert abs(GRID[np.argmax(vector)] - H_ALPHA_A) < 3


def test_non_finite_pixels_are_interpolated_a_nan_block_is_rejected() -> None:
    wavelength = np.linspace(6000.0, 7000.0, 2001)
    flux = star_flux(wavelength)
    flux[[1100, 1101]] = [np.nan, np.inf]
    spectrum = Spectrum(wavelength_A=wavelength, flux=flux, medium="vacuum", format="test")
    assert np.isfinite(preprocess(spectrum, DEFAULT)).all()
    flux[1000:1200] = np.nan  # 100 Å of the 213 Å grid
    with pytest.raises(SpectrumRejected) as info:
        preprocess(Spectrum(wavelength_A=wavelength, flux=flux, medium="vacuum", format="test"), DEFAULT)
    assert info.value.reason is RejectReason.NON_FINITE


def test_lamost_table_columns_make_the_mask() -> None:
    """DR8+ LRS table: IVAR and ANDMASK columns give the mask (the MRS arms use the same code)."""
    flux = star_flux(WAVELENGTH).astype(np.float32)
    ivar = np.full(WAVELENGTH.size, 1e-4, np.float32)
    andmask = np.zeros(WAVELENGTH.size, np.int32)
    flux[_pixel(6600)] = 0.0
    andmask[_pixel(6650)] = 4
    n = WAVELENGTH.size
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column("FLUX", f"{n}E", array=flux[None, :]),
            fits.Column("IVAR", f"{n}E", array=ivar[None, :]),
            fits.Column("WAVELENGTH", f"{n}D", array=WAVELENGTH[None, :]),
            fits.Column("ANDMASK", f"{n}J", array=andmask[None, :]),
            fits.Column("ORMASK", f"{n}J", array=andmask[None, :] * 0 + 1),
        ],
        name="COADD",
    )
    spectrum = read_both(fits_bytes(fits.PrimaryHDU(), table))
    assert spectrum.format == "lamost-lrs-table"
    assert list(np.flatnonzero(spectrum.mask)) == [_pixel(6600), _pixel(6650)]


def test_real_mrs_zero_pixel_is_masked(shared_data: Path) -> None:
    """A real LAMOST DR7 MRS co-add holds a pixel of flux 0 (with ivar > 0) at 6584.2 Å: masked
    and interpolated, so the blurred spectrum has no dip there (before: a fake line)."""
    path = shared_data / "lamost-dr7/KIC8098300/DR7_medium/med-58649-TD193637N444141K01_sp10-159.fits.gz"
    spectrum = read_spectrum(path.read_bytes(), path.name, grid=DEFAULT.grid)
    zero = np.flatnonzero((spectrum.flux == 0) & (np.abs(spectrum.wavelength_A - 6584.2) < 0.2))
    assert zero.size == 1 and spectrum.mask[zero].all()
    blurred = preprocess(spectrum, PreprocessingParameters(blur_sigma_px=7))
    near = np.abs(GRID - 6584.2) < 3
    assert blurred[near].min() > blurred[~near].min() + 0.5  # nowhere near the spectrum's minimum


# --- the dataset records the masked fraction; older datasets stay readable -----------------------


def _archive(root: Path) -> Path:
    folder = root / "archive"
    folder.mkdir()
    clean = star_flux(WAVELENGTH)
    (folder / "spec-clean.fits").write_bytes(lamost_lrs_image(clean))
    flux, ivar = clean.copy(), np.full(WAVELENGTH.size, 1e-4)
    few = [_pixel(6600), _pixel(6650)]
    flux[few] = 0.0
    ivar[few] = 0.0
    (folder / "spec-few-bad.fits").write_bytes(lamost_lrs_image(flux, ivar=ivar))
    dead = slice(_pixel(6600), None)
    flux[dead] = 0.0
    ivar[dead] = 0.0
    (folder / "spec-dead-arm.fits").write_bytes(lamost_lrs_image(flux, ivar=ivar, wavelength_row=False))
    return folder


def test_masked_fraction_is_recorded_and_old_datasets_stay_readable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    settings = Settings(store=str(store))
    report = run_preprocess(str(_archive(tmp_path)), "masks", DEFAULT, settings, workers=1)
    assert report.reasons == {"masked-pixels": 1}
    dataset = Dataset.open(LocalStore(store), "masks")
    batch = next(dataset.iter_batches())
    fractions = dict(zip(batch.ids, batch.meta["masked_fraction"]))
    assert fractions["spec-clean"] == 0.0
    assert fractions["spec-few-bad"] == pytest.approx(2 / 140, abs=0.01)
    (rejected,) = dataset.rejected()
    assert (rejected["id"], rejected["reason"]) == ("spec-dead-arm", "masked-pixels")

    # A shard written before the new columns existed: they read as missing, everything else as before.
    shard = store / dataset.index.shards[0].key
    with h5py.File(shard, "a") as handle:
        for name in ("masked_fraction", "redshift", "objid", "warnings"):
            del handle["meta"][name]
    old = Dataset.open(LocalStore(store), "masks")
    batch_old = next(old.iter_batches())
    assert np.isnan(batch_old.meta["masked_fraction"]).all() and list(batch_old.meta["warnings"]) == ["", ""]
    assert np.array_equal(batch_old.flux, batch.flux) and list(batch_old.meta["designation"]) == list(batch.meta["designation"])
    taken = old.take([1, 0])
    assert np.isnan(taken.meta["redshift"]).all() and list(taken.ids) == list(batch.ids[::-1])
    assert json.loads((store / "datasets/masks/index.json").read_text())["parameters"]["max_masked_fraction"] == 0.2
