"""Recognising wavelength and flux columns, their units and their medium (air or vacuum).

Shared by the generic FITS-table, CSV and 1-D image readers. Names are matched
case-insensitively after dropping a unit in brackets (``"Wavelength [nm]"``, ``"flux (erg/s/cm2/A)"``).

The medium is taken from what a file states (:func:`stated_medium`); when nothing does, the
reader's default is used and a warning is recorded with the spectrum (:func:`medium_or_default`),
never a silent guess: H-alpha is 1.8 Å apart in the two media.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from oraculum.spectra.wavelength import Medium

WAVELENGTH_NAMES = frozenset(
    {
        "wave", "wavelength", "wavelengths", "lambda", "lam", "wl", "spectral", "awav",
        "wave_air", "wave_vac", "wave_vacuum", "wavelength_air", "wavelength_vac",
        "wavelength_vacuum", "lambda_air", "lambda_vac", "loglam", "log_lambda", "loglambda",
        "log_wave", "logwave", "log_wavelength",
    }
)  # fmt: skip
LOG_WAVELENGTH_NAMES = frozenset(
    {"loglam", "log_lambda", "loglambda", "log_wave", "logwave", "log_wavelength"}
)
FLUX_NAMES = (  # in order of preference
    "flux", "flux_norm", "norm_flux", "normalized_flux", "normflux", "flam", "f_lambda",
    "flux_density", "fluxes", "intensity",
)  # fmt: skip

#: Multiply a wavelength in this unit by the factor to get Å.
_UNIT_TO_A = {
    "": 1.0, "a": 1.0, "aa": 1.0, "å": 1.0, "angstrom": 1.0, "angstroms": 1.0, "angstroem": 1.0,
    "0.1nm": 1.0, "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "um": 1e4, "micron": 1e4,
    "microns": 1e4, "µm": 1e4, "micrometer": 1e4, "m": 1e10, "cm": 1e8, "mm": 1e7,
}  # fmt: skip

_UNIT_SUFFIX = re.compile(r"\s*[\[\(]([^\]\)]*)[\]\)]\s*$")
_AIR = re.compile(r"(^|[^a-z])(air|awav)([^a-z]|$)")
_VACUUM = re.compile(r"(^|[^a-z])(vac|vacuum|in_vacuo)([^a-z]|$)")


def split_name(raw: str) -> tuple[str, str | None]:
    """('wavelength', 'nm') from 'Wavelength [nm]'; the unit is None when not given."""
    text = raw.strip()
    match = _UNIT_SUFFIX.search(text)
    unit = None
    if match:
        unit = match.group(1).strip()
        text = text[: match.start()]
    base = re.sub(r"[\s\-]+", "_", text.strip().lower())
    return base, unit


def find_columns(names: list[str]) -> tuple[int, int] | None:
    """Indices of the wavelength and flux columns in ``names``, or None."""
    bases = [split_name(name)[0] for name in names]
    wave = next((i for i, base in enumerate(bases) if base in WAVELENGTH_NAMES), None)
    flux = next(
        (bases.index(candidate) for candidate in FLUX_NAMES if candidate in bases), None
    )
    if wave is None or flux is None or wave == flux:
        return None
    return wave, flux


def is_log_wavelength(name: str) -> bool:
    """Whether the column holds log10 of the wavelength in Å (SDSS/LAMOST 'loglam')."""
    return split_name(name)[0] in LOG_WAVELENGTH_NAMES


def unit_factor_A(unit: str | None) -> float | None:
    """Factor from ``unit`` to Å (1 when no unit is given), None when not understood."""
    key = re.sub(r"\s+", "", (unit or "")).lower()
    return _UNIT_TO_A.get(key)


def medium_from_text(*texts: object) -> Medium | None:
    """'air' or 'vacuum' when one of ``texts`` says so as a word (e.g. 'Air wavelength',
    'AWAV', 'wave_vac'), checked in order; None when none does ('airmass' says nothing)."""
    for text in texts:
        if not isinstance(text, str) or not text:
            continue
        lowered = text.lower()
        if _AIR.search(lowered):
            return "air"
        if _VACUUM.search(lowered):
            return "vacuum"
    return None


#: The header cards of IRAF's world-coordinate attribute strings, which may name the medium.
_WAT_KEYWORDS = ("WAT0_001", "WAT1_001", "WAT2_001")


def ctype_medium(ctype: object) -> Medium | None:
    """The medium a FITS spectral axis type states (WCS paper III): ``WAVE``/``WAVE-LOG``/... are
    vacuum wavelengths, ``AWAV``/``AWAV-LOG``/... air wavelengths; anything else says nothing
    (``LINEAR``, IRAF's default, included)."""
    if not isinstance(ctype, str):
        return None
    kind = ctype.strip().upper()[:4]
    return {"WAVE": "vacuum", "AWAV": "air"}.get(kind)  # type: ignore[return-value]


def stated_medium(get: Callable[[str], object], *texts: object, ctypes: tuple[str, ...] = ("CTYPE1",)) -> Medium | None:
    """The medium a file states, or None: ``texts`` first (a column name or comment such as
    'Air wavelength', 'wave_vac'), then VACUUM (T/F), AIRORVAC ('air'/'vac'), the axis types
    ``ctypes`` (WAVE/AWAV) and IRAF's WAT strings. ``get`` reads a header card (None if absent)."""
    from_texts = medium_from_text(*texts)
    if from_texts:
        return from_texts
    vacuum = get("VACUUM")
    if vacuum is True:
        return "vacuum"
    if vacuum is False:
        return "air"
    from_airorvac = medium_from_text(get("AIRORVAC"))
    if from_airorvac:
        return from_airorvac
    for keyword in ctypes:
        from_ctype = ctype_medium(get(keyword))
        if from_ctype:
            return from_ctype
    return medium_from_text(*(get(keyword) for keyword in _WAT_KEYWORDS))


def medium_or_default(stated: Medium | None, default: Medium) -> tuple[Medium, tuple[str, ...]]:
    """``(stated, ())``, or ``(default, (warning,))`` when the file states no medium."""
    if stated is not None:
        return stated, ()
    return default, (
        f"wavelength medium not stated (no VACUUM, AIRORVAC, CTYPE1 WAVE/AWAV or WAT keyword, no "
        f"column name or comment naming air or vacuum); assumed {default}",
    )
