"""Preprocessing: from a spectrum on its native sampling to a fixed-length vector for the network.

The steps, in order, for one spectrum (:func:`preprocess`):

1. express the native wavelengths in the grid's medium (air or vacuum, :mod:`oraculum.spectra.wavelength`);
2. check that the native spectrum covers the grid (else ``grid-not-covered``);
3. bad pixels (``Spectrum.mask``, and non-finite flux): the fraction of native pixels inside the
   grid that are bad is recorded (``SpectrumMeta.masked_fraction``); above
   ``max_masked_fraction``, or when one run of bad pixels leaves a hole wider than
   ``max_masked_gap_A`` in the grid (wide enough to hide a whole line), the spectrum is rejected
   (``masked-pixels``; ``non-finite`` when every bad pixel is NaN/inf, ``empty-flux`` when the
   whole grid is bad pixels of flux 0); else the bad pixels are replaced by linear interpolation
   between their good neighbours (never stored as flux 0, which min-max normalisation would turn
   into a deep fake absorption line);
4. optionally blur with a Gaussian of ``blur_sigma_px`` *native* pixels, to make a
   high-resolution archive look like a low-resolution one (Škoda et al. 2020 blurred Ondřejov
   CCD700 spectra with sigma = 7 px to resemble LAMOST);
5. resample onto the grid by linear interpolation (``numpy.interp``, as the published method);
6. quality checks: flat or empty flux;
7. normalise: per-spectrum min-max to [-1, 1] (the published method), continuum normalisation
   (divide by an iteratively sigma-clipped low-order polynomial), or none.

The defaults reproduce the published setup: 140 points from 6519 to 6732 Å in vacuum, linear
spacing, min-max to [-1, 1]. A spectrum without bad pixels near the grid goes through exactly the
published computation.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import Medium, convert

Normalisation = Literal["minmax", "continuum", "none"]


class WavelengthGrid(BaseModel):
    """The common wavelength grid every spectrum of a dataset is resampled onto."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(
        6519.0, gt=0, description="First grid wavelength in Å (in the grid's medium)."
    )
    end: float = Field(6732.0, gt=0, description="Last grid wavelength in Å (inclusive).")
    points: int = Field(140, ge=2, le=100_000, description="Number of grid points.")
    spacing: Literal["linear", "log"] = Field(
        "linear", description="Points equally spaced in wavelength (linear) or in log wavelength (log)."
    )
    medium: Medium = Field(
        "vacuum", description="Whether grid wavelengths are vacuum or air wavelengths."
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> "WavelengthGrid":
        if self.end <= self.start:
            raise ValueError(f"grid end ({self.end} Å) must be greater than start ({self.start} Å)")
        return self

    @cached_property
    def wavelengths(self) -> np.ndarray:
        """The grid wavelengths in Å (float64, read-only)."""
        if self.spacing == "linear":
            grid = np.linspace(self.start, self.end, self.points)
        else:
            grid = np.geomspace(self.start, self.end, self.points)
        grid.setflags(write=False)
        return grid

    def range_in(self, medium: Medium) -> tuple[float, float]:
        """(start, end) of the grid in Å, expressed in ``medium``."""
        edges = convert(np.array([self.start, self.end]), self.medium, medium)
        return float(edges[0]), float(edges[1])


class PreprocessingParameters(BaseModel):
    """How raw spectra become network inputs. Defaults follow Škoda et al. (2020)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: WavelengthGrid = Field(
        default_factory=WavelengthGrid, description="Wavelength grid to resample onto."
    )
    blur_sigma_px: float | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            "Gaussian blur sigma in native pixels, applied before resampling; use it to match a "
            "high-resolution archive to a low-resolution pool (7 for Ondřejov CCD700 to LAMOST). "
            "Unset: no blur."
        ),
    )
    normalisation: Normalisation = Field(
        "minmax",
        description=(
            "minmax: scale each spectrum to [-1, 1] (published method); continuum: divide by a "
            "sigma-clipped polynomial continuum; none: keep archive flux units."
        ),
    )
    continuum_degree: int = Field(
        2, ge=0, le=10, description="Polynomial degree of the continuum (normalisation=continuum)."
    )
    max_masked_fraction: float = Field(
        0.2,
        ge=0,
        le=1,
        description=(
            "Reject a spectrum when more than this fraction of its native pixels inside the grid "
            "are bad (survey mask bits, no inverse variance, non-finite flux); fewer are "
            "interpolated across."
        ),
    )
    max_masked_gap_A: float = Field(
        10.0,
        gt=0,
        le=100_000,
        description=(
            "Reject a spectrum when one run of bad pixels leaves a hole wider than this (Å, "
            "between the good pixels around it) inside the grid: interpolation across it could "
            "erase a whole line. 10 Å is about 7 LAMOST low-resolution pixels at H-alpha."
        ),
    )


def _reject(reason: RejectReason, message: str) -> SpectrumRejected:
    return SpectrumRejected(reason, message)


def resample(spectrum: Spectrum, params: PreprocessingParameters) -> np.ndarray:
    """The spectrum's flux on ``params.grid`` (float64), before normalisation.

    Bad pixels (``spectrum.mask`` and non-finite flux) are interpolated across; their fraction
    inside the grid is recorded in ``spectrum.meta.masked_fraction``. Raises
    :class:`SpectrumRejected` when the spectrum does not cover the grid or has more bad pixels
    there than ``params.max_masked_fraction``.
    """
    grid = params.grid
    wavelength = spectrum.wavelength_A
    if spectrum.medium != grid.medium:
        wavelength = convert(wavelength, spectrum.medium, grid.medium)
    flux = spectrum.flux
    mask = spectrum.mask
    if wavelength.size < 2 or flux.size != wavelength.size or (mask is not None and mask.size != flux.size):
        raise _reject(
            RejectReason.EMPTY_FLUX,
            f"{flux.size} flux values for {wavelength.size} wavelengths"
            + ("" if mask is None or mask.size == flux.size else f" and {mask.size} mask values"),
        )
    lo, hi = wavelength[0], wavelength[-1]
    if not (lo <= grid.start and hi >= grid.end):
        raise _reject(
            RejectReason.GRID_NOT_COVERED,
            f"spectrum covers {lo:.1f}-{hi:.1f} Å ({grid.medium}), grid needs "
            f"{grid.start:.1f}-{grid.end:.1f} Å",
        )
    # Work on the window the grid needs, plus a margin for the blur kernel and interpolation.
    margin = 2 + (int(np.ceil(4 * params.blur_sigma_px)) if params.blur_sigma_px else 0)
    first = max(int(np.searchsorted(wavelength, grid.start, side="right")) - margin, 0)
    last = min(int(np.searchsorted(wavelength, grid.end, side="left")) + margin, wavelength.size)
    window_wl = wavelength[first:last]
    window_flux = np.asarray(flux[first:last], dtype=np.float64)
    bad = ~np.isfinite(window_flux)
    if mask is not None:
        bad |= mask[first:last]
    spectrum.meta.masked_fraction = 0.0
    if bad.any():
        inside = (window_wl >= grid.start) & (window_wl <= grid.end)
        if not inside.any():  # native pixels coarser than the grid: the ones around it
            inside[:] = True
        fraction = spectrum.meta.masked_fraction = float(bad[inside].mean())
        gap = _widest_gap_A(window_wl, bad, grid.start, grid.end)
        if fraction > params.max_masked_fraction or gap > params.max_masked_gap_A or int((~bad).sum()) < 2:
            raise _masked(window_flux[bad & inside], fraction, gap, params)
        window_flux[bad] = np.interp(window_wl[bad], window_wl[~bad], window_flux[~bad])
    if params.blur_sigma_px:
        # imported here: scipy.ndimage costs ~0.5 s at start-up, paid by every worker process
        from scipy.ndimage import gaussian_filter1d

        window_flux = gaussian_filter1d(window_flux, params.blur_sigma_px, mode="nearest")
    return np.interp(grid.wavelengths, window_wl, window_flux)


def _widest_gap_A(wavelength: np.ndarray, bad: np.ndarray, start: float, end: float) -> float:
    """The widest hole a run of bad pixels leaves in [start, end]: from the good pixel before the
    run to the good pixel after it (the interpolation baseline), clipped to the grid."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], bad.view(np.int8), [0]))))
    first, last = edges[0::2], edges[1::2] - 1
    left = wavelength[np.maximum(first - 1, 0)]
    right = wavelength[np.minimum(last + 1, wavelength.size - 1)]
    return float(np.max(np.minimum(right, end) - np.maximum(left, start), initial=0.0))


def _masked(values: np.ndarray, fraction: float, gap: float, params: PreprocessingParameters) -> SpectrumRejected:
    """The rejection for too many bad pixels inside the grid; ``values``: their flux there."""
    grid = params.grid
    where = f"within {grid.start:.1f}-{grid.end:.1f} Å"
    share = (
        f"{fraction:.0%} of the pixels, max_masked_fraction {params.max_masked_fraction:g}; widest "
        f"hole {gap:.1f} Å, max_masked_gap_A {params.max_masked_gap_A:g}"
    )
    if not np.isfinite(values).any():
        return _reject(RejectReason.NON_FINITE, f"{values.size} non-finite flux values {where} ({share})")
    if fraction == 1.0 and (values == 0).all():
        return _reject(RejectReason.EMPTY_FLUX, f"flux is zero everywhere on the grid: all pixels {where} are masked")
    return _reject(
        RejectReason.MASKED_PIXELS,
        f"{values.size} bad pixels {where} ({share}): survey mask bits, no inverse variance or "
        "non-finite flux",
    )


def normalise(flux: np.ndarray, params: PreprocessingParameters) -> np.ndarray:
    """Quality checks, then the chosen normalisation; float32 result."""
    low = flux.min()
    high = flux.max()
    if high == 0 and low == 0:
        raise _reject(RejectReason.EMPTY_FLUX, "flux is zero everywhere on the grid")
    span = high - low
    if span <= 1e-12 * max(abs(high), abs(low)):
        raise _reject(RejectReason.FLAT_FLUX, f"flux is constant ({high:g}) on the grid")
    if params.normalisation == "minmax":
        return (2.0 * (flux - low) / span - 1.0).astype(np.float32)
    if params.normalisation == "continuum":
        return (flux / continuum(flux, params)).astype(np.float32)
    return flux.astype(np.float32)


def continuum(flux: np.ndarray, params: PreprocessingParameters, iterations: int = 5) -> np.ndarray:
    """A sigma-clipped polynomial fit to ``flux`` on the grid: lines (both emission and
    absorption) are clipped at 2.5 sigma so they do not pull the continuum."""
    x = np.linspace(-1.0, 1.0, flux.size)
    keep = np.ones(flux.size, dtype=bool)
    fit = np.full_like(flux, np.median(flux))
    for _ in range(iterations):
        if keep.sum() <= params.continuum_degree + 1:
            break
        coefficients = np.polynomial.polynomial.polyfit(x[keep], flux[keep], params.continuum_degree)
        fit = np.polynomial.polynomial.polyval(x, coefficients)
        residual = flux - fit
        sigma = residual[keep].std()
        new_keep = np.abs(residual) < 2.5 * sigma if sigma > 0 else keep
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if (fit <= 0).any():
        raise _reject(
            RejectReason.FLAT_FLUX,
            "continuum fit is not positive everywhere (flux near zero); use normalisation=minmax",
        )
    return fit


def preprocess(spectrum: Spectrum, params: PreprocessingParameters) -> np.ndarray:
    """The network input for one spectrum: float32 vector of ``params.grid.points`` values.

    Raises :class:`SpectrumRejected` with the reason when the spectrum is unusable.
    """
    return normalise(resample(spectrum, params), params)
