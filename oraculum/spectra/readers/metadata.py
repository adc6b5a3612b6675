"""Header metadata -> :class:`~oraculum.spectra.spectrum.SpectrumMeta`, shared by every reader.

All readers, and both the astropy reference path and the fast header scanner, build metadata
through :func:`meta_from_header` from a ``get(keyword) -> value | None`` function, so the two
paths cannot disagree as long as they parse the same header values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from oraculum.spectra.spectrum import SpectrumMeta

HeaderGet = Callable[[str], object]

#: Every header keyword :func:`meta_from_header` may look at (the fast path scans exactly these).
META_KEYWORDS: tuple[str, ...] = (
    "OBSID",
    "DESIG",
    "RA",
    "DEC",
    "CLASS",
    "SUBCLASS",
    "SNRR",
    "SN_R",
    "SNR",
    "MJD",
    "MJD-OBS",
    "TMID",
    "JD",
    "OBJECT",
    "OBJNAME",
    "Z",
)

#: The value LAMOST (and others) write for "unknown" into numeric header cards (CRPIX1, Z, ...).
MISSING_MARKER = -9999

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SEXAGESIMAL = re.compile(
    r"(?P<sign>[+-])?\s*(?P<a>\d+)[:\s]+(?P<b>\d+(?:\.\d*)?)(?:[:\s]+(?P<c>\d+(?:\.\d*)?))?"
)


def is_sdss_telescope(get: HeaderGet) -> bool:
    """TELESCOP = 'SDSS 2.5-M' (or any SDSS telescope): an SDSS file, whatever its layout."""
    telescope = get("TELESCOP")
    return isinstance(telescope, str) and telescope.strip().upper().startswith("SDSS")


def is_missing_marker(value: object) -> bool:
    """Whether a header value is the "missing" marker -9999 (as a number or a string)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == MISSING_MARKER
    return isinstance(value, str) and value.strip() in ("-9999", "-9999.0")


def as_number(value: object) -> float | None:
    """A header value as a finite float, or None (booleans and non-numbers are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def as_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def as_integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def angle_deg(value: object, *, hours: bool) -> float | None:
    """An RA or Dec header value in degrees.

    Numbers (and decimal strings) are taken as degrees. Sexagesimal strings such as
    ``'21:57:18.2'`` (Ondřejov CCD700 headers) are hours for right ascension (``hours=True``) and
    degrees for declination, following the astronomical convention.
    """
    number = as_number(value)
    if number is not None:
        return number
    if not isinstance(value, str):
        return None
    match = _SEXAGESIMAL.fullmatch(value.strip())
    if match is None:
        return None
    magnitude = (
        float(match["a"]) + float(match["b"]) / 60.0 + float(match["c"] or 0.0) / 3600.0
    )
    if match["sign"] == "-":
        magnitude = -magnitude
    return magnitude * 15.0 if hours else magnitude


def first_of(*gets: HeaderGet) -> HeaderGet:
    """A ``get`` that asks each header in turn (e.g. extension, then primary)."""

    def get(keyword: str) -> object:
        for one in gets:
            value = one(keyword)
            if value is not None:
                return value
        return None

    return get


def meta_from_header(get: HeaderGet, *, snr: float | None = None) -> SpectrumMeta:
    """Metadata from header values; anything missing or malformed becomes ``None``.

    ``snr``: LAMOST low-resolution SNRR (DR4+; SN_R in DR1-DR3, the same quantity), else a
    generic SNR keyword; the caller may override it (the MRS reader passes the chosen arm's).
    The observation date is MJD, else MJD-OBS, else TMID (the MJD mid-exposure of the Ondřejov
    archive's SSAP tables), else JD - 2400000.5. The object name is OBJECT, else OBJNAME; the
    redshift Z unless it is the missing marker -9999.
    """
    if snr is None:
        for keyword in ("SNRR", "SN_R", "SNR"):
            snr = as_number(get(keyword))
            if snr is not None:
                break
    mjd = as_number(get("MJD"))
    if mjd is None:
        mjd = as_number(get("MJD-OBS"))
    if mjd is None:
        mjd = as_number(get("TMID"))
    if mjd is None:
        jd = as_number(get("JD"))
        mjd = None if jd is None else jd - 2400000.5
    return SpectrumMeta(
        obsid=as_integer(get("OBSID")),
        designation=as_text(get("DESIG")),
        ra_deg=angle_deg(get("RA"), hours=True),
        dec_deg=angle_deg(get("DEC"), hours=False),
        header_class=as_text(get("CLASS")),
        subclass=as_text(get("SUBCLASS")),
        snr=snr,
        mjd=mjd,
        object_name=as_text(get("OBJECT")) or as_text(get("OBJNAME")),
        redshift=None if is_missing_marker(get("Z")) else as_number(get("Z")),
    )


def wcs_cards(get: HeaderGet) -> tuple[object, object, object]:
    """The raw (CRVAL1, step, CRPIX1) of axis 1: the step from CD1_1, else CDELT1; CRPIX1
    defaults to 1 as the FITS standard says. Each reader validates them for its own layout."""
    step = get("CD1_1")
    if step is None:
        step = get("CDELT1")
    crpix = get("CRPIX1")
    return get("CRVAL1"), step, 1 if crpix is None else crpix

