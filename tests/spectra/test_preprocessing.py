"""Resampling, blur, normalisation and quality checks on spectra with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid, preprocess, resample
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import air_to_vacuum


def _spectrum(wavelength: np.ndarray, flux: np.ndarray, medium: str = "vacuum") -> Spectrum:
    return Spectrum(wavelength_A=wavelength, flux=flux, medium=medium, format="test")  # type: ignore[arg-type]


def test_defaults_reproduce_the_published_setup() -> None:
    params = PreprocessingParameters()
    grid = params.grid.wavelengths
    assert grid.size == 140 and grid[0] == 6519.0 and grid[-1] == 6732.0
    assert params.grid.medium == "vacuum" and params.normalisation == "minmax"
    assert np.allclose(np.diff(grid), (6732.0 - 6519.0) / 139)


def test_log_grid_is_equally_spaced_in_log() -> None:
    grid = WavelengthGrid(start=4000, end=8000, points=50, spacing="log").wavelengths
    assert np.allclose(np.diff(np.log(grid)), np.log(2) / 49)


def test_linear_flux_is_resampled_exactly_and_minmax_scaled() -> None:
    wavelength = np.linspace(6000.0, 7000.0, 2001)
    flux = 3.0 + 0.01 * (wavelength - 6000.0)
    params = PreprocessingParameters(normalisation="none")
    assert np.allclose(resample(_spectrum(wavelength, flux), params), 3.0 + 0.01 * (params.grid.wavelengths - 6000.0))
    scaled = preprocess(_spectrum(wavelength, flux), PreprocessingParameters())
    assert scaled.dtype == np.float32
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    assert np.allclose(scaled, np.linspace(-1, 1, 140), atol=1e-6)


def test_air_spectrum_line_lands_at_its_vacuum_wavelength() -> None:
    wavelength_air = np.linspace(6400.0, 6800.0, 4001)
    flux = 1.0 + 5.0 * np.exp(-0.5 * ((wavelength_air - 6562.80) / 1.0) ** 2)
    params = PreprocessingParameters(grid=WavelengthGrid(start=6550, end=6580, points=3001))
    out = preprocess(_spectrum(wavelength_air, flux, "air"), params)
    peak = params.grid.wavelengths[np.argmax(out)]
    assert peak == pytest.approx(float(air_to_vacuum(6562.80)), abs=0.02)
    assert peak == pytest.approx(6564.61, abs=0.05)


def test_blur_broadens_a_line_by_sigma_in_native_pixels() -> None:
    wavelength = np.arange(6400.0, 6800.0, 0.25)  # 0.25 Å per native pixel
    flux = 1.0 + np.exp(-0.5 * ((wavelength - 6600.0) / 0.5) ** 2)
    params = PreprocessingParameters(
        grid=WavelengthGrid(start=6550, end=6650, points=4001), blur_sigma_px=7, normalisation="none"
    )
    out = resample(_spectrum(wavelength, flux), params) - 1.0
    grid = params.grid.wavelengths
    width = np.sqrt(np.sum(out * (grid - 6600.0) ** 2) / np.sum(out))
    assert width == pytest.approx(np.hypot(0.5, 7 * 0.25), rel=0.03)


def test_continuum_normalisation_keeps_lines_and_flattens_slope() -> None:
    wavelength = np.linspace(6400.0, 6800.0, 4001)
    continuum = 100.0 + 0.05 * (wavelength - 6400.0)
    flux = continuum * (1.0 + 0.8 * np.exp(-0.5 * ((wavelength - 6564.61) / 3.0) ** 2))
    params = PreprocessingParameters(normalisation="continuum", continuum_degree=1)
    out = preprocess(_spectrum(wavelength, flux), params)
    far = np.abs(params.grid.wavelengths - 6564.61) > 20
    assert np.allclose(out[far], 1.0, atol=0.01)
    assert out.max() == pytest.approx(1.8, abs=0.05)


@pytest.mark.parametrize(
    ("flux", "reason"),
    [
        (np.zeros(2001), RejectReason.EMPTY_FLUX),
        (np.full(2001, 7.0), RejectReason.FLAT_FLUX),
        # a NaN block over a quarter of the grid; a few NaN pixels are interpolated (test_masks.py)
        (np.where(np.abs(np.arange(2001) - 1100) < 55, np.nan, 1.0 + np.arange(2001.0)), RejectReason.NON_FINITE),
    ],
)
def test_quality_checks_reject_with_reason(flux: np.ndarray, reason: RejectReason) -> None:
    with pytest.raises(SpectrumRejected) as info:
        preprocess(_spectrum(np.linspace(6000.0, 7000.0, 2001), flux), PreprocessingParameters())
    assert info.value.reason is reason


def test_non_finite_outside_the_grid_window_is_harmless() -> None:
    wavelength = np.linspace(6000.0, 7000.0, 2001)
    flux = 1.0 + np.sin(wavelength / 10.0)
    flux[:100] = np.nan
    assert np.isfinite(preprocess(_spectrum(wavelength, flux), PreprocessingParameters())).all()


def test_grid_not_covered_names_both_ranges() -> None:
    wavelength = np.linspace(6550.0, 7000.0, 100)
    with pytest.raises(SpectrumRejected, match=r"6550.0-7000.0 Å.*6519.0-6732.0 Å") as info:
        preprocess(_spectrum(wavelength, wavelength.copy()), PreprocessingParameters())
    assert info.value.reason is RejectReason.GRID_NOT_COVERED


def test_invalid_parameters_are_refused_with_field_names() -> None:
    with pytest.raises(ValidationError, match="must be greater than start"):
        WavelengthGrid(start=7000, end=6000)
    with pytest.raises(ValidationError, match="points"):
        WavelengthGrid(points=1)
    with pytest.raises(ValidationError, match="blur_sigma_px"):
        PreprocessingParameters(blur_sigma_px=-1)
