"""Opening FITS bytes with astropy for the reference path, with every failure classified.

astropy signals problems with a zoo of exception types and warnings (``OSError`` for a missing
END card, ``TypeError`` when data is cut short, warnings when an extension cannot be parsed).
The helpers here turn them into :class:`SpectrumRejected` with a reason and a message that
names what is wrong, and check explicitly that the data of each HDU we read is complete, because
astropy does not always complain about a truncated file.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.metadata import HeaderGet
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected

BLOCK_BYTES = 2880


@contextlib.contextmanager
def open_fits(data: bytes, name: str) -> Iterator[fits.HDUList]:
    """``astropy.io.fits.open`` on bytes; any astropy/numpy error becomes a rejection.

    Warnings are silenced (a malformed card is judged by what we can read, not by astropy's
    verification). HDUs are loaded lazily, so a reader that only needs the primary HDU does not
    depend on what follows it.
    """
    if len(data) < BLOCK_BYTES:
        raise SpectrumRejected(
            RejectReason.TRUNCATED,
            f"{name}: {len(data)} bytes, shorter than one {BLOCK_BYTES}-byte FITS header block",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with fits.open(io.BytesIO(data), lazy_load_hdus=True, memmap=False) as hdul:
                yield hdul
        except SpectrumRejected:
            raise
        except OSError as error:
            if "END" in str(error):
                raise SpectrumRejected(
                    RejectReason.TRUNCATED,
                    f"{name}: a header has no END card before the end of the file "
                    f"({len(data)} bytes); the file is truncated",
                ) from None
            raise SpectrumRejected(RejectReason.UNREADABLE, f"{name}: {error}") from None
        except Exception as error:  # noqa: BLE001 - astropy raises many types; none may escape
            raise SpectrumRejected(
                RejectReason.UNREADABLE,
                f"{name}: astropy cannot read it ({type(error).__name__}: {error})",
            ) from None


def header_get(header: fits.Header) -> HeaderGet:
    """A ``get(keyword)`` over an astropy header: missing, blank (Undefined) or unparsable -> None."""

    def get(keyword: str) -> object:
        try:
            value = header.get(keyword)
        except Exception:  # noqa: BLE001 - an unparsable card is a missing value
            return None
        if value is None or isinstance(value, fits.card.Undefined):
            return None
        return value

    return get


def hdu_label(index: int, hdu: fits.hdu.base._BaseHDU) -> str:
    """'HDU 1 (COADD_B)' for messages."""
    return f"HDU {index} ({hdu.name})" if hdu.name else f"HDU {index}"


def check_data_complete(hdu: fits.hdu.base._BaseHDU, index: int, total_bytes: int, name: str) -> None:
    """Reject as truncated when the file ends before the HDU's data does."""
    start = hdu.fileinfo()["datLoc"]
    expected = hdu.size
    found = max(min(total_bytes - start, expected), 0)
    if found < expected:
        raise SpectrumRejected(
            RejectReason.TRUNCATED,
            f"{name}: {hdu_label(index, hdu)} expected {expected} bytes of data, found {found}; "
            "the file is truncated",
        )


def load_all(hdul: fits.HDUList, total_bytes: int, data: bytes, name: str) -> list:
    """All HDUs, rejecting a truncated file: an HDU whose data ends past the end of the file,
    or an extension header that astropy silently dropped because it was cut short. Any HDU,
    not only the one we read: a cut file is a broken download, whatever part survived."""
    len(hdul)  # reads every header (data stays lazy)
    hdus = list(hdul)
    for index, hdu in enumerate(hdus):
        check_data_complete(hdu, index, total_bytes, name)
    info = hdus[-1].fileinfo()
    end = info["datLoc"] + info["datSpan"]
    if end < total_bytes and data[end : end + 8] == b"XTENSION":
        raise SpectrumRejected(
            RejectReason.TRUNCATED,
            f"{name}: the header of HDU {len(hdus)} starts at byte {end} but is incomplete; "
            "the file is truncated",
        )
    return hdus


def describe(hdus: list) -> str:
    """A one-line summary of the HDUs, for 'unknown layout' messages."""
    parts = []
    for index, hdu in enumerate(hdus):
        label = hdu_label(index, hdu)
        if isinstance(hdu, fits.BinTableHDU):
            columns = ", ".join(hdu.columns.names or [])
            parts.append(f"{label} binary table, {hdu.header.get('NAXIS2', 0)} rows, columns [{columns}]")
        elif isinstance(hdu, fits.TableHDU):
            parts.append(f"{label} ASCII table, columns [{', '.join(hdu.columns.names or [])}]")
        else:
            naxis = int(hdu.header.get("NAXIS", 0) or 0)
            shape = tuple(hdu.header.get(f"NAXIS{i}", 0) for i in range(naxis, 0, -1))
            parts.append(f"{label} image {shape}" if naxis and all(shape) else f"{label} empty")
    return "; ".join(parts)


def column_array(hdu: fits.BinTableHDU, column: str, where: str) -> np.ndarray:
    """One spectrum from a table column: the column itself (one row per pixel) or the single
    row's array (one row of array columns, the LAMOST DR8+ layout)."""
    values = np.asarray(hdu.data[column])
    rows = int(hdu.header.get("NAXIS2", 0) or 0)
    if values.ndim == 1 and values.dtype != object:
        return values
    if rows == 1:
        row = values[0]
        return np.asarray(row).ravel()
    raise SpectrumRejected(
        RejectReason.UNKNOWN_LAYOUT,
        f"{where}: column {column!r} holds arrays in {rows} rows; expected one row of arrays "
        "or one row per pixel",
    )
