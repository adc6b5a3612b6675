"""Robust LAMOST wavelengths (issue 16, item 1): broken WCS cards fall back to COEFF0/COEFF1 or
the wavelength row, on files built here in the real LAMOST LRS layout.

Some LAMOST DR8 files carry ``CRPIX1 = -9999`` and ``CTYPE1 = -9999`` (the "missing" marker);
read literally, their wavelengths come out 10x too large (37,000-89,000 Å) and valid spectra were
rejected as "grid not covered".
"""

from __future__ import annotations

import numpy as np
import pytest

from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
from oraculum.spectra.readers import read_spectrum, read_spectrum_reference
from oraculum.spectra.readers.lamost import read_lrs_image_fast
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected
from tests.spectra.layouts import (
    LAMOST_CRVAL1,
    LAMOST_STEP,
    lamost_lrs_image,
    lamost_wavelength_A,
    read_both,
    star_flux,
)

WAVELENGTH = lamost_wavelength_A()
FLUX = star_flux(WAVELENGTH)
DEFAULT = PreprocessingParameters()


def _both(data: bytes):
    spectrum = read_both(data)
    assert spectrum.format == "lamost-lrs-image"
    return spectrum


def _good() -> np.ndarray:
    return preprocess(read_spectrum(lamost_lrs_image(FLUX), "good.fits"), DEFAULT)


@pytest.mark.parametrize("marker", [-9999, -9999.0, "-9999"])
def test_dr8_missing_marker_falls_back_to_coeff(marker: object) -> None:
    data = lamost_lrs_image(FLUX, CRPIX1=marker, CTYPE1=marker)
    spectrum = _both(data)
    assert np.allclose(spectrum.wavelength_A, 10 ** (LAMOST_CRVAL1 + LAMOST_STEP * np.arange(WAVELENGTH.size)), rtol=1e-12)
    assert 3690 < spectrum.wavelength_A[0] < 3710 and 9000 < spectrum.wavelength_A[-1] < 9110
    assert np.array_equal(preprocess(spectrum, DEFAULT), _good())  # the same network input, bit for bit
    if isinstance(marker, (int, float)):
        assert read_lrs_image_fast(data) is not None  # header-only decision: the fast path answers


def test_missing_marker_without_coeff_uses_the_wavelength_row() -> None:
    data = lamost_lrs_image(FLUX, CRPIX1=-9999, CTYPE1=-9999, COEFF0=None, COEFF1=None)
    assert read_lrs_image_fast(data) is None  # needs row 2: left to astropy
    spectrum = _both(data)
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-6)  # row 2 is float32
    vector = preprocess(spectrum, DEFAULT)
    assert np.allclose(vector, _good(), atol=2e-3)


def test_wcs_and_coeff_that_disagree_are_settled_by_the_wavelength_row() -> None:
    # CRVAL1 off by 2 % (plausible on its own): COEFF0/COEFF1 and the row agree, so they win
    spectrum = _both(lamost_lrs_image(FLUX, CRVAL1=LAMOST_CRVAL1 + 0.0086))
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-12)
    # the other way round: COEFF0 off, the WCS and the row agree
    spectrum = _both(lamost_lrs_image(FLUX, COEFF0=LAMOST_CRVAL1 + 0.0086))
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-12)
    # no wavelength row (DR1): the survey's own coefficients
    spectrum = _both(lamost_lrs_image(FLUX, CRVAL1=LAMOST_CRVAL1 + 0.0086, wavelength_row=False))
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-12)


def test_implausible_wcs_uses_coeff() -> None:
    """CRVAL1 = 4.5682 puts LAMOST at 37,000-89,000 Å: the coefficients are used instead."""
    spectrum = _both(lamost_lrs_image(FLUX, CRVAL1=LAMOST_CRVAL1 + 1.0))
    assert np.allclose(spectrum.wavelength_A, WAVELENGTH, rtol=1e-12)


def test_only_the_marker_and_no_fallback_reads_the_wcs_literally() -> None:
    """CTYPE1 = -9999 alone, no COEFF, DR1 row: the WCS numbers are all there is."""
    data = lamost_lrs_image(FLUX, CTYPE1=-9999, COEFF0=None, COEFF1=None, wavelength_row=False)
    assert np.allclose(_both(data).wavelength_A, WAVELENGTH, rtol=1e-12)


def test_no_wavelength_solution_at_all_is_an_unknown_layout() -> None:
    data = lamost_lrs_image(FLUX, CRVAL1=None, CRPIX1=-9999, COEFF0=None, COEFF1=None, wavelength_row=False)
    for function in (read_spectrum, read_spectrum_reference):
        with pytest.raises(SpectrumRejected) as info:
            function(data, "broken.fits")
        assert info.value.reason is RejectReason.UNKNOWN_LAYOUT
        assert "CRPIX1=-9999" in info.value.message and "COEFF0=None" in info.value.message
