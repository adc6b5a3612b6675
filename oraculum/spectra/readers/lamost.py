"""LAMOST low-resolution spectra (LRS): the 5-row primary image and the DR8+ binary table.

``lamost-lrs-image`` (DR1-DR7): the primary HDU is an image of shape (5, N) with rows flux,
inverse variance, wavelength (or, in DR1, a sub-continuum), and-mask, or-mask. The wavelength is
*always* taken from the header's log-linear WCS, ``10 ** (CRVAL1 + CD1_1 * (i + 1 - CRPIX1))``
for 0-based pixel ``i`` (CDELT1 when CD1_1 is absent, CRPIX1 = 1 when absent as in LAMOST's
COEFF0 convention), never from row 2: in DR1 that row is not the wavelength. Wavelengths are in
vacuum (LAMOST sets VACUUM = T; only an explicit VACUUM = F makes them air).

This is by far the bulk of the archive, so it has two implementations that must agree bit for
bit: :func:`read_lrs_image` through astropy (the reference) and :func:`read_lrs_image_fast`,
which scans the header cards and ``numpy.frombuffer``-s the flux row directly, about ten times
faster, and returns ``None`` (caller falls back to astropy) whenever it is not certain. Both share
the WCS, wavelength, medium and metadata code below, so they can only differ in how they read
header values and pixels - which is what the equality test on real files checks.

``lamost-lrs-table`` (DR8+): empty primary HDU + a binary table (typically ``COADD``) with one
row of array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK (one row per pixel tolerated).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.arrays import make_spectrum, native_float
from oraculum.spectra.readers.fits_header import HeaderCards, Unsure, keyword_fields
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, header_get, hdu_label
from oraculum.spectra.readers.metadata import META_KEYWORDS, HeaderGet, first_of, meta_from_header, wcs_cards
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import Medium

FORMAT_IMAGE = "lamost-lrs-image"
FORMAT_TABLE = "lamost-lrs-table"

#: A log-linear WCS has CRVAL1 = log10 of the first wavelength in Å; 2..6 is 100 Å..1e6 Å.
#: Anything outside is a linear WCS (or garbage) and not a LAMOST LRS image.
_LOG10_CRVAL_RANGE = (2.0, 6.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lrs_wcs(get: HeaderGet, where: str) -> tuple[float, float, float]:
    """(CRVAL1, step, CRPIX1) of a LAMOST log-linear wavelength WCS, or a rejection."""
    crval, step, crpix = wcs_cards(get)
    if not (_is_number(crval) and _is_number(step) and _is_number(crpix)) or step == 0:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: 2-D primary image without a usable log-linear wavelength WCS "
            f"(CRVAL1={crval!r}, CD1_1/CDELT1={step!r}, CRPIX1={crpix!r}); expected a LAMOST "
            "low-resolution spectrum",
        )
    low, high = _LOG10_CRVAL_RANGE
    if not low < crval < high:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: 2-D primary image with CRVAL1={crval!r}, not a log10 wavelength in Å "
            f"({low}..{high}); expected a LAMOST low-resolution spectrum",
        )
    return float(crval), float(step), float(crpix)


@lru_cache(maxsize=256)
def lrs_wavelength_A(n_pixels: int, crval: float, step: float, crpix: float) -> tuple[np.ndarray, bool]:
    """Vacuum wavelengths (Å, read-only, increasing) of the log-linear WCS, and whether the
    pixels run backwards (negative step; flux must then be reversed).

    Cached: the whole archive uses a handful of distinct WCS, and 10**x over 3909 pixels is a
    noticeable part of the per-file cost. The array is shared, hence read-only.
    """
    wavelength = 10.0 ** (crval + step * (np.arange(n_pixels, dtype=np.float64) + 1.0 - crpix))
    reverse = step < 0
    if reverse:
        wavelength = wavelength[::-1].copy()
    if not np.isfinite(wavelength).all() or not (np.diff(wavelength) > 0).all():
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"log-linear WCS (CRVAL1={crval}, step={step}, CRPIX1={crpix}) does not give finite, "
            f"distinct wavelengths for {n_pixels} pixels",
        )
    wavelength.setflags(write=False)
    return wavelength, reverse


def lamost_medium(get: HeaderGet) -> Medium:
    """LAMOST wavelengths are vacuum (VACUUM = T); only an explicit VACUUM = F means air."""
    return "air" if get("VACUUM") is False else "vacuum"


def _lrs_spectrum(flux: np.ndarray, get: HeaderGet, wcs: tuple[float, float, float]) -> Spectrum:
    """The common tail of both LRS image paths: identical inputs give identical spectra."""
    wavelength, reverse = lrs_wavelength_A(flux.size, *wcs)
    if reverse:
        flux = flux[::-1].copy()
    return Spectrum(
        wavelength_A=wavelength,
        flux=flux,
        medium=lamost_medium(get),
        format=FORMAT_IMAGE,
        meta=meta_from_header(get),
    )


def read_lrs_image(hdu: fits.PrimaryHDU, total_bytes: int, name: str) -> Spectrum:
    """Reference path: a (rows, N) primary image through astropy; row 0 is the flux."""
    get = header_get(hdu.header)
    where = f"{name}: {hdu_label(0, hdu)}"
    wcs = lrs_wcs(get, where)
    check_data_complete(hdu, 0, total_bytes, name)
    image = hdu.data
    return _lrs_spectrum(native_float(image[0]), get, wcs)


#: Every keyword the fast path (and the shared code it calls) may ask for.
_FAST_FIELDS = keyword_fields(
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BSCALE", "BZERO", "BLANK", "GROUPS",
    "PCOUNT", "GCOUNT", "CRVAL1", "CD1_1", "CDELT1", "CRPIX1", "VACUUM", *META_KEYWORDS,
)  # fmt: skip
_FLOAT_DTYPES = {-32: np.dtype(">f4"), -64: np.dtype(">f8")}
_INT_DTYPES = {16: np.dtype(">i2"), 32: np.dtype(">i4")}


def _scale_like_astropy(raw: np.ndarray, bitpix: int, bscale: float, bzero: float) -> np.ndarray:
    """BSCALE/BZERO applied with the same operations, dtypes and order as
    ``astropy.io.fits.ImageHDU._scale_data``, so the floats are identical."""
    if bzero == 0 and bscale == 1:
        return raw
    if bitpix < 0:
        data = raw.copy()
    else:  # astropy: 8/16-bit integers scale to float32, wider ones to float64
        data = np.array(raw, dtype=np.float32 if bitpix <= 16 else np.float64)
    if bscale != 1:
        np.multiply(data, bscale, data)
    if bzero != 0:
        data += bzero
    return data


def read_lrs_image_fast(data: bytes) -> Spectrum | None:
    """Fast path for uncompressed LRS image bytes; ``None`` when not certain (use astropy).

    Reads only the header cards it needs (:class:`HeaderCards`) and the flux row
    (``numpy.frombuffer``). Anything unusual - another layout, integer pixels without scaling,
    BLANK, random groups, a truncated file, a header card it cannot read exactly as astropy
    does - returns ``None`` so that the astropy path decides (and explains any rejection).
    """
    try:
        cards = HeaderCards(data)
        values = cards.values(_FAST_FIELDS)
        get = values.get
        bitpix, naxis, n1, n2 = get("BITPIX"), get("NAXIS"), get("NAXIS1"), get("NAXIS2")
        if (
            get("SIMPLE") is not True
            or type(bitpix) is not int
            or type(naxis) is not int
            or type(n1) is not int
            or type(n2) is not int
            or naxis != 2
            or n1 < 2
            or n2 < 1
            or "BLANK" in values
            or "GROUPS" in values
            or "PCOUNT" in values
            or "GCOUNT" in values
        ):
            return None
        bscale = get("BSCALE")
        bzero = get("BZERO")
        bscale = 1 if bscale is None else bscale
        bzero = 0 if bzero is None else bzero
        if type(bscale) not in (int, float) or type(bzero) not in (int, float):
            return None
        dtype = _FLOAT_DTYPES.get(bitpix)
        if dtype is None:
            # Integer images only when genuinely scaled (unscaled and pseudo-unsigned integers
            # follow other astropy rules; rare enough to leave to astropy).
            dtype = _INT_DTYPES.get(bitpix)
            if dtype is None or bscale == 1:
                return None
        offset = cards.data_offset
        if offset + n1 * n2 * dtype.itemsize > len(data):
            return None  # truncated: the astropy path explains it
        wcs = lrs_wcs(get, "")
        lrs_wavelength_A(n1, *wcs)  # validates the WCS (cached)
        raw = np.frombuffer(data, dtype=dtype, count=n1, offset=offset)
        flux = _scale_like_astropy(raw, bitpix, bscale, bzero)
        return _lrs_spectrum(flux.astype(flux.dtype.newbyteorder("=")), get, wcs)
    except (Unsure, SpectrumRejected):
        return None


def is_lrs_table(hdu: fits.BinTableHDU) -> bool:
    """A LAMOST DR8+ table: FLUX and WAVELENGTH (or LOGLAM) columns, and IVAR or EXTNAME COADD."""
    names = {name.upper() for name in hdu.columns.names or []}
    return (
        "FLUX" in names
        and ("WAVELENGTH" in names or "LOGLAM" in names)
        and ("IVAR" in names or hdu.name.upper() == "COADD")
    )


def read_lrs_table(
    hdus: list, index: int, total_bytes: int, name: str
) -> Spectrum:
    """``lamost-lrs-table``: FLUX and WAVELENGTH (Å, vacuum) or LOGLAM (log10 Å) columns."""
    hdu = hdus[index]
    where = f"{name}: {hdu_label(index, hdu)}"
    check_data_complete(hdu, index, total_bytes, name)
    columns = {column.upper(): column for column in hdu.columns.names}
    flux = column_array(hdu, columns["FLUX"], where)
    if "WAVELENGTH" in columns:
        wavelength = np.asarray(column_array(hdu, columns["WAVELENGTH"], where), dtype=np.float64)
    else:
        wavelength = 10.0 ** np.asarray(column_array(hdu, columns["LOGLAM"], where), dtype=np.float64)
    get = first_of(header_get(hdus[0].header), header_get(hdu.header))
    return make_spectrum(
        wavelength,
        flux,
        medium=lamost_medium(get),
        format=FORMAT_TABLE,
        meta=meta_from_header(get),
        where=where,
    )
