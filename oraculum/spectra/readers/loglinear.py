"""The log-linear wavelength solution of LAMOST and SDSS 2-D images, robust to broken headers.

LAMOST low-resolution (DR1-DR8 images) and SDSS DR7 ``spSpec`` files sample wavelength in
constant steps of log10(λ). The header states it twice: as a FITS WCS (``CRVAL1``, ``CD1_1`` or
``CDELT1``, ``CRPIX1``; log10 λ_i = CRVAL1 + step (i + 1 - CRPIX1) for 0-based pixel i) and as the
survey's own coefficients (``COEFF0``, ``COEFF1``; log10 λ_i = COEFF0 + COEFF1 i); LAMOST DR2+
images also hold the wavelengths in row 2 (in DR1 that row is something else).

Real files break this: LAMOST DR8 files with ``CRPIX1 = -9999`` and ``CTYPE1 = -9999`` (the
"missing" marker) give wavelengths 10x too large when read literally, although COEFF0/COEFF1 and
the wavelength row are right. So :func:`log_linear_solution` decides, in this order:

1. the WCS when it is usable (numbers, step != 0, log10 of an Å wavelength), free of missing
   markers, plausible (the range lies within ``plausible_A``) and agrees with COEFF0/COEFF1 when
   those are given - every good file, computed exactly as before;
2. COEFF0/COEFF1 when they are usable and plausible and the WCS is not (or the two disagree and
   the wavelength row does not side with the WCS);
3. the wavelength row, when it is finite, monotonic and plausible;
4. the WCS read literally when it is at least usable (a non-LAMOST image: nothing better);
5. otherwise None: no log-linear solution (the caller tries other layouts or rejects).

A decision that needs the row raises :class:`NeedRow` when no row is offered, so that the fast
header-only path can defer to the astropy path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from oraculum.spectra.readers.metadata import HeaderGet, is_missing_marker, wcs_cards

#: A log-linear solution: (CRVAL1, step, CRPIX1), log10 λ_i = CRVAL1 + step (i + 1 - CRPIX1).
LogLinear = tuple[float, float, float]

#: The range that LAMOST and SDSS optical fibre spectra lie within (LAMOST LRS 3690-9100 Å,
#: SDSS 3800-9200 Å, BOSS 3600-10400 Å), with room to spare.
OPTICAL_FIBRE_RANGE_A = (3000.0, 11000.0)

#: CRVAL1 of a log-linear axis is log10 of a wavelength in Å: 2..6 is 100 Å..1e6 Å.
_LOG10_CRVAL_RANGE = (2.0, 6.0)
#: Two solutions agree when their first and last pixels differ by less than this many pixels.
_AGREE_PIXELS = 0.1
#: The keywords :func:`log_linear_solution` may read (the fast path scans exactly these).
KEYWORDS = ("CRVAL1", "CD1_1", "CDELT1", "CRPIX1", "CTYPE1", "COEFF0", "COEFF1")


class NeedRow(Exception):
    """The decision needs the wavelength row, which the caller did not offer."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def usable(crval: object, step: object, crpix: object) -> LogLinear | None:
    """The triple as floats when it is finite numbers, a non-zero step and CRVAL1 that is log10
    of an Å wavelength; None otherwise."""
    if not (_is_number(crval) and _is_number(step) and _is_number(crpix)):
        return None
    solution = (float(crval), float(step), float(crpix))  # type: ignore[arg-type]
    low, high = _LOG10_CRVAL_RANGE
    return solution if solution[1] != 0 and low < solution[0] < high else None


def _log_ends(solution: LogLinear, n_pixels: int) -> tuple[float, float]:
    crval, step, crpix = solution
    return crval + step * (1.0 - crpix), crval + step * (n_pixels - crpix)


def _plausible(solution: LogLinear, n_pixels: int, plausible_A: tuple[float, float]) -> bool:
    first, last = _log_ends(solution, n_pixels)
    low, high = sorted((first, last))
    return math.log10(plausible_A[0]) <= low and high <= math.log10(plausible_A[1])


def _agree(a: LogLinear, b: LogLinear, n_pixels: int) -> bool:
    tolerance = _AGREE_PIXELS * abs(a[1])
    return all(abs(x - y) < tolerance for x, y in zip(_log_ends(a, n_pixels), _log_ends(b, n_pixels)))


def wavelength_row(values: np.ndarray | None, plausible_A: tuple[float, float]) -> np.ndarray | None:
    """``values`` as float64 wavelengths (Å) when they are finite, strictly monotonic and within
    ``plausible_A``; None otherwise (DR1's sub-continuum row, an error row, ...)."""
    if values is None:
        return None
    row = np.asarray(values, dtype=np.float64).ravel()
    if row.size < 2 or not np.isfinite(row).all():
        return None
    step = np.diff(row)
    if not ((step > 0).all() or (step < 0).all()):
        return None
    low, high = (row[0], row[-1]) if row[0] < row[-1] else (row[-1], row[0])
    return row if plausible_A[0] <= low and high <= plausible_A[1] else None


def _row_matches(solution: LogLinear, row: np.ndarray) -> bool:
    """Whether ``row`` (Å) follows ``solution`` to within half a pixel everywhere."""
    crval, step, crpix = solution
    log_wavelength = crval + step * (np.arange(row.size, dtype=np.float64) + 1.0 - crpix)
    return bool(np.max(np.abs(np.log10(row) - log_wavelength)) < 0.5 * abs(step))


def log_linear_solution(
    get: HeaderGet,
    n_pixels: int,
    plausible_A: tuple[float, float] = OPTICAL_FIBRE_RANGE_A,
    row: Callable[[], np.ndarray | None] | None = None,
) -> LogLinear | np.ndarray | None:
    """The wavelength solution of an image with ``n_pixels`` pixels per row (module docstring):
    a :data:`LogLinear` triple, the wavelength row itself (float64 Å), or None.

    ``row`` returns the image's wavelength row, if its layout has one (None otherwise); without
    ``row``, a decision that needs it raises :class:`NeedRow`.
    """
    cards = (*wcs_cards(get), get("CTYPE1"), get("COEFF0"), get("COEFF1"), n_pixels, plausible_A)
    try:
        decided = _from_header(*cards)
    except TypeError:  # an unhashable card value (never from a FITS header): decide uncached
        decided = _from_header.__wrapped__(*cards)
    if not isinstance(decided, _Undecided):
        return decided
    if row is None:
        raise NeedRow
    from_row = wavelength_row(row(), plausible_A)
    good, coeff, wcs = decided
    if good is not None and coeff is not None:  # both plausible, but they disagree: the row decides
        return good if from_row is not None and _row_matches(good, from_row) else coeff
    if from_row is not None:
        return from_row
    return wcs  # usable but implausible (or marked): read literally; or None


class _Undecided(tuple):
    """(good WCS, plausible COEFF, usable WCS): the header alone does not decide."""


@lru_cache(maxsize=256, typed=True)  # typed: CRPIX1 = T must not hit the entry of CRPIX1 = 1
def _from_header(
    crval: object, step: object, crpix: object, ctype: object, coeff0: object, coeff1: object,
    n_pixels: int, plausible_A: tuple[float, float],
) -> LogLinear | _Undecided:
    """The decision the header cards make on their own (cached: an archive has few distinct
    headers, and this runs for every file of the fast path)."""
    marked = any(is_missing_marker(value) for value in (crval, step, crpix, ctype))
    wcs = usable(crval, step, crpix)
    coeff = usable(coeff0, coeff1, 1)
    if coeff is not None and not _plausible(coeff, n_pixels, plausible_A):
        coeff = None
    good = wcs if wcs is not None and not marked and _plausible(wcs, n_pixels, plausible_A) else None
    if good is not None and (coeff is None or _agree(good, coeff, n_pixels)):
        return good
    if coeff is not None and good is None:
        return coeff
    return _Undecided((good, coeff, wcs))
