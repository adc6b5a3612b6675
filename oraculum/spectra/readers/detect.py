"""Format detection and the astropy reference path: bytes -> the right reader.

Detection is by content, never by file name (object-store keys lie): gzip by its magic bytes,
FITS by ``SIMPLE  =`` at byte 0, text tables by being UTF-8 text with a header line. For FITS
the HDU layout decides:

=====================================================  =======================
primary HDU 2-D image, TELESCOP SDSS (spSpec, DR1-DR7)  ``sdss-spspec``
primary HDU 2-D image (rows, pixels), log-linear WCS    ``lamost-lrs-image``
primary HDU 2-D image of rows/columns (wave, flux, ..)  ``generic-image``
primary HDU 1-D image (or first 1-D image extension)   ``fits-image-1d``
extensions COADD_B/COADD_R/B-*/R-* with LOGLAM         ``lamost-mrs``
binary table loglam + flux + ivar + and_mask (SDSS)    ``sdss-spec``
binary table FLUX + WAVELENGTH + IVAR (or COADD)       ``lamost-lrs-table``
binary table ``spectral`` + ``flux``                   ``ondrejov-table``
binary table with wavelength and flux columns          ``generic-table``
=====================================================  =======================
"""

from __future__ import annotations

from astropy.io import fits

from oraculum.spectra.preprocessing import WavelengthGrid
from oraculum.spectra.readers import generic, lamost, lamost_mrs, ondrejov, sdss
from oraculum.spectra.readers.compression import gunzip, is_gzip
from oraculum.spectra.readers.fits_io import describe, header_get, load_all, open_fits
from oraculum.spectra.readers.metadata import is_sdss_telescope
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected

FITS_SIGNATURE = b"SIMPLE  ="


def _has_data(hdu: fits.hdu.base._BaseHDU) -> bool:
    """Whether an image HDU holds pixels (NAXIS > 0 and every axis non-empty)."""
    naxis = hdu.header.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis <= 0:
        return False
    axes = [hdu.header.get(f"NAXIS{i}", 0) for i in range(1, naxis + 1)]
    return all(isinstance(n, int) and n > 0 for n in axes)


def decompress(data: bytes, name: str) -> bytes:
    """``data`` itself, or its gzip decompression when it starts with the gzip magic bytes."""
    if not data:
        raise SpectrumRejected(RejectReason.TRUNCATED, f"{name}: empty file (0 bytes)")
    if is_gzip(data):
        data = gunzip(data, name)
        if not data:
            raise SpectrumRejected(
                RejectReason.TRUNCATED, f"{name}: gzip stream decompresses to an empty file"
            )
    return data


def read_reference(data: bytes, name: str, grid: WavelengthGrid | None) -> Spectrum:
    """The astropy path on already-decompressed bytes (see :func:`read_spectrum_reference`)."""
    if not data.startswith(FITS_SIGNATURE):
        if generic.looks_like_text(data):
            return generic.read_csv(data, name)
        raise SpectrumRejected(
            RejectReason.NOT_FITS,
            f"{name}: does not start with 'SIMPLE  =' (first bytes {data[:16]!r}) and is not a "
            "text table; expected FITS, gzip-compressed FITS or CSV/TSV",
        )
    total = len(data)
    with open_fits(data, name) as hdul:
        primary = hdul[0]
        if _has_data(primary):
            naxis = primary.header["NAXIS"]
            if naxis == 2:
                if is_sdss_telescope(header_get(primary.header)):
                    return sdss.read_spspec(primary, total, name)
                spectrum = lamost.read_lrs_image(primary, total, name)
                return spectrum if spectrum is not None else generic.read_image_rows(primary, total, name)
            if naxis == 1:
                return ondrejov.read_image_1d([primary], 0, total, name)
            shape = tuple(primary.header.get(f"NAXIS{i}") for i in range(naxis, 0, -1))
            raise SpectrumRejected(
                RejectReason.UNKNOWN_LAYOUT,
                f"{name}: primary HDU is a {naxis}-D image of shape {shape}; expected a 1-D "
                "spectrum or a 2-D image (LAMOST or SDSS rows, or rows/columns of wavelength and flux)",
            )
        hdus = load_all(hdul, total, data, name)
        return _read_extensions(hdus, total, name, grid)


def _read_extensions(hdus: list, total: int, name: str, grid: WavelengthGrid | None) -> Spectrum:
    """Empty primary HDU: the spectrum is in an extension."""
    if lamost_mrs.is_mrs(hdus):
        return lamost_mrs.read_mrs(hdus, total, name, grid)
    coadd = sdss.coadd_index(hdus)
    if coadd is not None:
        return sdss.read_spec(hdus, coadd, total, name)
    tables = [i for i, hdu in enumerate(hdus) if isinstance(hdu, fits.BinTableHDU)]
    for index in tables:
        if lamost.is_lrs_table(hdus[index]):
            return lamost.read_lrs_table(hdus, index, total, name)
    for index in tables:
        if ondrejov.is_ondrejov_table(hdus[index]):
            return ondrejov.read_ondrejov_table(hdus, index, total, name)
    for index in tables:
        if generic.table_columns(hdus[index]) is not None:
            return generic.read_generic_table(hdus, index, total, name)
    for index, hdu in enumerate(hdus[1:], start=1):
        if isinstance(hdu, fits.ImageHDU) and _has_data(hdu) and hdu.header.get("NAXIS") == 1:
            return ondrejov.read_image_1d(hdus, index, total, name)
    raise SpectrumRejected(
        RejectReason.UNKNOWN_LAYOUT,
        f"{name}: no spectrum found; HDUs: {describe(hdus)}. Expected a primary 1-D image, a "
        "LAMOST, SDSS or (wavelength, flux) 2-D image, LAMOST MRS arms (COADD_B/COADD_R with "
        "LOGLAM), an SDSS COADD table, or a binary table with a wavelength column (wave, "
        "wavelength, lambda, loglam, spectral) and a flux column",
    )
