"""Generic 1-D spectra: a FITS binary table, a CSV/TSV text table, or a 2-D image of rows or
columns (wavelength, flux[, error]).

Columns are recognised by name (see :mod:`oraculum.spectra.readers.columns`): wavelength as
wave/wavelength/lambda/spectral/... (or loglam = log10 Å), flux as flux/flam/...; a unit in the
column name (``wavelength [nm]``) or in TUNITn converts to Å.

``generic-image``: a 2-D primary image that is neither LAMOST nor SDSS (no log-linear wavelength
solution) and whose first row (or column) holds wavelengths in Å - finite, strictly monotonic,
positive - and the second the flux; a third, the error, is not used. Shapes (2-3, N) and (N, 2-3).

Medium: what the file states (:func:`~oraculum.spectra.readers.columns.stated_medium`: a column
name or TTYPEn comment such as ``wave_air`` or 'Air wavelength', VACUUM, AIRORVAC, TCTYPn/CTYPE1
WAVE or AWAV, IRAF WAT strings, in CSV a ``#`` comment line), else **vacuum**, the convention of
the modern survey archives (SDSS, LAMOST, Gaia, DESI), with a warning recorded with the spectrum
(``SpectrumMeta.warnings``): H-alpha is 1.8 Å apart in the two media.
"""

from __future__ import annotations

import csv
import io

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.arrays import make_spectrum
from oraculum.spectra.readers.columns import (
    find_columns,
    is_log_wavelength,
    medium_or_default,
    split_name,
    stated_medium,
    unit_factor_A,
)
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, header_get, hdu_label
from oraculum.spectra.readers.metadata import first_of, meta_from_header, wcs_cards
from oraculum.spectra.spectrum import RejectReason, SpectrumMeta, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import Medium

FORMAT_TABLE = "generic-table"
FORMAT_CSV = "generic-csv"
FORMAT_IMAGE = "generic-image"
#: What a generic file is assumed to be in when it does not say.
DEFAULT_MEDIUM: Medium = "vacuum"


def table_columns(hdu: fits.BinTableHDU) -> tuple[int, int] | None:
    """Indices of the wavelength and flux columns of a binary table, or None."""
    return find_columns(list(hdu.columns.names or []))


def _fits_medium(hdus: list, index: int, wave_i: int) -> tuple[Medium, tuple[str, ...]]:
    header = hdus[index].header
    key = f"TTYPE{wave_i + 1}"
    comment = header.comments[key] if key in header else ""
    get = first_of(header_get(header), header_get(hdus[0].header))
    stated = stated_medium(
        get, hdus[index].columns.names[wave_i], comment, ctypes=(f"TCTYP{wave_i + 1}", "CTYPE1")
    )
    return medium_or_default(stated, DEFAULT_MEDIUM)


def read_generic_table(hdus: list, index: int, total_bytes: int, name: str) -> Spectrum:
    """``generic-table``: the first binary table with wavelength and flux columns."""
    hdu = hdus[index]
    where = f"{name}: {hdu_label(index, hdu)}"
    found = table_columns(hdu)
    assert found is not None
    wave_i, flux_i = found
    check_data_complete(hdu, index, total_bytes, name)
    names = hdu.columns.names
    _, unit_in_name = split_name(names[wave_i])
    wavelength = np.asarray(column_array(hdu, names[wave_i], where), dtype=np.float64)
    if is_log_wavelength(names[wave_i]):
        wavelength = 10.0**wavelength
    else:
        unit = hdu.header.get(f"TUNIT{wave_i + 1}") or unit_in_name
        factor = unit_factor_A(unit if isinstance(unit, str) else None)
        if factor is None:
            raise SpectrumRejected(
                RejectReason.UNKNOWN_LAYOUT,
                f"{where}: unit {unit!r} of wavelength column {names[wave_i]!r} not understood",
            )
        wavelength = wavelength * factor
    flux = column_array(hdu, names[flux_i], where)
    get = first_of(header_get(hdu.header), header_get(hdus[0].header))
    medium, warnings = _fits_medium(hdus, index, wave_i)
    meta = meta_from_header(get)
    meta.warnings = warnings
    return make_spectrum(wavelength, flux, medium=medium, format=FORMAT_TABLE, meta=meta, where=where)


# --- 2-D images of rows or columns --------------------------------------------------------------


def _first_wavelengths(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(wavelength, flux) from the rows, else the columns, of a 2-D image whose first row
    (column) is finite, strictly monotonic and positive; None when neither is."""
    for layout in (image, image.T):
        if not 2 <= layout.shape[0] <= 3 or layout.shape[1] < 2:
            continue
        wavelength = np.asarray(layout[0], dtype=np.float64)
        step = np.diff(wavelength)
        if (
            np.isfinite(wavelength).all()
            and (wavelength > 0).all()
            and ((step > 0).all() or (step < 0).all())
        ):
            return wavelength, layout[1]
    return None


def read_image_rows(hdu: fits.PrimaryHDU, total_bytes: int, name: str) -> Spectrum:
    """``generic-image``: a 2-D primary image of rows or columns (wavelength in Å, flux[, error])
    with no log-linear wavelength solution; anything else is rejected as an unknown layout."""
    where = f"{name}: {hdu_label(0, hdu)}"
    get = header_get(hdu.header)
    check_data_complete(hdu, 0, total_bytes, name)
    found = _first_wavelengths(np.asarray(hdu.data))
    if found is None:
        crval, step, crpix = wcs_cards(get)
        shape = (hdu.header.get("NAXIS2"), hdu.header.get("NAXIS1"))
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: 2-D image of shape {shape} without a usable log-linear wavelength solution "
            f"(CRVAL1={crval!r}, CD1_1/CDELT1={step!r}, CRPIX1={crpix!r}, COEFF0={get('COEFF0')!r}, "
            f"COEFF1={get('COEFF1')!r}) and without a wavelength row or column; expected a "
            "LAMOST or SDSS spectrum, or a 1-D spectrum stored as 2-3 rows or columns "
            "(wavelength in Å, flux[, error])",
        )
    wavelength, flux = found
    medium, warnings = medium_or_default(stated_medium(get), DEFAULT_MEDIUM)
    meta = meta_from_header(get)
    meta.warnings = warnings
    return make_spectrum(wavelength, flux, medium=medium, format=FORMAT_IMAGE, meta=meta, where=where)


# --- CSV / TSV ---------------------------------------------------------------------------------

_SNIFF_BYTES = 4096


def looks_like_text(data: bytes) -> bool:
    """Printable text (UTF-8, no NUL bytes) at the start: worth trying as a CSV table."""
    head = data[:_SNIFF_BYTES]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut by the sniff window is fine
        if error.start < len(head) - 4:
            return False
    return True


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [field.strip() for field in next(csv.reader([line], delimiter=delimiter))]


def _delimiter(header: str) -> str | None:
    for candidate in ("\t", ",", ";", "|"):
        if candidate in header:
            return candidate
    return None


def read_csv(data: bytes, name: str) -> Spectrum:
    """``generic-csv``: a header line naming the columns, then one row per pixel.

    Lines that are blank or start with ``#`` are comments. The delimiter is the first of tab,
    comma, semicolon, | found in the header line, else whitespace. Raises ``not-fits`` when the
    text is not a table at all, ``unknown-layout`` when it is a table without recognisable
    columns, ``unreadable`` for a row that is not numbers.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpectrumRejected(
            RejectReason.NOT_FITS,
            f"{name}: does not start with 'SIMPLE  =' (not FITS) and is not UTF-8 text "
            f"({error.reason} at byte {error.start})",
        ) from None
    comments: list[str] = []
    rows: list[tuple[int, str]] = []
    for number, line in enumerate(io.StringIO(text), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        rows.append((number, stripped))
    if not rows:
        raise SpectrumRejected(
            RejectReason.NOT_FITS,
            f"{name}: does not start with 'SIMPLE  =' (not FITS) and is a text file without any "
            "table rows",
        )
    header_line = rows[0][1]
    delimiter = _delimiter(header_line)
    names = _split(header_line, delimiter)
    found = find_columns(names)
    if found is None:
        second = _split(rows[1][1], delimiter) if len(rows) > 1 else []
        if len(names) >= 2 and len(second) == len(names):
            raise SpectrumRejected(
                RejectReason.UNKNOWN_LAYOUT,
                f"{name}: text table with columns {names}; expected a wavelength column "
                "(wave, wavelength, lambda, loglam, spectral, ...) and a flux column (flux, ...)",
            )
        raise SpectrumRejected(
            RejectReason.NOT_FITS,
            f"{name}: does not start with 'SIMPLE  =' (not FITS) and is not a CSV/TSV table with "
            f"wavelength and flux columns (first line: {header_line[:80]!r})",
        )
    wave_i, flux_i = found
    wavelength = np.empty(len(rows) - 1, dtype=np.float64)
    flux = np.empty(len(rows) - 1, dtype=np.float64)
    for k, (number, line) in enumerate(rows[1:]):
        fields = _split(line, delimiter)
        if len(fields) != len(names):
            raise SpectrumRejected(
                RejectReason.UNREADABLE,
                f"{name}: line {number} has {len(fields)} fields, the header has {len(names)}",
            )
        for target, column in ((wavelength, wave_i), (flux, flux_i)):
            try:
                target[k] = float(fields[column])
            except ValueError:
                raise SpectrumRejected(
                    RejectReason.UNREADABLE,
                    f"{name}: line {number}, column {names[column]!r}: {fields[column][:40]!r} "
                    "is not a number",
                ) from None
    _, unit = split_name(names[wave_i])
    if is_log_wavelength(names[wave_i]):
        wavelength = 10.0**wavelength
    else:
        factor = unit_factor_A(unit)
        if factor is None:
            raise SpectrumRejected(
                RejectReason.UNKNOWN_LAYOUT,
                f"{name}: unit {unit!r} of wavelength column {names[wave_i]!r} not understood",
            )
        wavelength = wavelength * factor
    medium, warnings = medium_or_default(stated_medium(lambda _: None, names[wave_i], *comments), DEFAULT_MEDIUM)
    return make_spectrum(
        wavelength, flux, medium=medium, format=FORMAT_CSV, meta=SpectrumMeta(warnings=warnings), where=name
    )
