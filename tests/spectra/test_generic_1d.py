"""Generic 1-D spectra (issue 16, item 4): rows/columns images, OBJNAME, and the wavelength medium
taken from the header - or, when nothing says, a warning recorded per file instead of a silent
guess (Keck/ESI and MagE reductions are vacuum: 1.8 Å off at H-alpha if taken as air).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oraculum.ingest.pipeline import run_preprocess
from oraculum.settings import Settings
from oraculum.spectra.datasets import Dataset
from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
from oraculum.spectra.readers import read_spectrum
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected
from oraculum.store import LocalStore
from tests.spectra.layouts import H_ALPHA_A, fits_bytes, read_both, star_flux

WAVELENGTH = np.linspace(6300.0, 6900.0, 1201)
FLUX = star_flux(WAVELENGTH)


def _image_1d(**cards: object) -> bytes:
    """A 1-D image with a linear WCS, as IRAF and most reduction pipelines write it."""
    hdu = fits.PrimaryHDU(FLUX.astype(np.float32))
    hdu.header.update({"CRVAL1": 6300.0, "CDELT1": 0.5, "CRPIX1": 1, "CTYPE1": "LINEAR", **cards})
    return fits_bytes(hdu)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_rows_or_columns_image_is_read(layout: str) -> None:
    """A 1-D spectrum stored as (wavelength, flux, error) rows or columns, no WCS: before, it was
    rejected as 'expected a LAMOST low-resolution spectrum'."""
    image = np.vstack([WAVELENGTH, FLUX, np.sqrt(FLUX)]).astype(np.float64)
    spectrum = read_both(fits_bytes(fits.PrimaryHDU(image if layout == "rows" else image.T)))
    assert spectrum.format == "generic-image"
    assert np.array_equal(spectrum.wavelength_A, WAVELENGTH) and np.array_equal(spectrum.flux, FLUX)
    assert spectrum.medium == "vacuum" and "assumed vacuum" in spectrum.meta.warnings[0]
    stated = read_both(fits_bytes(fits.PrimaryHDU(image, header=fits.Header({"AIRORVAC": "air"}))))
    assert stated.medium == "air" and stated.meta.warnings == ()


def test_image_that_is_no_spectrum_is_rejected_without_a_lamost_only_message() -> None:
    noise = np.random.default_rng(0).normal(size=(3, 500))
    with pytest.raises(SpectrumRejected) as info:
        read_spectrum(fits_bytes(fits.PrimaryHDU(noise)), "noise.fits")
    assert info.value.reason is RejectReason.UNKNOWN_LAYOUT
    assert "rows or columns" in info.value.message


@pytest.mark.parametrize(
    ("cards", "medium"),
    [
        ({"VACUUM": True}, "vacuum"),
        ({"VACUUM": False}, "air"),
        ({"AIRORVAC": "vac"}, "vacuum"),
        ({"AIRORVAC": "air"}, "air"),
        ({"CTYPE1": "WAVE"}, "vacuum"),
        ({"CTYPE1": "AWAV"}, "air"),
        ({"WAT1_001": "wtype=linear label=Vacuum Wavelength units=angstroms"}, "vacuum"),
        ({"WAT1_001": "wtype=linear label=Air Wavelength units=angstroms"}, "air"),
        ({"OBSERVAT": "ONDREJOV"}, "air"),  # the Ondřejov archive's convention
    ],
)
def test_medium_from_header_keywords(cards: dict[str, object], medium: str) -> None:
    spectrum = read_both(_image_1d(**cards))
    assert (spectrum.format, spectrum.medium, spectrum.meta.warnings) == ("fits-image-1d", medium, ())


def test_unstated_medium_is_recorded_as_a_warning(tmp_path: Path) -> None:
    spectrum = read_both(_image_1d(WAT1_001="wtype=linear label=Wavelength units=angstroms"))
    assert spectrum.medium == "air"
    (warning,) = spectrum.meta.warnings
    assert "medium not stated" in warning and "assumed air" in warning
    # ... and it reaches the dataset, one line per file
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "esi.fits").write_bytes(_image_1d())
    (archive / "mage.fits").write_bytes(_image_1d(CTYPE1="WAVE"))
    settings = Settings(store=str(tmp_path / "store"))
    run_preprocess(str(archive), "media", PreprocessingParameters(), settings, workers=1)
    batch = next(Dataset.open(LocalStore(tmp_path / "store"), "media").iter_batches())
    warnings = dict(zip(batch.ids, batch.meta["warnings"]))
    assert "assumed air" in warnings["esi"] and warnings["mage"] == ""


def test_medium_decides_where_h_alpha_lands() -> None:
    """The same vacuum-wavelength file: stated vacuum, H-alpha at 6564.6 Å; unstated (assumed
    air), 1.8 Å off - which is why the assumption is recorded."""
    params = PreprocessingParameters()
    grid = params.grid.wavelengths
    stated = preprocess(read_both(_image_1d(CTYPE1="WAVE")), params)
    assumed = preprocess(read_both(_image_1d()), params)
    assert abs(grid[np.argmin(stated)] - H_ALPHA_A) < 0.8
    assert np.argmin(assumed) != np.argmin(stated)


def test_objname_is_the_object_name_where_object_is_missing() -> None:
    assert read_both(_image_1d(OBJNAME="HD 208905")).meta.object_name == "HD 208905"
    assert read_both(_image_1d(OBJNAME="x", OBJECT="gamma Cas")).meta.object_name == "gamma Cas"


def test_generic_tables_record_an_assumed_medium() -> None:
    table = fits.BinTableHDU.from_columns(
        [fits.Column("WAVE", "D", array=WAVELENGTH), fits.Column("FLUX", "D", array=FLUX)]
    )
    spectrum = read_both(fits_bytes(fits.PrimaryHDU(), table))
    assert spectrum.medium == "vacuum" and "assumed vacuum" in spectrum.meta.warnings[0]
    csv = "\n".join(["wave,flux"] + [f"{w},{f}" for w, f in zip(WAVELENGTH, FLUX)]).encode()
    assert "assumed vacuum" in read_both(csv, "x.csv").meta.warnings[0]
    csv_air = b"wavelength_air,flux\n" + csv.split(b"\n", 1)[1]
    assert read_both(csv_air, "x.csv").meta.warnings == ()
