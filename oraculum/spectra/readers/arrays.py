"""Turning raw wavelength and flux arrays into a valid :class:`~oraculum.spectra.spectrum.Spectrum`.

One place for the invariants every reader must deliver: float64 wavelengths in Å, strictly
increasing; flux in native byte order (archives store big-endian) and a floating dtype, the
same length; non-finite flux kept (preprocessing decides whether it matters on the grid); a
boolean bad-pixel mask of the same length, in the same order (at least the non-finite flux).
"""

from __future__ import annotations

import numpy as np

from oraculum.spectra.readers.masks import nonfinite_mask
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumMeta, SpectrumRejected
from oraculum.spectra.wavelength import Medium


def native_float(values: np.ndarray) -> np.ndarray:
    """A native-byte-order floating copy: float32/float64 stay, integers become float64."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(values.dtype.newbyteorder("="), copy=True)
    if values.dtype.kind in "iub":
        return values.astype(np.float64)
    raise SpectrumRejected(
        RejectReason.UNKNOWN_LAYOUT, f"flux has non-numeric dtype {values.dtype}"
    )


def make_spectrum(
    wavelength_A: np.ndarray,
    flux: np.ndarray,
    *,
    medium: Medium,
    format: str,
    meta: SpectrumMeta,
    where: str,
    mask: np.ndarray | None = None,
) -> Spectrum:
    """A :class:`Spectrum` with wavelengths sorted strictly increasing, or a rejection.

    ``where`` names the origin (file and HDU/column) for messages. Decreasing wavelengths (e.g.
    the red-arm single exposures of LAMOST MRS) are reversed; unordered ones are sorted; repeated
    or non-finite wavelengths cannot be put in order and are rejected. ``mask`` (True = bad, see
    :mod:`~oraculum.spectra.readers.masks`) follows the pixels; without one, non-finite flux is
    the mask.
    """
    wavelength_A = np.asarray(wavelength_A, dtype=np.float64).ravel()
    flux = native_float(flux).ravel()
    mask = nonfinite_mask(flux) if mask is None else np.asarray(mask, dtype=bool).ravel()
    if wavelength_A.size != flux.size or mask.size != flux.size:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: {wavelength_A.size} wavelengths but {flux.size} flux values"
            + ("" if mask.size == flux.size else f" and {mask.size} quality values"),
        )
    if flux.size == 0:
        raise SpectrumRejected(RejectReason.EMPTY_FLUX, f"{where}: spectrum has no pixels")
    if not np.isfinite(wavelength_A).all():
        bad = int((~np.isfinite(wavelength_A)).sum())
        raise SpectrumRejected(
            RejectReason.UNREADABLE, f"{where}: {bad} non-finite wavelength values"
        )
    if not (wavelength_A > 0).all():
        bad = int((wavelength_A <= 0).sum())
        raise SpectrumRejected(
            RejectReason.UNREADABLE, f"{where}: {bad} wavelength values are zero or negative"
        )
    step = np.diff(wavelength_A)
    if not (step > 0).all():
        if (step < 0).all():
            wavelength_A = wavelength_A[::-1].copy()
            flux = flux[::-1].copy()
            mask = mask[::-1].copy()
        else:
            order = np.argsort(wavelength_A, kind="stable")
            wavelength_A = wavelength_A[order]
            flux = flux[order]
            mask = mask[order]
            repeated = int((np.diff(wavelength_A) == 0).sum())
            if repeated:
                raise SpectrumRejected(
                    RejectReason.UNREADABLE,
                    f"{where}: {repeated} repeated wavelength values; pixels cannot be ordered",
                )
    return Spectrum(
        wavelength_A=wavelength_A, flux=flux, medium=medium, format=format, meta=meta, mask=mask
    )
