"""Synthetic spectra as LAMOST low-resolution FITS files: the bytes, written directly.

File layout (as LAMOST DR2-DR7 low-resolution ``spec-*.fits``): one primary HDU, ``BITPIX = -32``,
an image of shape (5, 3909): rows flux, inverse variance, wavelength, andmask, ormask. The
wavelength grid is log-linear in vacuum, ``log10(lambda / Å) = 3.5682 + 1e-4 * i`` for pixel
``i = 0..3908`` (3699.99-9099.13 Å), described by ``CRVAL1 = 3.5682``, ``CD1_1 = 1e-4``,
``CRPIX1 = 1``, ``CTYPE1 = 'LINEAR'`` (LAMOST's own, if misleading, keyword), ``VACUUM = T``, and
repeated in row 2 (float32, so it matches the WCS to about 3e-3 Å).

The header carries the identity of the file (:class:`FileMeta`: plan, spectrograph, fibre, OBSID,
position and the designation made from it) and what LAMOST's pipeline would report (SUBCLASS,
redshift, S/N per band), and marks the file synthetic. The bytes are formatted here rather than
through an astropy HDU, which would cost about ten times the simulation of the spectrum;
:func:`finish_bytes` then gzips and, for damaged files, truncates them.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from oraculum.spectra.synth.star import C_KM_S, RESOLVING_POWER, SimulatedSpectrum, cached_grid, fast_median

__all__ = [
    "LAMOST_CD1_1",
    "LAMOST_CRVAL1",
    "LAMOST_NPIX",
    "FileMeta",
    "designation",
    "finish_bytes",
    "lamost_fits_bytes",
    "lamost_wavelength_A",
]

#: LAMOST low-resolution wavelength solution: log10(lambda / Å) of pixel 0, step per pixel, pixels.
LAMOST_CRVAL1 = 3.5682
LAMOST_CD1_1 = 1e-4
LAMOST_NPIX = 3909

#: FITS files are sequences of 2880-byte blocks (headers and data units are padded to them).
_FITS_BLOCK = 2880


def lamost_wavelength_A() -> np.ndarray:
    """The LAMOST low-resolution pixel wavelengths (vacuum Å, float64, 3909 pixels)."""
    return 10.0 ** (LAMOST_CRVAL1 + LAMOST_CD1_1 * np.arange(LAMOST_NPIX))


def designation(ra_deg: float, dec_deg: float) -> str:
    """LAMOST designation ``'LAMOST Jhhmmss.ss+ddmmss.s'`` (IAU style: truncated, not rounded)."""
    centisec = int(math.floor((ra_deg % 360.0) / 15.0 * 360_000.0 + 1e-6))
    hh, rest = divmod(centisec, 360_000)
    mm, rest = divmod(rest, 6_000)
    sign = "-" if dec_deg < 0 else "+"
    deciarcsec = int(math.floor(abs(dec_deg) * 36_000.0 + 1e-6))
    dd, drest = divmod(deciarcsec, 36_000)
    dm, drest = divmod(drest, 600)
    ra_text = f"{hh:02d}{mm:02d}{rest // 100:02d}.{rest % 100:02d}"
    dec_text = f"{sign}{dd:02d}{dm:02d}{drest // 10:02d}.{drest % 10:d}"
    return f"LAMOST J{ra_text}{dec_text}"


# --------------------------------------------------------------------------------------------
# FITS bytes, written directly (an astropy HDU per file would cost ~10x the simulation)


@dataclass(frozen=True)
class _Fixed:
    """A float written with a fixed number of decimals (LAMOST writes Z as ``-0.00000640``)."""

    value: float
    decimals: int


_CardValue = str | bool | int | float | _Fixed


def _format_value(value: _CardValue) -> str:
    if isinstance(value, _Fixed):
        return f"{value.value:>20.{value.decimals}f}"
    if isinstance(value, bool):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20d}"
    if isinstance(value, (float, np.floating)):
        text = repr(float(value)) if abs(value) >= 1e-4 or value == 0 else f"{float(value):.10E}"
        if "e" in text:
            text = f"{float(value):.10E}"
        if "." not in text and "E" not in text:
            text += ".0"
        return f"{text:>20}"
    quoted = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
    return f"{quoted:<20}"


def _card(keyword: str, value: _CardValue, comment: str = "") -> str:
    """One 80-character FITS header card in fixed format."""
    text = f"{keyword:<8}= {_format_value(value)}"
    if comment:
        text += f" / {comment}"
    if len(text) > 80:
        if len(f"{keyword:<8}= {_format_value(value)}") > 80:
            raise ValueError(f"FITS card {keyword} value too long: {value!r}")
        text = text[:80]
    return f"{text:<80}"


def _comment(text: str) -> str:
    return f"{'COMMENT ' + text:<80}"[:80]


@dataclass
class FileMeta:
    """Per-file identity of a synthetic LAMOST file (what the archive's pipeline would assign)."""

    filename: str
    obsid: int
    planid: str
    mjd: int
    spid: int
    fiberid: int
    ra_deg: float
    dec_deg: float


#: Per-file header cards: keyword -> comment. Everything else in the header is the same in
#: every file and is formatted once (:func:`_header_template`), which keeps a file's header at
#: ~20 formatted cards instead of ~60.
_PER_FILE_CARDS: dict[str, str] = {
    "FILENAME": "",
    "OBSID": "Unique number ID of this spectrum",
    "LMJD": "Local Modified Julian Day",
    "MJD": "Modified Julian Day",
    "PLANID": "Plan ID in use",
    "RA": "[deg] Right ascension of object",
    "DEC": "[deg] Declination of object",
    "DESIG": "Designation of LAMOST target",
    "FIBERID": "Fiber ID of Object",
    "SPID": "Spectrograph ID",
    "SUBCLASS": "Subclass of object",
    "Z": "Redshift of object",
    "SNRU": "SNR of u filter",
    "SNRG": "SNR of g filter",
    "SNRR": "SNR of r filter",
    "SNRI": "SNR of i filter",
    "SNRZ": "SNR of z filter",
}


@lru_cache(maxsize=4)
def _header_template(npix: int) -> tuple[str, ...]:
    """The header as a sequence of finished cards and bare keywords of per-file cards."""
    layout: list[str | tuple[str, _CardValue, str]] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", -32, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", npix, "number of pixels"),
        ("NAXIS2", 5, "flux, ivar, wavelength, andmask, ormask"),
        ("EXTEND", True, ""),
        "THIS FILE IS SYNTHETIC: simulated by oraculum.spectra.synth, not a LAMOST",
        "observation. Only the file layout follows LAMOST DR2-DR7.",
        "--------FILE INFORMATION",
        "FILENAME",
        "OBSID",
        ("AUTHOR", "oraculum.spectra.synth", "Who compiled the information"),
        ("DATA_V", "SYNTHETIC", "Data release version"),
        ("EXTEN0", "Flux, Inverse, Wavelength, Andmask, Ormask", ""),
        ("N_EXTEN", 1, "The extension number"),
        ("EXTNAME", "Flux", "The extension name"),
        ("ORIGIN", "oraculum", "Organization responsible for creating this file"),
        "--------TELESCOPE PARAMETERS",
        ("TELESCOP", "LAMOST", "file format only: synthetic spectrum"),
        "--------OBSERVATION PARAMETERS",
        "LMJD",
        "MJD",
        "PLANID",
        "RA",
        "DEC",
        "DESIG",
        "FIBERID",
        ("OBJTYPE", "Star", "Object type from input catalog"),
        ("FIBERTYP", "Obj", "Fiber type of object"),
        ("OBS_TYPE", "OBJ", "The type of target (OBJ, FLAT, ARC or BIAS)"),
        ("RADECSYS", "FK5", "Equatorial coordinate system"),
        ("EQUINOX", 2000.0, "Equinox in years"),
        "--------SPECTROGRAPH PARAMETERS",
        "SPID",
        "--------DATA REDUCTION PARAMETERS",
        ("HELIO", True, "Heliocentric correction"),
        ("VACUUM", True, "Wavelengths are in vacuum"),
        ("NWORDER", 2, "Number of linear-log10 coefficients"),
        ("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
        ("COEFF0", LAMOST_CRVAL1, "Central wavelength (log10) of first pixel"),
        ("COEFF1", LAMOST_CD1_1, "Log10 dispersion per pixel"),
        ("CRVAL1", LAMOST_CRVAL1, "Central wavelength (log10) of first pixel"),
        ("CD1_1", LAMOST_CD1_1, "Log10 dispersion per pixel"),
        ("CRPIX1", 1, "Starting pixel (1-indexed)"),
        ("CTYPE1", "LINEAR", ""),
        ("DC-FLAG", 1, "Log-linear flag"),
        "--------SPECTRA ANALYSIS RESULTS",
        ("CLASS", "STAR", "Class of object"),
        "SUBCLASS",
        "Z",
        ("Z_ERR", _Fixed(1e-05, 8), "Redshift error of object"),
        "SNRU",
        "SNRG",
        "SNRR",
        "SNRI",
        "SNRZ",
    ]
    out: list[str] = []
    for item in layout:
        if isinstance(item, tuple):
            out.append(_card(*item))
        elif item in _PER_FILE_CARDS:
            out.append(item)
        else:
            out.append(_comment(item))
    return tuple(out)


def _header_bytes(values: Mapping[str, _CardValue], npix: int) -> bytes:
    """The primary header, padded to whole 2880-byte blocks, with the per-file ``values``."""
    text = "".join(
        card if len(card) == 80 else _card(card, values[card], _PER_FILE_CARDS[card])
        for card in _header_template(npix)
    )
    text += f"{'END':<80}"
    text += " " * (-len(text) % _FITS_BLOCK)
    return text.encode("ascii")


def _band_snr(spec: SimulatedSpectrum) -> dict[str, float]:
    """S/N per band as LAMOST reports it (median per-pixel S/N); r is the drawn ``snr``."""
    grid = cached_grid(spec.wavelength_A, RESOLVING_POWER)
    out = {"r": round(spec.params.snr, 2)}
    for band, window in grid.bands.items():
        snr_pixel = spec.continuum[window] * np.sqrt(spec.ivar[window])
        out[band] = round(fast_median(snr_pixel), 2) if snr_pixel.size else 0.0
    return out


def lamost_fits_bytes(spec: SimulatedSpectrum, meta: FileMeta) -> bytes:
    """The complete bytes of a LAMOST-layout FITS file holding ``spec`` (on the LAMOST grid)."""
    npix = spec.wavelength_A.size
    data = np.empty((5, npix), dtype=">f4")
    data[0] = spec.flux
    data[1] = spec.ivar
    data[2] = spec.wavelength_A
    data[3] = 0.0  # andmask
    data[4] = 0.0  # ormask
    payload = data.tobytes()
    payload += b"\0" * (-len(payload) % _FITS_BLOCK)
    snr = _band_snr(spec)
    ra, dec = round(meta.ra_deg, 6), round(meta.dec_deg, 6)  # DESIG agrees with the cards
    values: dict[str, _CardValue] = {
        "FILENAME": meta.filename,
        "OBSID": meta.obsid,
        "LMJD": meta.mjd,
        "MJD": meta.mjd,
        "PLANID": meta.planid,
        "RA": ra,
        "DEC": dec,
        "DESIG": designation(ra, dec),
        "FIBERID": meta.fiberid,
        "SPID": meta.spid,
        "SUBCLASS": spec.params.subclass,
        "Z": _Fixed(spec.params.rv_km_s / C_KM_S, 8),
        "SNRU": snr["u"],
        "SNRG": snr["g"],
        "SNRR": snr["r"],
        "SNRI": snr["i"],
        "SNRZ": snr["z"],
    }
    return _header_bytes(values, npix) + payload


def finish_bytes(data: bytes, compress: bool, cut: float | None) -> bytes:
    """Optionally gzip a file's bytes, then optionally truncate them at fraction ``cut``.

    An uncompressed file is cut inside its data unit (the header stays whole, like a transfer
    that stopped mid-file); a compressed one is cut inside the gzip stream, which is what an
    interrupted download of a ``.fits.gz`` looks like. gzip's ``mtime=0`` keeps bytes reproducible.
    """
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
        if cut is not None:
            data = data[: max(1, int(len(data) * cut))]
    elif cut is not None:
        header_end = data.index(b"END" + b" " * 77) + 80
        header_end += -header_end % _FITS_BLOCK
        data = data[: header_end + int((len(data) - header_end) * cut)]
    return data
