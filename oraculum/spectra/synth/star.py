"""One synthetic star: its drawn parameters and its spectrum, before any file is written.

:func:`simulate` draws a spectrum of one of the labels in :data:`CLASSES` on any vacuum
wavelength grid (Å), with its noise-free parts for tests and diagnostics; how it becomes a
LAMOST-layout file is :mod:`oraculum.spectra.synth.lamost_fits`, and how many of each label an
archive gets is :mod:`oraculum.spectra.synth.generator`.

The physical model, all wavelengths in vacuum Å, for one spectrum (:func:`simulate`; the line
list and the profile shapes are in :mod:`oraculum.spectra.synth.lines`):

* **Continuum.** Planck's law ``B_lambda(T) ~ lambda^-5 / (exp(hc / lambda k T) - 1)`` for an
  effective temperature ``T`` in 4000-20000 K, reddened by interstellar extinction
  ``A(lambda) = 3.1 E(B-V) (5500 Å / lambda)^1.3`` (a power-law stand-in for the optical
  extinction curve), times a smooth random instrument response ``exp(sum_k a_k P_k(x))``
  (Legendre polynomials of degree 1-3, ``a_k ~ N(0, 0.04)``) and a small step at the
  blue/red arm junction near 5800 Å, as imperfect LAMOST flux calibration leaves. The flux scale
  tracks S/N (real DR2 files have continuum counts of roughly 6-40 x SNRR near 6500 Å).
  Temperatures follow a LAMOST-like mix (72 % FGK 4000-7200 K, 18 % A/F 7200-10000 K,
  10 % B 10000-20000 K); emission-line stars lean hot (half of them are drawn from 9000-20000 K,
  70 % of the double-peak ones), as Be stars do, but cool emitters (T Tauri, dMe) occur too.
  ``SUBCLASS`` is the MK type nearest to ``T`` (Pecaut & Mamajek 2013 dwarf scale).
* **Absorption.** Balmer lines H-alpha 6564.61, H-beta 4862.68, H-gamma 4341.69,
  H-delta 4102.89, H-epsilon 3971.20 and H8 3890.16 Å as pseudo-Voigt profiles (Thompson et al.
  1987) whose depth and Lorentzian (Stark) width peak for A stars near 9500 K: the observed
  H-alpha depth goes from about 0.17 (K) through 0.25 (G5) and 0.4 (F0) to 0.5 (A), as measured
  on real LAMOST DR2 spectra in ``shared/data``. Metal lines grow towards cool stars: Ca II K and H
  (3934.78, 3969.59), Ca I 4227.9, the CH G band near 4306, Fe I 4384.8 and 5271.0, Mg b
  (5168.8, 5174.1, 5185.0), Na D (5891.6, 5897.6, plus an interstellar part that grows with
  E(B-V)), the Ca II triplet (8500.4, 8544.4, 8664.5), plus a fixed forest of weak lines (denser in
  the blue) that blankets cool-star spectra. Hot stars get He I 4472.7 and 6679.99. Telluric
  O2 (B band ~6882, A band ~7607) and H2O bands are applied in the observer's frame. Every
  stellar line is Doppler-shifted by a radial velocity ``v ~ N(0, 25 km/s)``. Line widths include
  the instrumental profile, ``sigma = lambda / (2.355 R)`` with ``R = 1800``.
* **Emission** (``emission``): a Gaussian at H-alpha with amplitude 0.2-5 x continuum
  (log-uniform, so weak cases are common) and sigma 2-8 Å, added on top of the absorption
  profile: a weak emission line only fills in part of the absorption trough, which is what makes
  weak cases genuinely hard. Half of them also show H-beta emission at 15-50 % of that
  amplitude; a fifth show narrow nebular [N II] 6549.86/6585.27 (HII-region contamination).
* **Double peak** (``double-peak``): two Gaussians separated by 3-12 Å around H-alpha with
  sigma 0.18-0.28 x the separation (at least 0.75 Å), the stronger peak 0.3-4 x continuum, a
  violet-to-red peak ratio V/R log-uniform in 0.5-2, and a narrow central (shell) dip that removes
  10-60 % of the emission at line centre; sometimes a weaker double-peaked H-beta. Below about
  4 Å separation the peaks are 2-3 LAMOST pixels apart and often merge (about 70 % of them still
  show two maxima noise-free, against 90 % above 7 Å): those are the hard double-peak cases.
* **Noise.** Gaussian, per pixel ``sigma = C_r sqrt(max(F, 0) / C_r + s^2) / (sqrt(1 + s^2)
  snr t(lambda))``, where ``F`` is the noise-free flux, ``C_r`` the median continuum in
  6000-7000 Å, ``s = 0.15`` a sky/read floor and ``t`` the relative throughput (1 in the red,
  about 0.25 at 4000 Å, calibrated on real DR2 spectra). So the per-pixel S/N of the continuum in
  the r band is ``snr`` (that is ``SNRR``), it falls towards the blue and with fainter flux, as in
  real LAMOST data. ``snr`` is log-uniform in ``snr_range``. The inverse-variance row is
  ``1 / sigma^2``, set to 0 where the pipeline would give up (continuum S/N below 3, and
  beyond about 9000 Å), as real files do.
* **Bad** (``bad``): an exact mix of all-NaN flux (30 %), all-zero flux (25 %), a block of NaNs
  (and zero ivar) 20-120 Å wide around H-alpha (30 %) and files whose bytes are cut in the middle
  of the data unit (15 %; for ``.fits.gz`` the gzip stream is cut). Each kind is present as soon
  as there are 4 bad files, so small runs exercise every reject path. The underlying star is an
  ordinary absorption-line star.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from oraculum.spectra.synth.lines import (
    BALMER,
    CA_HK_A,
    CA_TRIPLET_A,
    G_BAND_A,
    HALPHA_A,
    HBETA_A,
    HEI_4472_A,
    HEI_6678_A,
    METALS,
    NA_D_A,
    NII_A,
    TELLURIC,
    double_peak_profile,
    gaussian,
    instrument_sigma_A,
    line_absorption,
    metal_forest,
)

__all__ = [
    "BAD_KINDS",
    "CLASSES",
    "C_KM_S",
    "RESOLVING_POWER",
    "TARGET_CLASSES",
    "SimulatedSpectrum",
    "SpectrumParams",
    "cached_grid",
    "fast_median",
    "simulate",
    "spectral_type",
    "synth_spectrum",
]

#: Label names written to ``labels.csv``; the order is the class index order.
CLASSES: tuple[str, ...] = ("absorption", "emission", "double-peak", "bad")
#: The labels the active-learning loop looks for.
TARGET_CLASSES: tuple[str, ...] = ("emission", "double-peak")
#: How a ``bad`` file is broken, and how often (weights sum to 1).
BAD_KINDS: dict[str, float] = {"nan": 0.30, "zero": 0.25, "nan-block": 0.30, "truncated": 0.15}

#: LAMOST low-resolution resolving power; sets the instrumental line width.
RESOLVING_POWER = 1800.0

#: The speed of light in km/s (Doppler shifts, the redshift card).
C_KM_S = 299_792.458
_HC_OVER_K_A_K = 1.438_776_877e8  # second radiation constant hc/k in Å K
_SKY_FLOOR = 0.15

#: Relative throughput-and-sky factor t(lambda) of the S/N (1 in the red arm), calibrated on the
#: real DR2 spectra in shared/data (S/N ratios between 4000, 5500, 6500 and 8500 Å).
_THROUGHPUT_NODES_A = np.array([3650.0, 3900.0, 4000.0, 4500.0, 5500.0, 5700.0, 6100.0, 6500.0, 8500.0, 8900.0, 9150.0])
_THROUGHPUT_VALUES = np.array([0.08, 0.20, 0.25, 0.40, 0.55, 0.58, 0.95, 1.00, 1.04, 0.90, 0.60])

#: Wavelength windows (Å) for the per-band S/N cards SNRU, SNRG, SNRI, SNRZ (SNRR is the drawn snr).
_BANDS_A: dict[str, tuple[float, float]] = {
    "u": (3700.0, 3950.0),
    "g": (4100.0, 5400.0),
    "i": (7000.0, 8300.0),
    "z": (8300.0, 9000.0),
}


#: Effective temperature (K) of MK dwarf types, Pecaut & Mamajek (2013), for SUBCLASS.
_SPECTRAL_TYPES: tuple[tuple[str, float], ...] = (
    ("B1", 26000.0), ("B2", 20600.0), ("B3", 17000.0), ("B5", 15700.0), ("B6", 14500.0),
    ("B7", 14000.0), ("B8", 12500.0), ("B9", 10700.0), ("A0", 9700.0), ("A1", 9300.0),
    ("A2", 8800.0), ("A3", 8600.0), ("A5", 8100.0), ("A7", 7650.0), ("F0", 7220.0),
    ("F2", 6810.0), ("F5", 6510.0), ("F8", 6170.0), ("G0", 5920.0), ("G2", 5770.0),
    ("G5", 5660.0), ("G8", 5490.0), ("K0", 5280.0), ("K2", 5040.0), ("K3", 4830.0),
    ("K4", 4600.0), ("K5", 4450.0), ("K7", 4050.0), ("M0", 3850.0),
)
_TYPE_NAMES = [name for name, _ in _SPECTRAL_TYPES]
_TYPE_LOG_T = np.log([t for _, t in _SPECTRAL_TYPES])


@dataclass
class SpectrumParams:
    """The random draws behind one synthetic spectrum (NaN where not applicable).

    Units: temperature K, radial velocity km/s, wavelengths and widths Å (vacuum), amplitudes in
    units of the local continuum.
    """

    label: str
    teff_K: float
    subclass: str
    snr: float
    rv_km_s: float
    ebv: float
    ha_amplitude: float = math.nan
    ha_sigma_A: float = math.nan
    hb_amplitude: float = math.nan
    nii_amplitude: float = math.nan
    dp_separation_A: float = math.nan
    dp_sigma_A: float = math.nan
    dp_vr_ratio: float = math.nan
    dp_dip: float = math.nan
    bad_kind: str = ""


@dataclass
class SimulatedSpectrum:
    """One synthetic spectrum with its noise-free parts, for tests and diagnostics.

    Attributes:
        wavelength_A: vacuum wavelengths (Å).
        flux: observed flux (noise added, bad-file damage applied except truncation).
        ivar: inverse variance of ``flux`` (0 = no information).
        continuum: the continuum without any line (same units as flux).
        lines: the multiplicative line absorption (<= 1, stellar, interstellar and telluric).
        model: the noise-free flux, ``continuum * (lines + emission)``.
        params: the random draws.
    """

    wavelength_A: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    continuum: np.ndarray
    lines: np.ndarray
    model: np.ndarray
    params: SpectrumParams


def spectral_type(teff_K: float) -> str:
    """The MK dwarf type (e.g. ``'G2'``) whose temperature is nearest to ``teff_K`` in log T."""
    return _TYPE_NAMES[int(np.argmin(np.abs(_TYPE_LOG_T - math.log(teff_K))))]


def fast_median(values: np.ndarray) -> float:
    """Median via one ``partition`` (``np.median`` costs ~5x more on small arrays, per file)."""
    n = values.size
    k = n // 2
    part = np.partition(values, k)
    if n % 2:
        return float(part[k])
    return 0.5 * float(part[k] + part[:k].max())


@dataclass(frozen=True)
class _Grid:
    """Everything about a wavelength grid that does not change from spectrum to spectrum."""

    wl: np.ndarray
    inv_wl5: np.ndarray  # (lambda / 5500 Å)^-5, the Planck prefactor
    reddening: np.ndarray  # (5500 / lambda)^1.3 - (5500 / 6500)^1.3
    legendre: np.ndarray  # P_1..P_3 of x in [-1, 1] over 3700-9100 Å, shape (3, n)
    arm_step: np.ndarray  # 0 in the blue arm, 1 in the red arm, smooth near 5800 Å
    throughput: np.ndarray
    in_r: np.ndarray  # boolean mask of 6000-7000 Å (or everything if the grid misses it)
    bands: dict[str, slice]  # contiguous pixel windows of the S/N bands
    forest_tau: np.ndarray


_GRID_CACHE: dict[tuple[int, float, float, float, float], _Grid] = {}


def cached_grid(wavelength_A: np.ndarray, resolving_power: float) -> _Grid:
    """The cached :class:`_Grid` for these wavelengths: all spectra of a run share one grid."""
    n = wavelength_A.size
    key = (n, float(wavelength_A[0]), float(wavelength_A[-1]), float(wavelength_A[n // 2]), float(resolving_power))
    cached = _GRID_CACHE.get(key)
    if cached is not None:
        return cached
    wl = np.array(wavelength_A, dtype=np.float64)
    if not np.all(np.diff(wl) > 0):
        raise ValueError("wavelength_vacuum_A must be a 1-D strictly increasing array of Å")
    x = (np.log(wl) - math.log(3700.0)) / (math.log(9100.0) - math.log(3700.0)) * 2.0 - 1.0
    legendre = np.stack([np.polynomial.legendre.legval(x, np.eye(4)[k]) for k in (1, 2, 3)])
    in_r = (wl > 6000.0) & (wl < 7000.0)
    grid = _Grid(
        wl=wl,
        inv_wl5=(wl / 5500.0) ** -5,
        reddening=(5500.0 / wl) ** 1.3 - (5500.0 / 6500.0) ** 1.3,
        legendre=legendre,
        arm_step=0.5 * (1.0 + np.tanh((wl - 5800.0) / 30.0)),
        throughput=np.interp(wl, _THROUGHPUT_NODES_A, _THROUGHPUT_VALUES),
        in_r=in_r if in_r.any() else np.ones(n, dtype=bool),
        bands={
            band: slice(int(wl.searchsorted(low, "right")), int(wl.searchsorted(high, "left")))
            for band, (low, high) in _BANDS_A.items()
        },
        forest_tau=metal_forest(wl, resolving_power),
    )
    for array in (grid.wl, grid.inv_wl5, grid.reddening, grid.legendre, grid.arm_step, grid.throughput):
        array.setflags(write=False)
    grid.forest_tau.setflags(write=False)
    if len(_GRID_CACHE) >= 16:
        _GRID_CACHE.clear()
    _GRID_CACHE[key] = grid
    return grid


# --------------------------------------------------------------------------------------------
# one spectrum


def _draw_teff(rng: np.random.Generator, label: str) -> float:
    """Effective temperature (K): LAMOST-like mix; emission-line stars lean hot (Be stars)."""
    hot_share = {"emission": 0.5, "double-peak": 0.7}.get(label, 0.0)
    if rng.random() < hot_share:
        return float(math.exp(rng.uniform(math.log(9000.0), math.log(20000.0))))
    u = rng.random()
    if u < 0.72:
        return float(rng.uniform(4000.0, 7200.0))
    if u < 0.90:
        return float(rng.uniform(7200.0, 10000.0))
    return float(math.exp(rng.uniform(math.log(10000.0), math.log(20000.0))))


def _hydrogen_strength(teff_K: float) -> float:
    """Balmer strength in [0, 1], peaking for A stars (~9500 K), falling faster to the cool side."""
    width = 0.33 if teff_K < 9500.0 else 0.55
    return math.exp(-0.5 * (math.log(teff_K / 9500.0) / width) ** 2)


def _metal_strength(teff_K: float) -> float:
    """Metal-line strength in [0, 1]: none above ~7800 K, full at 4000 K."""
    return float(min(1.0, max(0.0, (7800.0 - teff_K) / 3800.0)) ** 0.8)


def _continuum(rng: np.random.Generator, grid: _Grid, teff_K: float, ebv: float, snr: float) -> np.ndarray:
    """Reddened Planck shape x instrument response, scaled to counts that track S/N."""
    planck = grid.inv_wl5 / np.expm1(_HC_OVER_K_A_K / (grid.wl * teff_K))
    planck /= (6500.0 / 5500.0) ** -5 / math.expm1(_HC_OVER_K_A_K / (6500.0 * teff_K))
    log_response = rng.normal(0.0, 0.04, 3) @ grid.legendre
    log_response += rng.normal(0.0, 0.03) * grid.arm_step  # ~ log(1 + step)
    log_response -= 0.4 * math.log(10.0) * 3.1 * ebv * grid.reddening
    counts_per_snr = 10.0 ** rng.uniform(math.log10(6.0), math.log10(40.0))
    continuum: np.ndarray = planck * np.exp(log_response) * (snr * counts_per_snr)
    return continuum


def _absorption_factor(
    rng: np.random.Generator, grid: _Grid, teff_K: float, ebv: float, doppler: float, resolving_power: float
) -> np.ndarray:
    """Multiplicative line absorption (<= 1); stellar lines shifted by ``doppler`` = 1 + v/c."""
    centres: list[float] = []
    depths: list[float] = []
    sigmas: list[float] = []
    gammas: list[float] = []

    def line(centre: float, depth: float, gamma: float = 0.0, sigma: float | None = None) -> None:
        centres.append(centre)
        depths.append(depth)
        sigmas.append(centre / (2.354_820_045 * resolving_power) if sigma is None else sigma)
        gammas.append(gamma)

    h = _hydrogen_strength(teff_K)
    depth_ha = 0.16 + 0.40 * h
    gamma_ha = 0.3 + 7.0 * h
    for rest, depth_mult, width_mult in BALMER:
        depth = min(0.9, depth_ha * (1.0 if h < 0.3 else depth_mult) * rng.uniform(0.9, 1.1))
        line(rest * doppler, depth, gamma_ha * width_mult * (rest / HALPHA_A))
    m = _metal_strength(teff_K)
    ca = min(1.0, max(0.0, (10500.0 - teff_K) / 5000.0))
    for rest in CA_HK_A:
        line(rest * doppler, 0.05 + 0.7 * ca, 0.3 + 6.0 * ca**2)
    for rest in CA_TRIPLET_A:
        line(rest * doppler, 0.05 + 0.3 * m, 0.5 + 1.5 * m)
    metallicity = 0.0
    if m > 0.0:
        metallicity = rng.uniform(0.6, 1.4)
        for rest, depth, gamma in METALS:
            line(rest * doppler, min(0.9, depth * m * metallicity), 0.1 + gamma * m)
        line(G_BAND_A * doppler, 0.25 * m * metallicity, sigma=6.0)
    if teff_K > 10000.0:
        he = min(1.0, (teff_K - 10000.0) / 8000.0)
        for rest in (HEI_4472_A, HEI_6678_A):
            line(rest * doppler, 0.12 * he, sigma=1.3 * rest / (2.354_820_045 * resolving_power))
    # interstellar Na D, at rest (the ISM does not share the star's velocity); grows with E(B-V)
    for rest in NA_D_A:
        line(rest, min(0.5, 0.3 * ebv))
    for centre, sigma, low, high in TELLURIC:
        line(centre, rng.uniform(low, high), sigma=sigma)
    log_factor = line_absorption(grid.wl, centres, depths, sigmas, gammas)
    if m > 0.0:
        tau = grid.forest_tau
        if doppler != 1.0:
            tau = np.interp(grid.wl / doppler, grid.wl, tau)
        log_factor -= (m * metallicity) * tau
    factor: np.ndarray = np.exp(log_factor)
    return factor


def _emission(
    rng: np.random.Generator, wl: np.ndarray, label: str, doppler: float, params: SpectrumParams
) -> np.ndarray:
    """Emission in units of the continuum (added to the absorption factor)."""
    emission = np.zeros_like(wl)
    if label == "emission":
        amplitude = float(math.exp(rng.uniform(math.log(0.2), math.log(5.0))))
        sigma = float(rng.uniform(2.0, 8.0))
        emission += amplitude * gaussian(wl, HALPHA_A * doppler, sigma)
        params.ha_amplitude, params.ha_sigma_A = amplitude, sigma
        if rng.random() < 0.5:
            hb = amplitude * float(rng.uniform(0.15, 0.5))
            emission += hb * gaussian(wl, HBETA_A * doppler, sigma * HBETA_A / HALPHA_A)
            params.hb_amplitude = hb
        if rng.random() < 0.2:  # nebular [N II] from an HII region along the line of sight
            nii = float(rng.uniform(0.05, 0.3)) * amplitude
            nii_sigma = instrument_sigma_A(HALPHA_A, RESOLVING_POWER)
            emission += nii / 3.0 * gaussian(wl, NII_A[0], nii_sigma)
            emission += nii * gaussian(wl, NII_A[1], nii_sigma)
            params.nii_amplitude = nii
    elif label == "double-peak":
        separation = float(rng.uniform(3.0, 12.0))
        sigma = max(0.75, separation * float(rng.uniform(0.18, 0.28)))
        amplitude = float(math.exp(rng.uniform(math.log(0.3), math.log(4.0))))
        vr = float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))
        dip = float(rng.uniform(0.1, 0.6))
        emission += double_peak_profile(wl, HALPHA_A * doppler, separation, sigma, amplitude, vr, dip)
        params.ha_amplitude, params.dp_separation_A, params.dp_sigma_A = amplitude, separation, sigma
        params.dp_vr_ratio, params.dp_dip = vr, dip
        if rng.random() < 0.4:
            scale = HBETA_A / HALPHA_A
            hb = amplitude * float(rng.uniform(0.15, 0.4))
            emission += double_peak_profile(
                wl, HBETA_A * doppler, separation * scale, max(0.6, sigma * scale), hb, vr, dip
            )
            params.hb_amplitude = hb
    return emission


def _draw_bad_kind(rng: np.random.Generator) -> str:
    kinds = list(BAD_KINDS)
    return kinds[int(rng.choice(len(kinds), p=list(BAD_KINDS.values())))]


def simulate(
    rng: np.random.Generator,
    label: str,
    wavelength_vacuum_A: np.ndarray,
    snr: float,
    resolving_power: float = RESOLVING_POWER,
    *,
    bad_kind: str | None = None,
) -> SimulatedSpectrum:
    """Draw one synthetic spectrum of class ``label`` on the given vacuum wavelengths (Å).

    ``snr`` is the per-pixel continuum S/N in the r band (6000-7000 Å); see the module docstring
    for the model. For ``label='bad'`` the damage is applied to ``flux``/``ivar`` except for
    ``'truncated'`` (a file-level defect, applied by :func:`~oraculum.spectra.synth.generator.generate`), recorded in
    ``params.bad_kind``; ``bad_kind`` chooses the damage (default: drawn from :data:`BAD_KINDS`).
    ``resolving_power`` sets the instrumental line width (LAMOST low resolution: 1800).
    """
    if label not in CLASSES:
        raise ValueError(f"label must be one of {list(CLASSES)}, got {label!r}")
    if bad_kind is not None and (label != "bad" or bad_kind not in BAD_KINDS):
        raise ValueError(f"bad_kind must be one of {list(BAD_KINDS)} and only for label 'bad', got {bad_kind!r}")
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}")
    wl = np.asarray(wavelength_vacuum_A, dtype=np.float64)
    if wl.ndim != 1 or wl.size < 2:
        raise ValueError("wavelength_vacuum_A must be a 1-D strictly increasing array of Å")

    star_label = "absorption" if label == "bad" else label
    teff = _draw_teff(rng, star_label)
    ebv = float(min(1.0, rng.exponential(0.15)))
    rv = float(np.clip(rng.normal(0.0, 25.0), -150.0, 150.0))
    doppler = 1.0 + rv / C_KM_S
    params = SpectrumParams(
        label=label, teff_K=teff, subclass=spectral_type(teff), snr=float(snr), rv_km_s=rv, ebv=ebv
    )
    grid = cached_grid(wl, resolving_power)
    continuum = _continuum(rng, grid, teff, ebv, snr)
    lines = _absorption_factor(rng, grid, teff, ebv, doppler, resolving_power)
    emission = _emission(rng, wl, star_label, doppler, params)
    model = continuum * (lines + emission)

    c_r = fast_median(continuum[grid.in_r])
    sigma = np.sqrt(np.maximum(model, 0.0) * c_r + (_SKY_FLOOR * c_r) ** 2)
    sigma /= grid.throughput * (math.sqrt(1.0 + _SKY_FLOOR**2) * snr)
    flux = model + sigma * rng.standard_normal(wl.size)
    ivar = 1.0 / sigma**2
    ivar[(continuum / sigma < 3.0) | (wl > rng.uniform(9000.0, 9020.0))] = 0.0

    if label == "bad":
        kind = bad_kind if bad_kind is not None else _draw_bad_kind(rng)
        params.bad_kind = kind
        if kind == "nan":
            flux[:] = np.nan
            ivar[:] = 0.0
        elif kind == "zero":
            flux[:] = 0.0
            ivar[:] = 0.0
        elif kind == "nan-block":
            block = (wl > HALPHA_A - rng.uniform(10.0, 60.0)) & (wl < HALPHA_A + rng.uniform(10.0, 60.0))
            flux[block] = np.nan
            ivar[block] = 0.0
    return SimulatedSpectrum(wl, flux, ivar, continuum, lines, model, params)


def synth_spectrum(rng: np.random.Generator, label: str, wavelength_vacuum_A: np.ndarray, snr: float) -> np.ndarray:
    """The observed flux row of one synthetic spectrum (see :func:`simulate` for everything else)."""
    return simulate(rng, label, wavelength_vacuum_A, snr).flux
