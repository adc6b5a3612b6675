"""SDSS readers (issue 16, item 4): BOSS/SDSS DR8+ spec files and SDSS DR7 spSpec files, built
here in their real layouts. Before, both were read under LAMOST format names with empty metadata.
"""

from __future__ import annotations

import numpy as np
import pytest

from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid, preprocess
from oraculum.spectra.readers.lamost import read_lrs_image_fast
from oraculum.spectra.readers.masks import SDSS_BAD_BITS
from tests.spectra.layouts import (
    H_ALPHA_A,
    SDSS_PIXELS,
    read_both,
    sdss_spec,
    sdss_spspec,
    sdss_wavelength_A,
    star_flux,
)

WAVELENGTH = sdss_wavelength_A()
Z = 0.02


def _galaxy() -> np.ndarray:
    """An emission-line galaxy at redshift Z: H-alpha at its redshifted vacuum wavelength."""
    return star_flux(WAVELENGTH, line=2.0, centre_A=H_ALPHA_A * (1 + Z)).astype(np.float32)


def _pixel(wavelength_A: float) -> int:
    return int(np.argmin(np.abs(WAVELENGTH - wavelength_A)))


def test_spec_coadd_table() -> None:
    flux = _galaxy()
    ivar = np.full(SDSS_PIXELS, 0.5, np.float32)
    and_mask = np.zeros(SDSS_PIXELS, np.int32)
    no_ivar, bright_sky, partial = _pixel(6000), _pixel(6100), _pixel(6200)
    ivar[no_ivar] = 0.0
    and_mask[bright_sky] = 1 << SDSS_BAD_BITS["BRIGHTSKY"]
    and_mask[partial] = 1 << 19  # PARTIALREJECT: informational, not a bad pixel
    spectrum = read_both(sdss_spec(flux, ivar=ivar, and_mask=and_mask, z=Z), "spec-0266-51630-0003.fits")
    assert (spectrum.format, spectrum.medium) == ("sdss-spec", "vacuum")
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-6)  # loglam is float32
    assert np.array_equal(spectrum.flux, flux)
    assert list(np.flatnonzero(spectrum.mask)) == [no_ivar, bright_sky]
    meta = spectrum.meta
    assert meta.designation == "0266-51630-0003"
    assert (meta.ra_deg, meta.dec_deg) == (146.71421, -1.0413043)  # the fibre, not the plate centre
    assert (meta.header_class, meta.subclass) == ("GALAXY", "STARFORMING")
    assert meta.redshift == pytest.approx(Z) and meta.objid == "587722952230175035"
    assert meta.mjd == 51630 and meta.snr == pytest.approx(14.2) and meta.obsid is None


def test_galaxy_h_alpha_lands_at_its_redshifted_vacuum_wavelength() -> None:
    spectrum = read_both(sdss_spec(_galaxy(), z=Z), "spec.fits")
    expected = H_ALPHA_A * (1 + spectrum.meta.redshift)
    grid = WavelengthGrid(start=6650, end=6750, points=2001)
    vector = preprocess(spectrum, PreprocessingParameters(grid=grid)).astype(np.float64)
    line = np.abs(grid.wavelengths - grid.wavelengths[np.argmax(vector)]) < 12
    weight = vector[line] - vector.min()
    centroid = np.sum(grid.wavelengths[line] * weight) / np.sum(weight)
    assert abs(centroid - expected) < 0.03


def test_spspec_image() -> None:
    flux = _galaxy()
    error = np.full(SDSS_PIXELS, 1.5, np.float32)
    mask = np.zeros(SDSS_PIXELS, np.int32)
    error[_pixel(6000)] = 0.0
    mask[_pixel(6100)] = 1 << SDSS_BAD_BITS["NOSKY"]
    mask[_pixel(6200)] = 1 << 10  # SMEARIMAGE: informational
    data = sdss_spspec(flux, error=error, mask=mask)
    assert read_lrs_image_fast(data) is None  # never taken for a LAMOST image
    spectrum = read_both(data, "spSpec-51630-0266-003.fit")
    assert (spectrum.format, spectrum.medium) == ("sdss-spspec", "vacuum")
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-12)
    assert list(np.flatnonzero(spectrum.mask)) == [_pixel(6000), _pixel(6100)]
    meta = spectrum.meta
    assert meta.designation == "0266-51630-0003" and meta.header_class == "GALAXY"
    assert meta.redshift == pytest.approx(0.0213) and meta.objid == "0000756 44 1 0206 00267"
    assert (meta.ra_deg, meta.dec_deg, meta.snr) == (146.71421, -1.0413043, 18.5)
