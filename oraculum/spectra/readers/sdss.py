"""SDSS spectra: BOSS/SDSS ``spec-PLATE-MJD-FIBER.fits`` (DR8+) and SDSS-I/II ``spSpec`` (DR1-DR7).

``sdss-spec`` (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html):
a header-only primary HDU (``TELESCOP = 'SDSS 2.5-M'``), HDU 1 ``COADD``, a binary table with one
row per pixel and columns ``flux``, ``loglam`` (log10 of the vacuum wavelength in Å), ``ivar``,
``and_mask``, ``or_mask``, ...; HDU 2 one row of the pipeline's catalogue (``SPALL`` for BOSS,
``SPECOBJ`` for SDSS-I/II reductions) with PLATE, MJD, FIBERID, CLASS, SUBCLASS, Z, PLUG_RA,
PLUG_DEC, BESTOBJID/OBJID. Told apart from the LAMOST DR8+ table by its ``and_mask`` column (LAMOST
writes ``ANDMASK``) or its telescope.

``sdss-spspec`` (https://classic.sdss.org/dr7/products/spectra/read_spSpec.php): the primary HDU
is an image of 4 (or 5) rows - flux, continuum-subtracted flux, 1-sigma error, pixel mask - with
the wavelength in the header: ``10 ** (COEFF0 + COEFF1 * i)`` for 0-based pixel i (or the
equivalent CRVAL1/CD1_1), vacuum. Metadata from the header: RA, DEC, Z, SPEC_CLN (the class code),
PLATEID, MJD, FIBERID, OBJID.

Both are vacuum wavelengths. Bad pixels: :func:`~oraculum.spectra.readers.masks.sdss_mask`
(ivar <= 0, for DR7 error <= 0, and the unusable AND-mask bits). Metadata: the designation is
``PLATE-MJD-FIBER`` (4-5-4 digits, the SDSS name of a spectrum), ``objid`` the photometric
object id, ``redshift`` Z, ``header_class``/``subclass`` the pipeline's classification. The SDSS
spectrum id is not stored as ``obsid`` (that field is LAMOST's, and links are built from it).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.arrays import make_spectrum, native_float
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, header_get, hdu_label
from oraculum.spectra.readers.lamost import solution_wavelength_A
from oraculum.spectra.readers.loglinear import log_linear_solution
from oraculum.spectra.readers.masks import sdss_mask
from oraculum.spectra.readers.metadata import (
    HeaderGet,
    as_integer,
    as_number,
    as_text,
    first_of,
    is_sdss_telescope,
    meta_from_header,
)
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumMeta, SpectrumRejected

FORMAT_SPEC = "sdss-spec"
FORMAT_SPSPEC = "sdss-spspec"

#: SDSS-I/II spectro1d class codes (SPEC_CLN).
SPEC_CLN = {
    0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "HIZ_QSO", 5: "SKY", 6: "STAR_LATE", 7: "GAL_EM",
}  # fmt: skip
#: Names of the one-row catalogue HDU of a spec file.
_CATALOGUE_HDUS = ("SPALL", "SPECOBJ")
#: Rows of the spSpec image.
_FLUX_ROW, _ERROR_ROW, _MASK_ROW = 0, 2, 3


def _columns(hdu: fits.BinTableHDU) -> dict[str, str]:
    return {name.upper(): name for name in hdu.columns.names or []}


def coadd_index(hdus: list) -> int | None:
    """The HDU of an SDSS spec file's co-added spectrum (LOGLAM, FLUX and IVAR columns, and an
    AND_MASK column or an SDSS telescope), or None when the file is not one."""
    sdss = is_sdss_telescope(header_get(hdus[0].header))
    for index, hdu in enumerate(hdus[1:], start=1):
        if not isinstance(hdu, fits.BinTableHDU):
            continue
        names = set(_columns(hdu))
        if {"LOGLAM", "FLUX", "IVAR"} <= names and ("AND_MASK" in names or sdss):
            return index
    return None


def _row_get(hdu: fits.BinTableHDU) -> HeaderGet:
    """A ``get`` over the first row of a table (the spec file's catalogue row)."""
    columns = _columns(hdu)
    row = hdu.data[0] if hdu.data is not None and len(hdu.data) else None

    def get(keyword: str) -> object:
        if row is None or keyword not in columns:
            return None
        value = row[columns[keyword]]
        if isinstance(value, bytes):
            return value.decode("ascii", "replace").strip()
        if isinstance(value, np.ndarray):
            return " ".join(str(v) for v in value.ravel())
        return value.item() if isinstance(value, np.generic) else value

    return get


def _plate_mjd_fiber(get: HeaderGet) -> str | None:
    plate = as_integer(get("PLATE")) or as_integer(get("PLATEID"))
    mjd, fiber = as_integer(get("MJD")), as_integer(get("FIBERID"))
    if plate is None or mjd is None or fiber is None:
        return None
    return f"{plate:04d}-{mjd:05d}-{fiber:04d}"


def _objid(get: HeaderGet) -> str | None:
    best = as_integer(get("BESTOBJID"))
    if best is not None and best > 0:
        return str(best)
    text = as_text(get("OBJID"))
    return " ".join(text.split()) if text else None


def _meta(get: HeaderGet, ra_keyword: str, dec_keyword: str) -> SpectrumMeta:
    meta = meta_from_header(get)
    cls = as_text(get("CLASS"))
    if cls is None:
        code = as_integer(get("SPEC_CLN"))
        cls = SPEC_CLN.get(code) if code is not None else None
    snr = as_number(get("SN_MEDIAN_ALL"))
    meta.obsid = None
    meta.designation = _plate_mjd_fiber(get)
    meta.ra_deg = as_number(get(ra_keyword))
    meta.dec_deg = as_number(get(dec_keyword))
    meta.header_class = cls
    meta.snr = snr if snr is not None else meta.snr
    meta.objid = _objid(get)
    return meta


def read_spec(hdus: list, index: int, total_bytes: int, name: str) -> Spectrum:
    """``sdss-spec``: the COADD table of a DR8+ spec file, metadata from its catalogue row."""
    hdu = hdus[index]
    where = f"{name}: {hdu_label(index, hdu)}"
    check_data_complete(hdu, index, total_bytes, name)
    columns = _columns(hdu)
    flux = column_array(hdu, columns["FLUX"], where)
    wavelength = 10.0 ** np.asarray(column_array(hdu, columns["LOGLAM"], where), dtype=np.float64)
    ivar = column_array(hdu, columns["IVAR"], where)
    and_mask = column_array(hdu, columns["AND_MASK"], where) if "AND_MASK" in columns else None
    if ivar.size != flux.size or (and_mask is not None and and_mask.size != flux.size):
        raise SpectrumRejected(RejectReason.UNKNOWN_LAYOUT, f"{where}: ivar/and_mask do not match flux in length")
    gets = [header_get(hdus[0].header)]
    for number, catalogue in enumerate(hdus):
        if isinstance(catalogue, fits.BinTableHDU) and catalogue.name.upper() in _CATALOGUE_HDUS:
            check_data_complete(catalogue, number, total_bytes, name)
            gets.insert(0, _row_get(catalogue))
            break
    return make_spectrum(
        wavelength,
        flux,
        medium="vacuum",
        format=FORMAT_SPEC,
        meta=_meta(first_of(*gets), "PLUG_RA", "PLUG_DEC"),
        where=where,
        mask=sdss_mask(native_float(flux), ivar, and_mask),
    )


def read_spspec(hdu: fits.PrimaryHDU, total_bytes: int, name: str) -> Spectrum:
    """``sdss-spspec``: the DR7 image (flux, continuum-subtracted flux, error, mask rows)."""
    get = header_get(hdu.header)
    where = f"{name}: {hdu_label(0, hdu)}"
    n_pixels, n_rows = hdu.header["NAXIS1"], hdu.header["NAXIS2"]
    if n_rows <= _MASK_ROW or n_rows > n_pixels:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: SDSS image of shape ({n_rows}, {n_pixels}); expected an spSpec file (4 or 5 "
            "rows: flux, continuum-subtracted flux, error, mask); spPlate files hold a plate of "
            "spectra and are not read",
        )
    solution = log_linear_solution(get, n_pixels, row=lambda: None)
    if solution is None:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: SDSS spSpec image without a usable log-linear wavelength solution "
            f"(COEFF0={get('COEFF0')!r}, COEFF1={get('COEFF1')!r}, CRVAL1={get('CRVAL1')!r})",
        )
    check_data_complete(hdu, 0, total_bytes, name)
    image = hdu.data
    flux = native_float(image[_FLUX_ROW])
    mask = sdss_mask(flux, image[_ERROR_ROW], image[_MASK_ROW])
    wavelength, reverse = solution_wavelength_A(solution, n_pixels)
    if reverse:
        flux, mask = flux[::-1].copy(), mask[::-1].copy()
    return Spectrum(
        wavelength_A=wavelength,
        flux=flux,
        medium="vacuum",
        format=FORMAT_SPSPEC,
        meta=_meta(get, "RA", "DEC"),
        mask=mask,
    )
