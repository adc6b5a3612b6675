"""Synthetic stellar spectra in the real LAMOST low-resolution file format, with ground-truth labels.

Why this exists: the demo, the tests, the benchmarks (up to millions of spectra) and the
active-learning backtests all need data at any scale with known labels, and none of them may
depend on the real archive being present. Everything written here is marked synthetic
(``DATA_V = 'SYNTHETIC'``, ``AUTHOR = 'oraculum.spectra.synth'`` and a ``COMMENT`` card), so every figure
made from it can say so.

Labels (:data:`CLASSES`): ``absorption`` (an ordinary star), ``emission`` (single-peak H-alpha
emission), ``double-peak`` (Be-star-like disc profile) and ``bad`` (files the ingestion must
reject). The targets of the active-learning loop are ``emission`` and ``double-peak``.

File layout (as LAMOST DR2-DR7 low-resolution ``spec-*.fits``): one primary HDU, ``BITPIX = -32``,
an image of shape (5, 3909): rows flux, inverse variance, wavelength, andmask, ormask. The
wavelength grid is log-linear in vacuum, ``log10(lambda / Å) = 3.5682 + 1e-4 * i`` for pixel
``i = 0..3908`` (3699.99-9099.13 Å), described by ``CRVAL1 = 3.5682``, ``CD1_1 = 1e-4``,
``CRPIX1 = 1``, ``CTYPE1 = 'LINEAR'`` (LAMOST's own, if misleading, keyword), ``VACUUM = T``, and
repeated in row 2 (float32, so it matches the WCS to about 3e-3 Å).

The physical model, all wavelengths in vacuum Å, for one spectrum (:func:`simulate`):

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

Next to the files, ``labels.csv`` (``filename,obsid,label``) holds the labels and ``truth.csv``
every drawn parameter (temperature, S/N, line amplitudes and widths, kind of damage), for
benchmarks that ask how performance depends on line strength or S/N.

Generation is deterministic: file ``i`` draws from ``numpy.random.default_rng([seed, 1, i])``, and
the headers carry no timestamps, so the same :class:`SynthConfig` produces the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from oraculum.store import ObjectStore
from oraculum.spectra.wavelength import LINES_VACUUM_A, air_to_vacuum

__all__ = [
    "CLASSES",
    "TARGET_CLASSES",
    "BAD_KINDS",
    "DEFAULT_FRACTIONS",
    "LAMOST_CRVAL1",
    "LAMOST_CD1_1",
    "LAMOST_NPIX",
    "SynthConfig",
    "SynthSummary",
    "SpectrumParams",
    "SimulatedSpectrum",
    "lamost_wavelength_A",
    "spectral_type",
    "designation",
    "double_peak_profile",
    "simulate",
    "synth_spectrum",
    "FileMeta",
    "lamost_fits_bytes",
    "generate",
]

#: Label names written to ``labels.csv``; the order is the class index order.
CLASSES: tuple[str, ...] = ("absorption", "emission", "double-peak", "bad")
#: The labels the active-learning loop looks for.
TARGET_CLASSES: tuple[str, ...] = ("emission", "double-peak")
#: How a ``bad`` file is broken, and how often (weights sum to 1).
BAD_KINDS: dict[str, float] = {"nan": 0.30, "zero": 0.25, "nan-block": 0.30, "truncated": 0.15}
#: Default label mix: emission-line stars are rare, as in the archive (a few per cent).
DEFAULT_FRACTIONS: dict[str, float] = {
    "absorption": 0.90,
    "emission": 0.05,
    "double-peak": 0.03,
    "bad": 0.02,
}

#: LAMOST low-resolution wavelength solution: log10(lambda / Å) of pixel 0, step per pixel, pixels.
LAMOST_CRVAL1 = 3.5682
LAMOST_CD1_1 = 1e-4
LAMOST_NPIX = 3909

#: LAMOST low-resolution resolving power; sets the instrumental line width.
RESOLVING_POWER = 1800.0

_C_KM_S = 299_792.458
_HC_OVER_K_A_K = 1.438_776_877e8  # second radiation constant hc/k in Å K
_FITS_BLOCK = 2880
_SKY_FLOOR = 0.15
_HALPHA_A = LINES_VACUUM_A["H-alpha"]  # 6564.61 Å, vacuum
_NII_A = (LINES_VACUUM_A["[N II] 6548"], LINES_VACUUM_A["[N II] 6583"])
_HEI_6678_A = LINES_VACUUM_A["He I 6678"]
_HBETA_A = 4862.68

#: Balmer lines (vacuum Å) with depth and Stark-width multipliers relative to H-alpha: the
#: higher members are relatively deeper at LAMOST resolution in A stars.
_BALMER: tuple[tuple[float, float, float], ...] = (
    (_HALPHA_A, 1.00, 1.00),
    (_HBETA_A, 1.20, 1.10),
    (4341.69, 1.30, 1.10),
    (4102.89, 1.35, 1.10),
    (3971.20, 1.30, 1.00),
    (3890.16, 1.20, 0.90),
)


def _vac(air_A: float) -> float:
    return float(air_to_vacuum(air_A))


# Metal lines: (vacuum Å, depth at full metal strength, Lorentzian half width at full strength Å).
_METALS: tuple[tuple[float, float, float], ...] = (
    (_vac(4226.73), 0.45, 0.8),  # Ca I
    (_vac(4383.55), 0.25, 0.3),  # Fe I
    (_vac(5167.32), 0.30, 0.8),  # Mg b
    (_vac(5172.68), 0.35, 0.9),
    (_vac(5183.60), 0.35, 0.9),
    (_vac(5269.54), 0.22, 0.3),  # Fe I
    (_vac(5889.95), 0.35, 0.9),  # Na D2
    (_vac(5895.92), 0.30, 0.8),  # Na D1
)
_CA_HK_A = (_vac(3933.66), _vac(3968.47))  # 3934.78, 3969.59
_CA_TRIPLET_A = (_vac(8498.02), _vac(8542.09), _vac(8662.14))
_G_BAND_A = _vac(4304.4)
_HEI_4472_A = _vac(4471.48)
_NA_D_A = (_vac(5889.95), _vac(5895.92))

#: Telluric bands in the observer's frame (vacuum Å): centre, Gaussian sigma, depth range.
_TELLURIC: tuple[tuple[float, float, float, float], ...] = (
    (_vac(6880.0), 5.0, 0.05, 0.15),  # O2 B band
    (_vac(7605.0), 8.0, 0.15, 0.35),  # O2 A band
    (_vac(7250.0), 40.0, 0.02, 0.06),  # H2O
    (_vac(8230.0), 60.0, 0.02, 0.08),  # H2O
)

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

_FIBERS_PER_SPECTROGRAPH = 250
_SPECTROGRAPHS = 16
_FIBERS_PER_PLAN = _FIBERS_PER_SPECTROGRAPH * _SPECTROGRAPHS
_FIRST_MJD = 55859  # 2011-10-24, start of the LAMOST regular survey
_WRITERS = 4  # concurrent store writes: hides the local store's per-file fsync and S3 latency
_WRITE_BATCH = 8  # files per write task
_OBSID_BASE = 1_000_000_000  # above real DR1-DR8 OBSIDs, so synthetic ones never collide


# --------------------------------------------------------------------------------------------
# configuration and results


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        count: number of spectrum files (>= 1).
        seed: non-negative integer; the same config always produces the same bytes.
        fractions: share of each label in :data:`CLASSES`; non-negative, summing to 1. Labels
            left out get 0. Counts are allocated exactly (largest remainder), then shuffled.
        snr_range: (low, high) r-band S/N per pixel; each spectrum draws log-uniformly in it.
        compress: write gzip-compressed ``.fits.gz`` files, like LAMOST's own distribution.
    """

    count: int
    seed: int = 0
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    snr_range: tuple[float, float] = (10.0, 150.0)
    compress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise ValueError(f"count must be a positive integer, got {self.count!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.fractions, Mapping):
            raise ValueError(f"fractions must be a mapping of label to share, got {self.fractions!r}")
        unknown = sorted(set(self.fractions) - set(CLASSES))
        if unknown:
            raise ValueError(f"fractions has unknown label(s) {unknown}; labels are {list(CLASSES)}")
        shares: dict[str, float] = {}
        for label in CLASSES:
            value = self.fractions.get(label, 0.0)
            try:
                share = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fractions[{label!r}] must be a number, got {value!r}") from None
            if not math.isfinite(share) or share < 0:
                raise ValueError(f"fractions[{label!r}] must be a finite non-negative number, got {value!r}")
            shares[label] = share
        total = sum(shares.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {total:g} ({shares})")
        try:
            low, high = (float(v) for v in self.snr_range)
        except (TypeError, ValueError):
            raise ValueError(f"snr_range must be a pair (low, high), got {self.snr_range!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"snr_range must satisfy 0 < low <= high, got {self.snr_range!r}")
        if not isinstance(self.compress, bool):
            raise ValueError(f"compress must be true or false, got {self.compress!r}")
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "fractions", shares)
        object.__setattr__(self, "snr_range", (low, high))


@dataclass
class SynthSummary:
    """What :func:`generate` wrote.

    Attributes:
        counts: number of files per label (every label of :data:`CLASSES` present).
        files: store keys of the spectrum files, in generation order.
        labels_key: key of ``labels.csv`` (``filename,obsid,label``).
        truth_key: key of ``truth.csv``: the label plus the drawn physical parameters of every
            file (temperature, S/N, line amplitudes, how a bad file is broken), for
            difficulty-resolved benchmarks.
        bad_kinds: number of bad files per kind of damage.
    """

    counts: dict[str, int]
    files: list[str]
    labels_key: str
    truth_key: str
    bad_kinds: dict[str, int]


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


# --------------------------------------------------------------------------------------------
# small helpers


def lamost_wavelength_A() -> np.ndarray:
    """The LAMOST low-resolution pixel wavelengths (vacuum Å, float64, 3909 pixels)."""
    return 10.0 ** (LAMOST_CRVAL1 + LAMOST_CD1_1 * np.arange(LAMOST_NPIX))


def spectral_type(teff_K: float) -> str:
    """The MK dwarf type (e.g. ``'G2'``) whose temperature is nearest to ``teff_K`` in log T."""
    return _TYPE_NAMES[int(np.argmin(np.abs(_TYPE_LOG_T - math.log(teff_K))))]


def designation(ra_deg: float, dec_deg: float) -> str:
    """LAMOST designation ``'LAMOST Jhhmmss.ss+ddmmss.s'`` (IAU style: truncated, not rounded)."""
    centisec = int(math.floor((ra_deg % 360.0) / 15.0 * 360_000.0 + 1e-6))
    hh, rest = divmod(centisec, 360_000)
    mm, rest = divmod(rest, 6_000)
    sign = "-" if dec_deg < 0 else "+"
    deciarcsec = int(math.floor(abs(dec_deg) * 36_000.0 + 1e-6))
    dd, drest = divmod(deciarcsec, 36_000)
    dm, drest = divmod(drest, 600)
    ra_text = f"{hh:02d}{mm:02d}{rest // 100:02d}.{rest % 100:02d}"
    dec_text = f"{sign}{dd:02d}{dm:02d}{drest // 10:02d}.{drest % 10:d}"
    return f"LAMOST J{ra_text}{dec_text}"


def _gaussian(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _median(values: np.ndarray) -> float:
    """Median via one ``partition`` (``np.median`` costs ~5x more on small arrays, per file)."""
    n = values.size
    k = n // 2
    part = np.partition(values, k)
    if n % 2:
        return float(part[k])
    return 0.5 * float(part[k] + part[:k].max())


def _instrument_sigma_A(wavelength_A: float, resolving_power: float) -> float:
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
    profile = violet * _gaussian(wavelength_A, centre_A - half, sigma_A)
    profile += red * _gaussian(wavelength_A, centre_A + half, sigma_A)
    profile *= 1.0 - dip * _gaussian(wavelength_A, centre_A, separation_A / 6.0)
    return profile


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


def _metal_forest(wl: np.ndarray, resolving_power: float) -> np.ndarray:
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


def _grid(wavelength_A: np.ndarray, resolving_power: float) -> _Grid:
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
        forest_tau=_metal_forest(wl, resolving_power),
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


def _line_absorption(
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
    for rest, depth_mult, width_mult in _BALMER:
        depth = min(0.9, depth_ha * (1.0 if h < 0.3 else depth_mult) * rng.uniform(0.9, 1.1))
        line(rest * doppler, depth, gamma_ha * width_mult * (rest / _HALPHA_A))
    m = _metal_strength(teff_K)
    ca = min(1.0, max(0.0, (10500.0 - teff_K) / 5000.0))
    for rest in _CA_HK_A:
        line(rest * doppler, 0.05 + 0.7 * ca, 0.3 + 6.0 * ca**2)
    for rest in _CA_TRIPLET_A:
        line(rest * doppler, 0.05 + 0.3 * m, 0.5 + 1.5 * m)
    metallicity = 0.0
    if m > 0.0:
        metallicity = rng.uniform(0.6, 1.4)
        for rest, depth, gamma in _METALS:
            line(rest * doppler, min(0.9, depth * m * metallicity), 0.1 + gamma * m)
        line(_G_BAND_A * doppler, 0.25 * m * metallicity, sigma=6.0)
    if teff_K > 10000.0:
        he = min(1.0, (teff_K - 10000.0) / 8000.0)
        for rest in (_HEI_4472_A, _HEI_6678_A):
            line(rest * doppler, 0.12 * he, sigma=1.3 * rest / (2.354_820_045 * resolving_power))
    # interstellar Na D, at rest (the ISM does not share the star's velocity); grows with E(B-V)
    for rest in _NA_D_A:
        line(rest, min(0.5, 0.3 * ebv))
    for centre, sigma, low, high in _TELLURIC:
        line(centre, rng.uniform(low, high), sigma=sigma)
    log_factor = _line_absorption(grid.wl, centres, depths, sigmas, gammas)
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
        emission += amplitude * _gaussian(wl, _HALPHA_A * doppler, sigma)
        params.ha_amplitude, params.ha_sigma_A = amplitude, sigma
        if rng.random() < 0.5:
            hb = amplitude * float(rng.uniform(0.15, 0.5))
            emission += hb * _gaussian(wl, _HBETA_A * doppler, sigma * _HBETA_A / _HALPHA_A)
            params.hb_amplitude = hb
        if rng.random() < 0.2:  # nebular [N II] from an HII region along the line of sight
            nii = float(rng.uniform(0.05, 0.3)) * amplitude
            nii_sigma = _instrument_sigma_A(_HALPHA_A, RESOLVING_POWER)
            emission += nii / 3.0 * _gaussian(wl, _NII_A[0], nii_sigma)
            emission += nii * _gaussian(wl, _NII_A[1], nii_sigma)
            params.nii_amplitude = nii
    elif label == "double-peak":
        separation = float(rng.uniform(3.0, 12.0))
        sigma = max(0.75, separation * float(rng.uniform(0.18, 0.28)))
        amplitude = float(math.exp(rng.uniform(math.log(0.3), math.log(4.0))))
        vr = float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))
        dip = float(rng.uniform(0.1, 0.6))
        emission += double_peak_profile(wl, _HALPHA_A * doppler, separation, sigma, amplitude, vr, dip)
        params.ha_amplitude, params.dp_separation_A, params.dp_sigma_A = amplitude, separation, sigma
        params.dp_vr_ratio, params.dp_dip = vr, dip
        if rng.random() < 0.4:
            scale = _HBETA_A / _HALPHA_A
            hb = amplitude * float(rng.uniform(0.15, 0.4))
            emission += double_peak_profile(
                wl, _HBETA_A * doppler, separation * scale, max(0.6, sigma * scale), hb, vr, dip
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
    ``'truncated'`` (a file-level defect, applied by :func:`generate`), recorded in
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
    doppler = 1.0 + rv / _C_KM_S
    params = SpectrumParams(
        label=label, teff_K=teff, subclass=spectral_type(teff), snr=float(snr), rv_km_s=rv, ebv=ebv
    )
    grid = _grid(wl, resolving_power)
    continuum = _continuum(rng, grid, teff, ebv, snr)
    lines = _absorption_factor(rng, grid, teff, ebv, doppler, resolving_power)
    emission = _emission(rng, wl, star_label, doppler, params)
    model = continuum * (lines + emission)

    c_r = _median(continuum[grid.in_r])
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
            block = (wl > _HALPHA_A - rng.uniform(10.0, 60.0)) & (wl < _HALPHA_A + rng.uniform(10.0, 60.0))
            flux[block] = np.nan
            ivar[block] = 0.0
    return SimulatedSpectrum(wl, flux, ivar, continuum, lines, model, params)


def synth_spectrum(rng: np.random.Generator, label: str, wavelength_vacuum_A: np.ndarray, snr: float) -> np.ndarray:
    """The observed flux row of one synthetic spectrum (see :func:`simulate` for everything else)."""
    return simulate(rng, label, wavelength_vacuum_A, snr).flux


# --------------------------------------------------------------------------------------------
# FITS bytes, written directly (an astropy HDU per file would cost ~10x the simulation)


@dataclass(frozen=True)
class _Fixed:
    """A float written with a fixed number of decimals (LAMOST writes Z as ``-0.00000640``)."""

    value: float
    decimals: int


_CardValue = str | bool | int | float | _Fixed


def _format_value(value: _CardValue) -> str:
    if isinstance(value, _Fixed):
        return f"{value.value:>20.{value.decimals}f}"
    if isinstance(value, bool):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20d}"
    if isinstance(value, (float, np.floating)):
        text = repr(float(value)) if abs(value) >= 1e-4 or value == 0 else f"{float(value):.10E}"
        if "e" in text:
            text = f"{float(value):.10E}"
        if "." not in text and "E" not in text:
            text += ".0"
        return f"{text:>20}"
    quoted = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
    return f"{quoted:<20}"


def _card(keyword: str, value: _CardValue, comment: str = "") -> str:
    """One 80-character FITS header card in fixed format."""
    text = f"{keyword:<8}= {_format_value(value)}"
    if comment:
        text += f" / {comment}"
    if len(text) > 80:
        if len(f"{keyword:<8}= {_format_value(value)}") > 80:
            raise ValueError(f"FITS card {keyword} value too long: {value!r}")
        text = text[:80]
    return f"{text:<80}"


def _comment(text: str) -> str:
    return f"{'COMMENT ' + text:<80}"[:80]


@dataclass
class FileMeta:
    """Per-file identity of a synthetic LAMOST file (what the archive's pipeline would assign)."""

    filename: str
    obsid: int
    planid: str
    mjd: int
    spid: int
    fiberid: int
    ra_deg: float
    dec_deg: float


#: Per-file header cards: keyword -> comment. Everything else in the header is the same in
#: every file and is formatted once (:func:`_header_template`), which keeps a file's header at
#: ~20 formatted cards instead of ~60.
_PER_FILE_CARDS: dict[str, str] = {
    "FILENAME": "",
    "OBSID": "Unique number ID of this spectrum",
    "LMJD": "Local Modified Julian Day",
    "MJD": "Modified Julian Day",
    "PLANID": "Plan ID in use",
    "RA": "[deg] Right ascension of object",
    "DEC": "[deg] Declination of object",
    "DESIG": "Designation of LAMOST target",
    "FIBERID": "Fiber ID of Object",
    "SPID": "Spectrograph ID",
    "SUBCLASS": "Subclass of object",
    "Z": "Redshift of object",
    "SNRU": "SNR of u filter",
    "SNRG": "SNR of g filter",
    "SNRR": "SNR of r filter",
    "SNRI": "SNR of i filter",
    "SNRZ": "SNR of z filter",
}


@lru_cache(maxsize=4)
def _header_template(npix: int) -> tuple[str, ...]:
    """The header as a sequence of finished cards and bare keywords of per-file cards."""
    layout: list[str | tuple[str, _CardValue, str]] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", -32, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", npix, "number of pixels"),
        ("NAXIS2", 5, "flux, ivar, wavelength, andmask, ormask"),
        ("EXTEND", True, ""),
        "THIS FILE IS SYNTHETIC: simulated by oraculum.spectra.synth, not a LAMOST",
        "observation. Only the file layout follows LAMOST DR2-DR7.",
        "--------FILE INFORMATION",
        "FILENAME",
        "OBSID",
        ("AUTHOR", "oraculum.spectra.synth", "Who compiled the information"),
        ("DATA_V", "SYNTHETIC", "Data release version"),
        ("EXTEN0", "Flux, Inverse, Wavelength, Andmask, Ormask", ""),
        ("N_EXTEN", 1, "The extension number"),
        ("EXTNAME", "Flux", "The extension name"),
        ("ORIGIN", "oraculum", "Organization responsible for creating this file"),
        "--------TELESCOPE PARAMETERS",
        ("TELESCOP", "LAMOST", "file format only: synthetic spectrum"),
        "--------OBSERVATION PARAMETERS",
        "LMJD",
        "MJD",
        "PLANID",
        "RA",
        "DEC",
        "DESIG",
        "FIBERID",
        ("OBJTYPE", "Star", "Object type from input catalog"),
        ("FIBERTYP", "Obj", "Fiber type of object"),
        ("OBS_TYPE", "OBJ", "The type of target (OBJ, FLAT, ARC or BIAS)"),
        ("RADECSYS", "FK5", "Equatorial coordinate system"),
        ("EQUINOX", 2000.0, "Equinox in years"),
        "--------SPECTROGRAPH PARAMETERS",
        "SPID",
        "--------DATA REDUCTION PARAMETERS",
        ("HELIO", True, "Heliocentric correction"),
        ("VACUUM", True, "Wavelengths are in vacuum"),
        ("NWORDER", 2, "Number of linear-log10 coefficients"),
        ("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
        ("COEFF0", LAMOST_CRVAL1, "Central wavelength (log10) of first pixel"),
        ("COEFF1", LAMOST_CD1_1, "Log10 dispersion per pixel"),
        ("CRVAL1", LAMOST_CRVAL1, "Central wavelength (log10) of first pixel"),
        ("CD1_1", LAMOST_CD1_1, "Log10 dispersion per pixel"),
        ("CRPIX1", 1, "Starting pixel (1-indexed)"),
        ("CTYPE1", "LINEAR", ""),
        ("DC-FLAG", 1, "Log-linear flag"),
        "--------SPECTRA ANALYSIS RESULTS",
        ("CLASS", "STAR", "Class of object"),
        "SUBCLASS",
        "Z",
        ("Z_ERR", _Fixed(1e-05, 8), "Redshift error of object"),
        "SNRU",
        "SNRG",
        "SNRR",
        "SNRI",
        "SNRZ",
    ]
    out: list[str] = []
    for item in layout:
        if isinstance(item, tuple):
            out.append(_card(*item))
        elif item in _PER_FILE_CARDS:
            out.append(item)
        else:
            out.append(_comment(item))
    return tuple(out)


def _header_bytes(values: Mapping[str, _CardValue], npix: int) -> bytes:
    """The primary header, padded to whole 2880-byte blocks, with the per-file ``values``."""
    text = "".join(
        card if len(card) == 80 else _card(card, values[card], _PER_FILE_CARDS[card])
        for card in _header_template(npix)
    )
    text += f"{'END':<80}"
    text += " " * (-len(text) % _FITS_BLOCK)
    return text.encode("ascii")


def _band_snr(spec: SimulatedSpectrum) -> dict[str, float]:
    """S/N per band as LAMOST reports it (median per-pixel S/N); r is the drawn ``snr``."""
    grid = _grid(spec.wavelength_A, RESOLVING_POWER)
    out = {"r": round(spec.params.snr, 2)}
    for band, window in grid.bands.items():
        snr_pixel = spec.continuum[window] * np.sqrt(spec.ivar[window])
        out[band] = round(_median(snr_pixel), 2) if snr_pixel.size else 0.0
    return out


def lamost_fits_bytes(spec: SimulatedSpectrum, meta: FileMeta) -> bytes:
    """The complete bytes of a LAMOST-layout FITS file holding ``spec`` (on the LAMOST grid)."""
    npix = spec.wavelength_A.size
    data = np.empty((5, npix), dtype=">f4")
    data[0] = spec.flux
    data[1] = spec.ivar
    data[2] = spec.wavelength_A
    data[3] = 0.0  # andmask
    data[4] = 0.0  # ormask
    payload = data.tobytes()
    payload += b"\0" * (-len(payload) % _FITS_BLOCK)
    snr = _band_snr(spec)
    ra, dec = round(meta.ra_deg, 6), round(meta.dec_deg, 6)  # DESIG agrees with the cards
    values: dict[str, _CardValue] = {
        "FILENAME": meta.filename,
        "OBSID": meta.obsid,
        "LMJD": meta.mjd,
        "MJD": meta.mjd,
        "PLANID": meta.planid,
        "RA": ra,
        "DEC": dec,
        "DESIG": designation(ra, dec),
        "FIBERID": meta.fiberid,
        "SPID": meta.spid,
        "SUBCLASS": spec.params.subclass,
        "Z": _Fixed(spec.params.rv_km_s / _C_KM_S, 8),
        "SNRU": snr["u"],
        "SNRG": snr["g"],
        "SNRR": snr["r"],
        "SNRI": snr["i"],
        "SNRZ": snr["z"],
    }
    return _header_bytes(values, npix) + payload


def _file_meta(
    config: SynthConfig, index: int, rng: np.random.Generator, plan_centres: dict[int, tuple[float, float]]
) -> FileMeta:
    """Name, ids and sky position of file ``index``: LAMOST-like plans of 16 x 250 fibres.

    Each plan gets a field centre (dec -10..+90 deg, uniform on the sphere, like LAMOST's sky) and
    each fibre a position within 2.5 deg of it (LAMOST's 5-degree field).
    """
    plan, within = divmod(index, _FIBERS_PER_PLAN)
    spid, fiber = divmod(within, _FIBERS_PER_SPECTROGRAPH)
    mjd = _FIRST_MJD + plan // 3
    planid = f"SYNTH{plan:05d}"
    filename = f"spec-{mjd}-{planid}_sp{spid + 1:02d}-{fiber + 1:03d}.fits"
    if plan not in plan_centres:
        plan_centres.clear()
        plan_rng = np.random.default_rng([config.seed, 3, plan])
        ra0 = float(plan_rng.uniform(0.0, 360.0))
        dec0 = math.degrees(math.asin(plan_rng.uniform(math.sin(math.radians(-10.0)), 0.95)))
        plan_centres[plan] = (ra0, dec0)
    ra0, dec0 = plan_centres[plan]
    radius = 2.5 * math.sqrt(rng.random())
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dec = min(89.999, max(-89.999, dec0 + radius * math.sin(angle)))
    ra = (ra0 + radius * math.cos(angle) / max(0.05, math.cos(math.radians(dec)))) % 360.0
    return FileMeta(filename, _OBSID_BASE + index, planid, mjd, spid + 1, fiber + 1, ra, dec)


def _exact_counts(count: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``count`` items to the keys of ``fractions`` (exact mix)."""
    names = list(fractions)
    raw = {name: count * fractions[name] for name in names}
    counts = {name: int(math.floor(value)) for name, value in raw.items()}
    remainder = count - sum(counts.values())
    for name in sorted(names, key=lambda n: (-(raw[n] - counts[n]), names.index(n)))[:remainder]:
        counts[name] += 1
    return counts


def _bad_kind_plan(n_bad: int, seed: int) -> list[str]:
    """Damage for each bad file: the :data:`BAD_KINDS` mix, exact, every kind present when possible.

    Exact rather than random so that even a small run (a test, a demo) exercises every reject path.
    """
    counts = _exact_counts(n_bad, BAD_KINDS)
    if n_bad >= len(BAD_KINDS):
        for kind in BAD_KINDS:
            while counts[kind] == 0:
                donor = max(counts, key=lambda k: counts[k])
                counts[donor] -= 1
                counts[kind] += 1
    plan = [kind for kind in BAD_KINDS for _ in range(counts[kind])]
    np.random.default_rng([seed, 4]).shuffle(plan)
    return plan


def _finish_bytes(data: bytes, compress: bool, cut: float | None) -> bytes:
    """Optionally gzip a file's bytes, then optionally truncate them at fraction ``cut``.

    An uncompressed file is cut inside its data unit (the header stays whole, like a transfer
    that stopped mid-file); a compressed one is cut inside the gzip stream, which is what an
    interrupted download of a ``.fits.gz`` looks like. gzip's ``mtime=0`` keeps bytes reproducible.
    """
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
        if cut is not None:
            data = data[: max(1, int(len(data) * cut))]
    elif cut is not None:
        header_end = data.index(b"END" + b" " * 77) + 80
        header_end += -header_end % _FITS_BLOCK
        data = data[: header_end + int((len(data) - header_end) * cut)]
    return data


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.6g}"


def generate(
    store: ObjectStore,
    prefix: str,
    config: SynthConfig,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write ``config.count`` synthetic LAMOST files plus ``labels.csv`` and ``truth.csv``.

    Keys are ``{prefix}/spec-<mjd>-SYNTH<plan>_sp<NN>-<FFF>.fits[.gz]`` (4000 fibres per plan,
    16 spectrographs of 250 fibres, as LAMOST), ``{prefix}/labels.csv`` (``filename,obsid,label``)
    and ``{prefix}/truth.csv`` (label plus drawn parameters). ``progress(n)`` is called with the
    number of files written since the last call. Writes go through a few threads because the
    local store fsyncs every object and S3 has per-request latency; the bytes do not depend on
    the order in which writes finish.
    """
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    counts = _exact_counts(config.count, {label: config.fractions[label] for label in CLASSES})
    bad_plan = iter(_bad_kind_plan(counts["bad"], config.seed))
    label_index = np.repeat(np.arange(len(CLASSES), dtype=np.int8), [counts[lab] for lab in CLASSES])
    np.random.default_rng([config.seed, 2]).shuffle(label_index)

    wl = lamost_wavelength_A()
    snr_low, snr_high = np.log(config.snr_range[0]), np.log(config.snr_range[1])
    files: list[str] = []
    label_rows = io.StringIO()
    truth_rows = io.StringIO()
    label_writer = csv.writer(label_rows, lineterminator="\n")
    truth_writer = csv.writer(truth_rows, lineterminator="\n")
    label_writer.writerow(["filename", "obsid", "label"])
    truth_fields = [
        "teff_K", "subclass", "snr", "rv_km_s", "ebv", "ha_amplitude", "ha_sigma_A", "hb_amplitude",
        "nii_amplitude", "dp_separation_A", "dp_sigma_A", "dp_vr_ratio", "dp_dip",
    ]
    truth_writer.writerow(["filename", "obsid", "label", "bad_kind", *truth_fields])
    bad_kinds = {kind: 0 for kind in BAD_KINDS}
    plan_centres: dict[int, tuple[float, float]] = {}
    suffix = ".gz" if config.compress else ""

    # Files go to the store in batches of _WRITE_BATCH through _WRITERS threads: one task per
    # file costs a thread hand-off per file, and one thread leaves the disk (or network) idle.
    pending: deque[tuple[Future[None], int]] = deque()
    batch: list[tuple[str, bytes, float | None]] = []
    unreported = 0

    def put_batch(items: list[tuple[str, bytes, float | None]]) -> None:
        # compression runs here, in the writer threads: zlib releases the GIL
        for item_key, item_data, item_cut in items:
            store.put_bytes(item_key, _finish_bytes(item_data, config.compress, item_cut))

    def settle(max_pending: int) -> None:
        nonlocal unreported
        while len(pending) > max_pending:
            future, size = pending.popleft()
            future.result()
            unreported += size
        if progress is not None and unreported and (unreported >= 100 or max_pending == 0):
            progress(unreported)
            unreported = 0

    pool = ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="synth-write")
    try:
        for index in range(config.count):
            rng = np.random.default_rng([config.seed, 1, index])
            label = CLASSES[label_index[index]]
            snr = float(np.exp(rng.uniform(snr_low, snr_high)))
            spec = simulate(rng, label, wl, snr, bad_kind=next(bad_plan) if label == "bad" else None)
            meta = _file_meta(config, index, rng, plan_centres)
            data = lamost_fits_bytes(spec, meta)
            cut = float(rng.uniform(0.1, 0.9)) if spec.params.bad_kind == "truncated" else None
            if spec.params.bad_kind:
                bad_kinds[spec.params.bad_kind] += 1
            filename = meta.filename + suffix
            key = base + filename
            files.append(key)
            label_writer.writerow([filename, meta.obsid, label])
            p = spec.params
            truth_writer.writerow([
                filename, meta.obsid, label, p.bad_kind, f"{p.teff_K:.0f}", p.subclass, f"{p.snr:.2f}",
                f"{p.rv_km_s:.2f}", f"{p.ebv:.3f}", _fmt(p.ha_amplitude), _fmt(p.ha_sigma_A),
                _fmt(p.hb_amplitude), _fmt(p.nii_amplitude), _fmt(p.dp_separation_A), _fmt(p.dp_sigma_A),
                _fmt(p.dp_vr_ratio), _fmt(p.dp_dip),
            ])
            batch.append((key, data, cut))
            if len(batch) >= _WRITE_BATCH:
                pending.append((pool.submit(put_batch, batch), len(batch)))
                batch = []
                settle(2 * _WRITERS)
        if batch:
            pending.append((pool.submit(put_batch, batch), len(batch)))
        settle(0)
    finally:
        # on an error (a store that refuses writes, Ctrl-C) drop queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)

    labels_key = base + "labels.csv"
    truth_key = base + "truth.csv"
    store.put_bytes(labels_key, label_rows.getvalue().encode("utf-8"))
    store.put_bytes(truth_key, truth_rows.getvalue().encode("utf-8"))
    return SynthSummary(
        counts=counts, files=files, labels_key=labels_key, truth_key=truth_key, bad_kinds=bad_kinds
    )
