"""Archive files in their real layouts, built in the tests with astropy (never copied from archives).

* :func:`lamost_lrs_image` - LAMOST low resolution DR1-DR8: primary image (5, 3909) of rows flux,
  inverse variance, wavelength (DR1: a sub-continuum of ones), and-mask, or-mask; log-linear WCS
  CRVAL1 = COEFF0 = 3.5682, CD1_1 = COEFF1 = 1e-4, CRPIX1 = 1, CTYPE1 = 'LINEAR', VACUUM = T.
* :func:`sdss_spec` - SDSS/BOSS DR8+ ``spec-PLATE-MJD-FIBER.fits``: header-only primary, HDU 1
  COADD table (flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model), HDU 2 SPALL row.
* :func:`sdss_spspec` - SDSS DR7 ``spSpec``: primary image of 4 rows (flux, continuum-subtracted
  flux, error, mask), COEFF0/COEFF1 and the equivalent WCS, metadata in the header.
* :func:`star_flux` - a smooth spectrum with an H-alpha line, so tests can tell a real line from
  an artefact.
* :func:`read_both` - read through the fast and the astropy path, which must agree exactly.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from oraculum.spectra.readers import read_spectrum, read_spectrum_reference
from oraculum.spectra.spectrum import Spectrum
from oraculum.spectra.wavelength import LINES_VACUUM_A

H_ALPHA_A = LINES_VACUUM_A["H-alpha"]
LAMOST_PIXELS = 3909
LAMOST_CRVAL1 = 3.5682
LAMOST_STEP = 1e-4
SDSS_COEFF0 = 3.5800
SDSS_PIXELS = 3850


def fits_bytes(*hdus: fits.hdu.base._BaseHDU) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    return buffer.getvalue()


def read_both(data: bytes, name: str = "x.fits") -> Spectrum:
    """The spectrum in ``data``, after checking that both reader paths give the same one."""
    fast, reference = read_spectrum(data, name), read_spectrum_reference(data, name)
    assert (fast.format, fast.medium, fast.meta) == (reference.format, reference.medium, reference.meta)
    assert np.array_equal(fast.wavelength_A, reference.wavelength_A)
    assert np.array_equal(fast.flux, reference.flux, equal_nan=True)
    assert fast.mask is not None and np.array_equal(fast.mask, reference.mask)
    return fast


def loglinear_A(crval: float, n: int, step: float = LAMOST_STEP) -> np.ndarray:
    return 10.0 ** (crval + step * np.arange(n))


def lamost_wavelength_A() -> np.ndarray:
    return loglinear_A(LAMOST_CRVAL1, LAMOST_PIXELS)


def star_flux(wavelength_A: np.ndarray, *, line: float = -0.6, centre_A: float = H_ALPHA_A) -> np.ndarray:
    """A sloped continuum (about 1000) times a Gaussian H-alpha line of relative depth ``line``
    (negative: absorption, positive: emission), sigma 4 Å."""
    continuum = 1000.0 + 0.05 * (wavelength_A - 6000.0)
    return continuum * (1.0 + line * np.exp(-0.5 * ((wavelength_A - centre_A) / 4.0) ** 2))


def lamost_header(**cards: object) -> fits.Header:
    """The cards of a LAMOST LRS primary header that the readers use; ``cards`` override (a
    value of None removes the card)."""
    header = fits.Header()
    defaults: dict[str, object] = {
        "TELESCOP": "LAMOST",
        "OBSID": 123456789,
        "DESIG": "LAMOST J013730.44+252537.7",
        "RA": 24.376852,
        "DEC": 25.427147,
        "OBJNAME": "275444063789065",
        "CLASS": "STAR",
        "SUBCLASS": "A0",
        "Z": -3e-07,
        "SNRR": 120.5,
        "MJD": 58396,
        "CRVAL1": LAMOST_CRVAL1,
        "CD1_1": LAMOST_STEP,
        "CRPIX1": 1,
        "CTYPE1": "LINEAR",
        "DC-FLAG": 1,
        "COEFF0": LAMOST_CRVAL1,
        "COEFF1": LAMOST_STEP,
        "VACUUM": True,
        "WAT0_001": "system=linear",
        "WAT1_001": "wtype=linear label=Wavelength units=Angstroms",
    }
    defaults.update(cards)
    for keyword, value in defaults.items():
        if value is not None:
            header[keyword] = value
    return header


def lamost_lrs_image(
    flux: np.ndarray,
    *,
    ivar: np.ndarray | None = None,
    andmask: np.ndarray | None = None,
    ormask: np.ndarray | None = None,
    wavelength_row: bool = True,
    **cards: object,
) -> bytes:
    """A LAMOST LRS file: rows flux, ivar (default 1e-4 everywhere), wavelength (or, with
    ``wavelength_row=False``, DR1's row of ones), and-mask, or-mask; float32 like the archive."""
    n = flux.size
    image = np.zeros((5, n), dtype=np.float32)
    image[0] = flux
    image[1] = 1e-4 if ivar is None else ivar
    image[2] = loglinear_A(LAMOST_CRVAL1, n) if wavelength_row else 1.0
    image[3] = 0 if andmask is None else andmask
    image[4] = 0 if ormask is None else ormask
    return fits_bytes(fits.PrimaryHDU(image, header=lamost_header(**cards)))


def sdss_spec(
    flux: np.ndarray,
    *,
    ivar: np.ndarray | None = None,
    and_mask: np.ndarray | None = None,
    z: float = 0.02,
) -> bytes:
    """An SDSS DR8+ spec file for a galaxy at redshift ``z`` (plate 266, MJD 51630, fibre 3)."""
    n = flux.size
    loglam = (SDSS_COEFF0 + LAMOST_STEP * np.arange(n)).astype(np.float32)
    primary = fits.PrimaryHDU()
    for keyword, value in {
        "TELESCOP": "SDSS 2.5-M", "PLATEID": 266, "MJD": 51630, "FIBERID": 3, "VERS2D": "v5_7_0",
        "PLUG_RA": 146.71421, "PLUG_DEC": -1.0413043, "RA": 145.0, "DEC": 0.0,
    }.items():  # fmt: skip
        primary.header[keyword] = value
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column("flux", "E", array=flux),
            fits.Column("loglam", "E", array=loglam),
            fits.Column("ivar", "E", array=np.full(n, 0.5, np.float32) if ivar is None else ivar),
            fits.Column("and_mask", "J", array=np.zeros(n, np.int32) if and_mask is None else and_mask),
            fits.Column("or_mask", "J", array=np.zeros(n, np.int32)),
            fits.Column("wdisp", "E", array=np.ones(n, np.float32)),
            fits.Column("sky", "E", array=np.ones(n, np.float32)),
            fits.Column("model", "E", array=flux),
        ],
        name="COADD",
    )
    catalogue = fits.BinTableHDU.from_columns(
        [
            fits.Column("PLATE", "J", array=[266]),
            fits.Column("MJD", "J", array=[51630]),
            fits.Column("FIBERID", "J", array=[3]),
            fits.Column("CLASS", "6A", array=["GALAXY"]),
            fits.Column("SUBCLASS", "21A", array=["STARFORMING"]),
            fits.Column("Z", "E", array=[z]),
            fits.Column("PLUG_RA", "D", array=[146.71421]),
            fits.Column("PLUG_DEC", "D", array=[-1.0413043]),
            fits.Column("BESTOBJID", "K", array=[587722952230175035]),
            fits.Column("OBJID", "19A", array=["756 44 1 206 267"]),
            fits.Column("SN_MEDIAN_ALL", "E", array=[14.2]),
        ],
        name="SPALL",
    )
    return fits_bytes(primary, coadd, catalogue)


def sdss_wavelength_A(n: int = SDSS_PIXELS) -> np.ndarray:
    return 10.0 ** (SDSS_COEFF0 + LAMOST_STEP * np.arange(n, dtype=np.float64))


def sdss_spspec(flux: np.ndarray, *, error: np.ndarray | None = None, mask: np.ndarray | None = None) -> bytes:
    """An SDSS DR7 spSpec file: 4 rows flux, continuum-subtracted flux, error, mask."""
    n = flux.size
    image = np.zeros((4, n), dtype=np.float32)
    image[0] = flux
    image[1] = flux - np.median(flux)
    image[2] = 1.5 if error is None else error
    image[3] = 0 if mask is None else mask
    header = fits.Header()
    for keyword, value in {
        "TELESCOP": "SDSS 2.5-M", "COEFF0": SDSS_COEFF0, "COEFF1": LAMOST_STEP, "CRVAL1": SDSS_COEFF0,
        "CD1_1": LAMOST_STEP, "CRPIX1": 1, "CTYPE1": "LINEAR", "DC-FLAG": 1, "RA": 146.71421,
        "DEC": -1.0413043, "Z": 0.0213, "SPEC_CLN": 2, "PLATEID": 266, "MJD": 51630, "FIBERID": 3,
        "OBJID": "0000756 44 1 0206 00267", "SN_R": 18.5, "NAME": "51630-0266-003",
    }.items():  # fmt: skip
        header[keyword] = value
    return fits_bytes(fits.PrimaryHDU(image, header=header))
