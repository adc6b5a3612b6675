"""LAMOST medium-resolution spectra (MRS, DR6+): one file, several arms and exposures.

Layout: an empty primary HDU with the target's metadata, then binary tables, one row per pixel,
with columns FLUX, IVAR, LOGLAM (log10 of the vacuum wavelength in Å), ...:
``COADD_B`` (blue arm, ~4950-5350 Å) and ``COADD_R`` (red arm, ~6300-6800 Å, holds H-alpha) are
the co-added spectra; ``B-<lmjm>`` / ``R-<lmjm>`` are single exposures (red ones stored with
decreasing wavelength).

The bad-pixel mask comes from the arm's IVAR and ANDMASK columns (LAMOST rules, see
:mod:`~oraculum.spectra.readers.masks`).

A dataset needs one spectrum per file, on its grid, so the reader picks the arm that covers the
grid: co-added arms first (higher signal-to-noise), then single exposures (the one with the
highest SNR), so that a file whose co-add is missing is still usable. Without a grid it returns
``COADD_R``, the arm with H-alpha.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from oraculum.spectra.preprocessing import WavelengthGrid
from oraculum.spectra.readers.arrays import make_spectrum
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, describe, header_get, hdu_label
from oraculum.spectra.readers.lamost import lamost_table_mask
from oraculum.spectra.readers.metadata import first_of, meta_from_header
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected

FORMAT = "lamost-mrs"
_COADDS = ("COADD_R", "COADD_B")
_DEFAULT_ARM = "COADD_R"


def _is_arm_name(extname: str) -> bool:
    name = extname.upper()
    return name in _COADDS or name.startswith(("B-", "R-"))


def is_mrs(hdus: list) -> bool:
    """Whether the extensions are LAMOST MRS arms: named COADD_B/COADD_R/B-*/R-* with LOGLAM."""
    arms = [hdu for hdu in hdus[1:] if isinstance(hdu, fits.BinTableHDU) and _is_arm_name(hdu.name)]
    return bool(arms) and all(
        {"FLUX", "LOGLAM"} <= {name.upper() for name in hdu.columns.names or []} for hdu in arms
    )


def _snr(hdu: fits.BinTableHDU) -> float:
    value = header_get(hdu.header)("SNR")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -np.inf


def _candidates(hdus: list) -> list[int]:
    """Arm HDU indices in order of preference: COADD_R, COADD_B, then single exposures by SNR."""
    coadds = [i for name in _COADDS for i, hdu in enumerate(hdus) if hdu.name.upper() == name]
    singles = [
        i for i, hdu in enumerate(hdus)
        if isinstance(hdu, fits.BinTableHDU) and hdu.name.upper().startswith(("B-", "R-"))
    ]  # fmt: skip
    singles.sort(key=lambda i: -_snr(hdus[i]))  # stable: ties keep file order
    return coadds + singles


def read_mrs(hdus: list, total_bytes: int, name: str, grid: WavelengthGrid | None) -> Spectrum:
    """``lamost-mrs``: the arm covering ``grid`` (vacuum range), or COADD_R without a grid."""
    ranges: list[str] = []
    chosen: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
    if grid is None:
        indices = [i for i in _candidates(hdus) if hdus[i].name.upper() == _DEFAULT_ARM]
        if not indices:
            raise SpectrumRejected(
                RejectReason.UNKNOWN_LAYOUT,
                f"{name}: LAMOST MRS file without a {_DEFAULT_ARM} arm and no grid to choose "
                f"another; found {describe(hdus)}",
            )
        candidates = indices
        need = None
    else:
        candidates = _candidates(hdus)
        need = grid.range_in("vacuum")
    for index in candidates:
        hdu = hdus[index]
        where = f"{name}: {hdu_label(index, hdu)}"
        if int(hdu.header.get("NAXIS2", 0) or 0) < 2:
            ranges.append(f"{hdu.name} empty")
            continue
        check_data_complete(hdu, index, total_bytes, name)
        columns = {column.upper(): column for column in hdu.columns.names}
        loglam = np.asarray(column_array(hdu, columns["LOGLAM"], where), dtype=np.float64)
        wavelength = 10.0**loglam
        finite = wavelength[np.isfinite(wavelength)]
        if finite.size == 0:
            ranges.append(f"{hdu.name} no finite wavelengths")
            continue
        low, high = float(finite.min()), float(finite.max())
        ranges.append(f"{hdu.name} {low:.1f}-{high:.1f} Å")
        if need is None or (low <= need[0] and high >= need[1]):
            flux = column_array(hdu, columns["FLUX"], where)
            chosen = (index, wavelength, flux, lamost_table_mask(hdu, columns, flux, where))
            break
    if chosen is None:
        wanted = f"{need[0]:.1f}-{need[1]:.1f} Å (vacuum)" if need else _DEFAULT_ARM
        raise SpectrumRejected(
            RejectReason.GRID_NOT_COVERED,
            f"{name}: no LAMOST MRS arm covers the grid {wanted}; arms: {'; '.join(ranges)}",
        )
    index, wavelength, flux, mask = chosen
    arm = hdus[index]
    get = first_of(header_get(hdus[0].header), header_get(arm.header))
    snr = _snr(arm)
    return make_spectrum(
        wavelength,
        flux,
        medium="vacuum",
        format=FORMAT,
        meta=meta_from_header(get, snr=snr if np.isfinite(snr) else None),
        where=f"{name}: {hdu_label(index, arm)}",
        mask=mask,
    )
