"""A spectrum as read from an archive file, before preprocessing, and why a file can be rejected.

Readers (:mod:`oraculum.spectra.readers`) turn the bytes of one archive file into a :class:`Spectrum`
or raise :class:`SpectrumRejected` with a machine-readable :class:`RejectReason` and a message a
person can act on. Preprocessing raises the same exception for quality failures, so one
``except SpectrumRejected`` in the ingestion loop is all it takes to never crash on a bad file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from oraculum.spectra.wavelength import Medium


class RejectReason(str, enum.Enum):
    """Why a file did not make it into a dataset. Stable strings: they end up in rejected.jsonl."""

    NOT_FITS = "not-fits"
    TRUNCATED = "truncated"
    UNKNOWN_LAYOUT = "unknown-layout"
    UNREADABLE = "unreadable"
    NON_FINITE = "non-finite"
    GRID_NOT_COVERED = "grid-not-covered"
    FLAT_FLUX = "flat-flux"
    EMPTY_FLUX = "empty-flux"
    DUPLICATE_ID = "duplicate-id"
    DOWNLOAD_FAILED = "download-failed"  # a fetched source (oraculum.vo): the URL, status and reason
    DUPLICATE_CONTENT = "duplicate-content"  # a fetched file with the same sha256 as another, kept once
    MASKED_PIXELS = "masked-pixels"  # too many bad pixels inside the grid (PreprocessingParameters.max_masked_fraction)


class SpectrumRejected(Exception):
    """A file or spectrum that cannot be used, with the reason and a human explanation."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class SpectrumMeta:
    """Header metadata kept with every spectrum. Missing values are ``None``.

    Attributes:
        obsid: LAMOST observation id (OBSID), the archive's unique key.
        designation: IAU-style designation (DESIG), e.g. ``LAMOST J095249.16+291008.7``.
        ra_deg, dec_deg: ICRS coordinates in degrees.
        header_class, subclass: the archive pipeline's classification (CLASS, SUBCLASS).
        snr: signal-to-noise ratio in the band that holds H-alpha (LAMOST SNRR), if given.
        mjd: modified Julian date of the observation.
        object_name: target name (OBJECT, else OBJNAME), for archives that give one.
        redshift: the archive pipeline's redshift (Z), if given.
        objid: the archive's photometric object id (SDSS BESTOBJID/OBJID), as text.
        masked_fraction: fraction of the native pixels inside the grid that are masked; set by
            preprocessing (:func:`~oraculum.spectra.preprocessing.resample`), ``None`` before.
        warnings: what the reader had to assume about the file (e.g. a wavelength medium no
            header keyword states); stored with the spectrum in the dataset.
    """

    obsid: int | None = None
    designation: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    header_class: str | None = None
    subclass: str | None = None
    snr: float | None = None
    mjd: float | None = None
    object_name: str | None = None
    redshift: float | None = None
    objid: str | None = None
    masked_fraction: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class Spectrum:
    """One 1-D spectrum on its native wavelength sampling.

    Attributes:
        wavelength_A: wavelengths in Å, strictly increasing, in ``medium``.
        flux: flux per pixel, same length (units as in the archive, unnormalised).
        medium: whether ``wavelength_A`` is in ``"air"`` or ``"vacuum"``.
        format: the reader that produced it (e.g. ``lamost-lrs-image``).
        meta: header metadata.
        mask: per-pixel bad-pixel mask, ``True`` where the pixel holds no usable flux (the
            numpy.ma / specutils convention): non-finite flux, and what the survey flags (see
            :mod:`oraculum.spectra.readers.masks`). ``None`` means only the flux itself can tell
            (preprocessing then masks non-finite values). Same length as ``flux``.
    """

    wavelength_A: np.ndarray
    flux: np.ndarray
    medium: Medium
    format: str
    meta: SpectrumMeta = field(default_factory=SpectrumMeta)
    mask: np.ndarray | None = None
