"""Ondřejov CCD700 spectra (2-m Perek telescope): the archive's SSAP table and 1-D images.

``ondrejov-table``: an empty primary HDU and a binary table with columns ``spectral``
(wavelength in Å, **air**, as the column comment says) and ``flux`` (relative flux), one row per
pixel; the form the Ondřejov archive's SSAP service delivers (other SSAP services use the same
column names: without a stated medium, a table not from Ondřejov gets air with a warning).

``fits-image-1d``: a 1-D image (primary, or the first image extension after an empty primary)
with a linear wavelength WCS (CRVAL1, CDELT1 or CD1_1, CRPIX1 defaulting to 1; IRAF's
DC-FLAG = 1 marks a log10 axis), the form of the CCD700 reduction pipeline (IRAF) and of many
others. The medium is what the header states (VACUUM, AIRORVAC, CTYPE1 WAVE or AWAV, IRAF's WAT
strings); when it states nothing, an Ondřejov file (OBSERVAT, TELESCOP or ORIGIN naming
Ondřejov) is air, the archive's convention, and any other file is assumed air too (IRAF's
convention, as its arc line lists are) with a warning recorded with the spectrum - Keck/ESI or
Magellan/MagE reductions, for one, are in vacuum.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers.arrays import make_spectrum
from oraculum.spectra.readers.columns import medium_or_default, stated_medium, unit_factor_A
from oraculum.spectra.readers.fits_io import check_data_complete, column_array, header_get, hdu_label
from oraculum.spectra.readers.metadata import HeaderGet, first_of, meta_from_header, wcs_cards
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected
from oraculum.spectra.wavelength import Medium

FORMAT_TABLE = "ondrejov-table"
FORMAT_IMAGE_1D = "fits-image-1d"


def _column_index(hdu: fits.BinTableHDU, wanted: str) -> int | None:
    for i, column in enumerate(hdu.columns.names or []):
        if column.strip().lower() == wanted:
            return i
    return None


def is_ondrejov_table(hdu: fits.BinTableHDU) -> bool:
    """A table with ``spectral`` and ``flux`` columns (the SSAP spectrum data model names)."""
    return _column_index(hdu, "spectral") is not None and _column_index(hdu, "flux") is not None


def _is_ondrejov(get: HeaderGet) -> bool:
    """A file of the Ondřejov observatory: OBSERVAT, TELESCOP or ORIGIN names it, or its
    publisher's dataset id is the Ondřejov archive's (``ivo://asu.cas.cz/...``)."""
    for keyword in ("OBSERVAT", "TELESCOP", "ORIGIN"):
        value = get(keyword)
        if isinstance(value, str) and value.strip().upper().replace("Ř", "R").startswith("ONDREJOV"):
            return True
    publisher_id = get("DS_IDPUB")
    return isinstance(publisher_id, str) and publisher_id.startswith("ivo://asu.cas.cz/")


def _medium(get: HeaderGet, *texts: str) -> tuple[Medium, tuple[str, ...]]:
    """What the file states; else air, silently for an Ondřejov file, with a warning otherwise."""
    stated = stated_medium(get, *texts)
    if stated is None and _is_ondrejov(get):
        stated = "air"
    return medium_or_default(stated, "air")


def read_ondrejov_table(hdus: list, index: int, total_bytes: int, name: str) -> Spectrum:
    """``ondrejov-table``: air wavelengths from ``spectral``, flux from ``flux``."""
    hdu = hdus[index]
    where = f"{name}: {hdu_label(index, hdu)}"
    check_data_complete(hdu, index, total_bytes, name)
    wave_i = _column_index(hdu, "spectral")
    flux_i = _column_index(hdu, "flux")
    assert wave_i is not None and flux_i is not None
    header = hdu.header
    unit = header.get(f"TUNIT{wave_i + 1}")
    factor = unit_factor_A(unit if isinstance(unit, str) else None)
    if factor is None:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT, f"{where}: wavelength unit {unit!r} not understood"
        )
    columns = hdu.columns.names
    wavelength = np.asarray(column_array(hdu, columns[wave_i], where), dtype=np.float64) * factor
    flux = column_array(hdu, columns[flux_i], where)
    get = first_of(header_get(header), header_get(hdus[0].header))
    comment = header.comments[f"TTYPE{wave_i + 1}"] if f"TTYPE{wave_i + 1}" in header else ""
    medium, warnings = _medium(get, comment)
    meta = meta_from_header(get)
    meta.warnings = warnings
    return make_spectrum(wavelength, flux, medium=medium, format=FORMAT_TABLE, meta=meta, where=where)


def read_image_1d(hdus: list, index: int, total_bytes: int, name: str) -> Spectrum:
    """``fits-image-1d``: flux from a 1-D image, wavelength from its linear (or log) WCS."""
    hdu = hdus[index]
    where = f"{name}: {hdu_label(index, hdu)}"
    get = header_get(hdu.header)
    if index:
        get = first_of(get, header_get(hdus[0].header))
    crval, step, crpix = wcs_cards(get)
    numbers = [crval, step, crpix]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers) or step == 0:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT,
            f"{where}: 1-D image without a wavelength WCS (CRVAL1={crval!r}, "
            f"CDELT1/CD1_1={step!r}, CRPIX1={crpix!r})",
        )
    unit = get("CUNIT1")
    factor = unit_factor_A(unit if isinstance(unit, str) else None)
    if factor is None:
        raise SpectrumRejected(
            RejectReason.UNKNOWN_LAYOUT, f"{where}: wavelength unit CUNIT1={unit!r} not understood"
        )
    check_data_complete(hdu, index, total_bytes, name)
    flux = np.asarray(hdu.data).ravel()
    axis = float(crval) + float(step) * (np.arange(flux.size, dtype=np.float64) + 1.0 - float(crpix))
    wavelength = 10.0**axis if get("DC-FLAG") == 1 else axis * factor
    medium, warnings = _medium(get)
    meta = meta_from_header(get)
    meta.warnings = warnings
    return make_spectrum(wavelength, flux, medium=medium, format=FORMAT_IMAGE_1D, meta=meta, where=where)
