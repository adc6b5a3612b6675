"""LAMOST low-resolution spectra (LRS): the 5-row primary image and the DR8+ binary table.

``lamost-lrs-image`` (DR1-DR8): the primary HDU is an image of shape (5, N) with rows flux,
inverse variance, wavelength (or, in DR1, a sub-continuum), and-mask, or-mask. The wavelength is
the header's log-linear solution, ``10 ** (CRVAL1 + CD1_1 * (i + 1 - CRPIX1))`` for 0-based pixel
``i`` (CDELT1 when CD1_1 is absent, CRPIX1 = 1 when absent), with fallbacks for broken headers
(missing-marker ``-9999`` cards, WCS and COEFF0/COEFF1 that disagree): see
:mod:`~oraculum.spectra.readers.loglinear`. Row 2 is used only as such a fallback, and only when
it holds plausible wavelengths (in DR1 it does not). Wavelengths are in vacuum (LAMOST sets
VACUUM = T; only an explicit VACUUM = F makes them air). The bad-pixel mask comes from the
inverse-variance and and-mask rows (:func:`~oraculum.spectra.readers.masks.lamost_mask`).

This is by far the bulk of the archive, so it has two implementations that must agree bit for
bit: :func:`read_lrs_image` through astropy (the reference) and :func:`read_lrs_image_fast`,
which scans the header cards and ``numpy.frombuffer``-s the rows directly, about ten times
faster, and returns ``None`` (caller falls back to astropy) whenever it is not certain (also
when the wavelength solution needs row 2). Both share the wavelength, medium, mask and metadata
code below, so they can only differ in how they read header values and pixels - which is what
the equality test on real files checks.

``lamost-lrs-table`` (DR8+): empty primary HDU + a binary table (typically ``COADD``) with one
row of array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK (one row per pixel tolerated).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.arrays import make_spectrum, native_float
from oraculum.spectra.readers.fits_header import HeaderCards, Unsure, keyword_fields
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, header_get, hdu_label
from oraculum.spectra.readers.loglinear import KEYWORDS as LOGLINEAR_KEYWORDS
from oraculum.spectra.readers.loglinear import LogLinear, NeedRow, log_linear_solution
from oraculum.spectra.readers.masks import lamost_mask
from oraculum.spectra.readers.metadata import (
    META_KEYWORDS,
    HeaderGet,
    first_of,
    is_sdss_telescope,
    meta_from_header,
)
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import Medium

FORMAT_IMAGE = "lamost-lrs-image"
FORMAT_TABLE = "lamost-lrs-table"

#: Rows of the LAMOST LRS image: flux, inverse variance, wavelength, and-mask, or-mask.
_ROWS = 5
_IVAR_ROW, _WAVELENGTH_ROW, _ANDMASK_ROW = 1, 2, 3


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


def solution_wavelength_A(solution: LogLinear | np.ndarray, n_pixels: int) -> tuple[np.ndarray, bool]:
    """Increasing wavelengths (Å) of a :func:`log_linear_solution` result, and whether the pixels
    run backwards."""
    if isinstance(solution, np.ndarray):
        reverse = bool(solution[0] > solution[-1])
        return (solution[::-1].copy() if reverse else solution), reverse
    return lrs_wavelength_A(n_pixels, *solution)


def lamost_medium(get: HeaderGet) -> Medium:
    """LAMOST wavelengths are vacuum (VACUUM = T); only an explicit VACUUM = F means air."""
    return "air" if get("VACUUM") is False else "vacuum"


def _lrs_spectrum(
    rows: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    get: HeaderGet,
    solution: LogLinear | np.ndarray,
) -> Spectrum:
    """The common tail of both LRS image paths: identical inputs give identical spectra.
    ``rows``: flux, and the inverse-variance and and-mask rows when the layout has them."""
    flux, ivar, andmask = rows
    wavelength, reverse = solution_wavelength_A(solution, flux.size)
    mask = lamost_mask(flux, ivar, andmask)
    if reverse:
        flux = flux[::-1].copy()
        mask = mask[::-1].copy()
    return Spectrum(
        wavelength_A=wavelength,
        flux=flux,
        medium=lamost_medium(get),
        format=FORMAT_IMAGE,
        meta=meta_from_header(get),
        mask=mask,
    )


def read_lrs_image(hdu: fits.PrimaryHDU, total_bytes: int, name: str) -> Spectrum | None:
    """Reference path: a (rows, N) primary image through astropy; row 0 is the flux.

    ``None`` when the image has no log-linear wavelength solution (nor a wavelength row): not a
    LAMOST spectrum; the caller tries the other 2-D layouts.
    """
    get = header_get(hdu.header)
    n_pixels, n_rows = hdu.header.get("NAXIS1"), hdu.header.get("NAXIS2")
    if n_rows > n_pixels:
        return None  # pixels along the rows: a column layout, not LAMOST
    check_data_complete(hdu, 0, total_bytes, name)
    image = hdu.data
    solution = log_linear_solution(
        get, n_pixels, row=lambda: image[_WAVELENGTH_ROW] if n_rows > _WAVELENGTH_ROW else None
    )
    if solution is None:
        return None
    lamost_rows = n_rows == _ROWS
    rows = (
        native_float(image[0]),
        image[_IVAR_ROW] if lamost_rows else None,
        image[_ANDMASK_ROW] if lamost_rows else None,
    )
    return _lrs_spectrum(rows, get, solution)


#: Every keyword the fast path (and the shared code it calls) may ask for.
_FAST_FIELDS = keyword_fields(
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BSCALE", "BZERO", "BLANK", "GROUPS",
    "PCOUNT", "GCOUNT", "VACUUM", "TELESCOP", *LOGLINEAR_KEYWORDS, *META_KEYWORDS,
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

    Reads only the header cards it needs (:class:`HeaderCards`) and the flux, inverse-variance
    and and-mask rows (``numpy.frombuffer``). Anything unusual - another layout, an SDSS file,
    integer pixels without scaling, BLANK, random groups, a truncated file, a header card it
    cannot read exactly as astropy does, a wavelength solution that needs the wavelength row -
    returns ``None`` so that the astropy path decides (and explains any rejection).
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
            or n2 > n1
            or "BLANK" in values
            or "GROUPS" in values
            or "PCOUNT" in values
            or "GCOUNT" in values
            or is_sdss_telescope(get)  # an spSpec image
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
        solution = log_linear_solution(get, n1)  # NeedRow: the astropy path reads row 2
        if solution is None:
            return None

        def row(index: int, native: bool = True) -> np.ndarray:
            """Row ``index`` as astropy scales it (native byte order: a copy; else, unscaled,
            a read-only view, enough for the mask)."""
            raw = np.frombuffer(data, dtype=dtype, count=n1, offset=offset + index * n1 * dtype.itemsize)
            scaled = _scale_like_astropy(raw, bitpix, bscale, bzero)
            return scaled.astype(scaled.dtype.newbyteorder("=")) if native else scaled

        lamost_rows = n2 == _ROWS
        rows = (
            row(0),
            row(_IVAR_ROW, native=False) if lamost_rows else None,
            row(_ANDMASK_ROW, native=False) if lamost_rows else None,
        )
        return _lrs_spectrum(rows, get, solution)
    except (Unsure, SpectrumRejected, NeedRow):
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
        mask=lamost_table_mask(hdu, columns, flux, where),
    )


def lamost_table_mask(hdu: fits.BinTableHDU, columns: dict[str, str], flux: np.ndarray, where: str) -> np.ndarray:
    """The LAMOST bad-pixel mask of a table's IVAR and ANDMASK columns (DR8+ LRS, MRS arms);
    a column the table lacks is left out."""
    ivar = column_array(hdu, columns["IVAR"], where) if "IVAR" in columns else None
    andmask = column_array(hdu, columns["ANDMASK"], where) if "ANDMASK" in columns else None
    if (ivar is not None and ivar.size != flux.size) or (andmask is not None and andmask.size != flux.size):
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT, f"{where}: IVAR/ANDMASK columns do not match FLUX in length"
        )
    return lamost_mask(np.asarray(flux), ivar, andmask)
