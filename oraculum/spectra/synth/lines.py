"""The spectral lines of the synthetic stars: where they are (vacuum Å) and what shape they have.

Line positions are vacuum wavelengths in Å, like the LAMOST grid they are drawn on; lines known by
their air wavelength (most metal lines) are converted once, at import, with
:func:`oraculum.spectra.wavelength.air_to_vacuum`. The profiles: Gaussians, the pseudo-Voigt
absorption of Thompson, Cox & Hastings (1987) summed over all lines in one vectorised pass
(:func:`line_absorption`), a Be-star double-peaked disc emission (:func:`double_peak_profile`)
and a fixed forest of weak metal lines (:func:`metal_forest`). Which lines a star shows, and how
strongly, is decided in :mod:`oraculum.spectra.synth.star`.
"""

from __future__ import annotations

import math

import numpy as np

from oraculum.spectra.wavelength import LINES_VACUUM_A, air_to_vacuum

__all__ = [
    "BALMER",
    "CA_HK_A",
    "CA_TRIPLET_A",
    "G_BAND_A",
    "HALPHA_A",
    "HBETA_A",
    "HEI_4472_A",
    "HEI_6678_A",
    "METALS",
    "NA_D_A",
    "NII_A",
    "TELLURIC",
    "double_peak_profile",
    "gaussian",
    "instrument_sigma_A",
    "line_absorption",
    "metal_forest",
]

#: Emission and absorption line centres of hydrogen, [N II] and He I (vacuum Å).
HALPHA_A = LINES_VACUUM_A["H-alpha"]  # 6564.61 Å, vacuum
NII_A = (LINES_VACUUM_A["[N II] 6548"], LINES_VACUUM_A["[N II] 6583"])
HEI_6678_A = LINES_VACUUM_A["He I 6678"]
HBETA_A = 4862.68

#: Balmer lines (vacuum Å) with depth and Stark-width multipliers relative to H-alpha: the
#: higher members are relatively deeper at LAMOST resolution in A stars.
BALMER: tuple[tuple[float, float, float], ...] = (
    (HALPHA_A, 1.00, 1.00),
    (HBETA_A, 1.20, 1.10),
    (4341.69, 1.30, 1.10),
    (4102.89, 1.35, 1.10),
    (3971.20, 1.30, 1.00),
    (3890.16, 1.20, 0.90),
)


def _vac(air_A: float) -> float:
    """The vacuum wavelength (Å) of a line known by its air wavelength ``air_A`` (Å)."""
    return float(air_to_vacuum(air_A))


# Metal lines: (vacuum Å, depth at full metal strength, Lorentzian half width at full strength Å).
METALS: tuple[tuple[float, float, float], ...] = (
    (_vac(4226.73), 0.45, 0.8),  # Ca I
    (_vac(4383.55), 0.25, 0.3),  # Fe I
    (_vac(5167.32), 0.30, 0.8),  # Mg b
    (_vac(5172.68), 0.35, 0.9),
    (_vac(5183.60), 0.35, 0.9),
    (_vac(5269.54), 0.22, 0.3),  # Fe I
    (_vac(5889.95), 0.35, 0.9),  # Na D2
    (_vac(5895.92), 0.30, 0.8),  # Na D1
)
CA_HK_A = (_vac(3933.66), _vac(3968.47))  # 3934.78, 3969.59
CA_TRIPLET_A = (_vac(8498.02), _vac(8542.09), _vac(8662.14))
G_BAND_A = _vac(4304.4)
HEI_4472_A = _vac(4471.48)
NA_D_A = (_vac(5889.95), _vac(5895.92))

#: Telluric bands in the observer's frame (vacuum Å): centre, Gaussian sigma, depth range.
TELLURIC: tuple[tuple[float, float, float, float], ...] = (
    (_vac(6880.0), 5.0, 0.05, 0.15),  # O2 B band
    (_vac(7605.0), 8.0, 0.15, 0.35),  # O2 A band
    (_vac(7250.0), 40.0, 0.02, 0.06),  # H2O
    (_vac(8230.0), 60.0, 0.02, 0.08),  # H2O
)


def gaussian(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """A unit-height Gaussian of width ``sigma`` centred on ``centre`` (all in Å)."""
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def instrument_sigma_A(wavelength_A: float, resolving_power: float) -> float:
    """Gaussian sigma (Å) of the instrumental profile at ``wavelength_A``: FWHM = lambda / R."""
    return wavelength_A / (2.354_820_045 * resolving_power)


def double_peak_profile(
    wavelength_A: np.ndarray,
    centre_A: float,
    separation_A: float,
    sigma_A: float,
    amplitude: float,
    vr_ratio: float,
    dip: float,
) -> np.ndarray:
    """A Be-star disc emission profile in units of the continuum.

    Two Gaussians of width ``sigma_A`` at ``centre_A -/+ separation_A / 2``; the stronger peak
    has height ``amplitude``, the violet one is ``vr_ratio`` times the red one. A narrow shell
    absorption at the centre (sigma = separation / 6) removes the fraction ``dip`` of the
    emission there, deepening the central minimum as in discs seen closer to edge-on; it
    multiplies the emission rather than subtracting from it, so the profile never goes negative.
    """
    if vr_ratio >= 1.0:
        violet, red = amplitude, amplitude / vr_ratio
    else:
        violet, red = amplitude * vr_ratio, amplitude
    half = 0.5 * separation_A
    profile = violet * gaussian(wavelength_A, centre_A - half, sigma_A)
    profile += red * gaussian(wavelength_A, centre_A + half, sigma_A)
    profile *= 1.0 - dip * gaussian(wavelength_A, centre_A, separation_A / 6.0)
    return profile


def metal_forest(wl: np.ndarray, resolving_power: float) -> np.ndarray:
    """Optical depth of a fixed forest of weak metal lines, at full metal strength.

    The line list is drawn once from a fixed seed (real metal lines sit at fixed wavelengths),
    denser in the blue (uniform in 1/lambda).
    """
    rng = np.random.default_rng(20_130_101)
    centres = 1.0 / rng.uniform(1.0 / 9100.0, 1.0 / 3700.0, 700)
    depths = rng.exponential(0.05, centres.size)
    tau = np.zeros(wl.size)
    sigma = wl / (2.354_820_045 * resolving_power)
    for centre, depth in zip(centres, depths, strict=True):
        lo, hi = np.searchsorted(wl, (centre - 12.0, centre + 12.0))
        if hi > lo:
            tau[lo:hi] += depth * np.exp(-0.5 * ((wl[lo:hi] - centre) / sigma[lo:hi]) ** 2)
    return tau


def line_absorption(
    wl: np.ndarray, centres: list[float], depths: list[float], sigmas: list[float], gammas: list[float]
) -> np.ndarray:
    """Log of the product of ``1 - depth * pseudo_voigt`` over all lines, in one vectorised pass.

    Each line is computed only in a window (6 Gaussian sigma, or 30 Lorentz half widths where the
    wing has fallen to ~1e-3 of the depth, below the noise at S/N 150), and the logarithms of the
    per-line factors are summed with ``bincount``: a Python loop over ~30 lines costs more than
    the whole rest of a spectrum.
    """
    centre = np.asarray(centres)
    depth = np.asarray(depths)
    sigma = np.asarray(sigmas)
    gamma = np.asarray(gammas)
    reach = np.maximum(6.0 * sigma, 30.0 * gamma)
    lo = wl.searchsorted(centre - reach)
    hi = wl.searchsorted(centre + reach)
    lengths = np.where(depth > 0.0, np.maximum(hi - lo, 0), 0)
    line = np.repeat(np.arange(centre.size), lengths)
    idx = np.arange(line.size) + np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)
    # Thompson, Cox & Hastings (1987) pseudo-Voigt: common FWHM f and Lorentz fraction eta
    fg = 2.354_820_045 * sigma
    fl = 2.0 * gamma
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    ratio = fl / f
    eta = (1.36603 * ratio - 0.47719 * ratio**2 + 0.11116 * ratio**3)[line]
    u2 = ((wl[idx] - centre[line]) / (0.5 * f[line])) ** 2
    profile = eta / (1.0 + u2) + (1.0 - eta) * np.exp(-math.log(2.0) * u2)
    return np.bincount(idx, weights=np.log1p(-depth[line] * profile), minlength=wl.size)
