"""Bad-pixel masks: which native pixels of a spectrum hold no usable flux.

Every reader returns ``Spectrum.mask`` (``True`` = bad, the numpy.ma / specutils convention);
preprocessing interpolates across bad pixels and rejects a spectrum with too many of them inside
the grid (:class:`~oraculum.spectra.preprocessing.PreprocessingParameters.max_masked_fraction`).
What counts as bad follows each survey's own documentation and what its real files show:

* **Everywhere**: non-finite flux (NaN, ±inf).
* **SDSS** (``sdss-spec``, ``sdss-spspec``): inverse variance <= 0 or non-finite (DR7: error <= 0
  or non-finite), the SDSS convention for "no information"; and the pixel bits of
  :data:`SDSS_BAD_BITS` in the AND mask (set in every exposure). Informational bits
  (``PARTIALREJECT``, ``SCATTEREDLIGHT``, the ``SMEAR*`` and ``NEAR*`` bits, ...) and the OR mask
  are not used.
* **LAMOST** (``lamost-lrs-image``, ``lamost-lrs-table``, ``lamost-mrs``): any bit of the and-mask
  (bad in all exposures); inverse variance < 0 or non-finite; and flux exactly 0, the
  pipeline's filler where it has no data, whatever the inverse variance says (dead arms with
  ivar 0, the DR8 spikes that became fake absorption lines, and isolated zeros with ivar > 0 in
  the real DR1-DR7 low- and medium-resolution files of ``../shared/data``). Inverse variance 0
  alone does **not** mask a LAMOST pixel: the DR1/DR2 pipeline also sets it on the cores of
  strong lines whose flux is real (in ``../shared/data``: the H-alpha emission peaks of BT CMi
  and of the three cross-matched emission-line stars, and one H-alpha absorption core), and
  interpolating across them would erase the very line the classifier looks for (with the
  default limits, the four emission-line spectra would even be rejected). The or-mask (bad in at least one exposure) is
  not used: the co-add still holds the good exposures there.
* **Generic and Ondřejov** files carry no per-pixel quality: non-finite flux only.
"""

from __future__ import annotations

import numpy as np

#: SDSS SPPIXMASK bits that make a pixel unusable
#: (https://www.sdss3.org/dr10/algorithms/bitmask_sppixmask.php): fibre-level NOPLUG, BADTRACE, BADARC (no fibre, no trace, no wavelength
#: solution) and pixel-level FULLREJECT, NOSKY, BRIGHTSKY, COMBINEREJ, BADFLUXFACTOR. NODATA is
#: left out (deprecated since DR9: "ignore in favour of INVVAR = 0").
SDSS_BAD_BITS: dict[str, int] = {
    "NOPLUG": 0,
    "BADTRACE": 1,
    "BADARC": 3,
    "FULLREJECT": 18,
    "NOSKY": 22,
    "BRIGHTSKY": 23,
    "COMBINEREJ": 25,
    "BADFLUXFACTOR": 26,
}
SDSS_BAD_MASK = sum(1 << bit for bit in SDSS_BAD_BITS.values())


def _bits(mask: np.ndarray) -> np.ndarray:
    """A mask row or column as integers (images store it as floats); non-finite -> all bits."""
    values = np.asarray(mask)
    if values.dtype.kind in "iub":
        return values.astype(np.int64, copy=False)
    return np.where(np.isfinite(values), values, -1).astype(np.int64)


def nonfinite_mask(flux: np.ndarray) -> np.ndarray:
    """Bad where the flux is NaN or infinite (the only thing a file without quality data says)."""
    return ~np.isfinite(flux)


def lamost_mask(flux: np.ndarray, ivar: np.ndarray | None, andmask: np.ndarray | None) -> np.ndarray:
    """LAMOST bad pixels (module docstring): non-finite or exactly zero flux, ivar < 0 or
    non-finite, any and-mask bit. ``ivar``/``andmask`` may be None when the layout lacks them."""
    bad = ~np.isfinite(flux)
    bad |= flux == 0
    if ivar is not None:
        ivar = np.asarray(ivar)
        bad |= ~np.isfinite(ivar)
        bad |= ivar < 0
    if andmask is not None:
        bad |= np.asarray(andmask) != 0  # any bit (a float row in images: NaN counts as set)
    return bad


def sdss_mask(flux: np.ndarray, ivar: np.ndarray | None, and_mask: np.ndarray | None) -> np.ndarray:
    """SDSS bad pixels (module docstring): non-finite flux, ivar <= 0 or non-finite, and the
    :data:`SDSS_BAD_BITS` of the AND mask. For DR7 pass ``1 / error**2`` (or error itself: only
    its sign and finiteness matter)."""
    bad = ~np.isfinite(flux)
    if ivar is not None:
        bad |= ~(np.asarray(ivar) > 0)  # also catches NaN
    if and_mask is not None:
        bad |= (_bits(and_mask) & SDSS_BAD_MASK) != 0
    return bad
