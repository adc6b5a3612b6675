"""Readers: the bytes of one archive file -> a :class:`~oraculum.spectra.spectrum.Spectrum`.

Two entry points with the same contract:

* :func:`read_spectrum` - what ingestion calls. For LAMOST low-resolution 5-row images (the bulk
  of every LAMOST archive) it reads the few header cards it needs and the flux row straight from
  the bytes, ten times faster than astropy; for everything else, and for any image it is not
  certain about, it uses the astropy path.
* :func:`read_spectrum_reference` - the astropy-only path, the definition of correct; a test
  checks that both return bit-identical spectra for every real sample file.

Formats (detected from content, see :mod:`oraculum.spectra.readers.detect`): ``lamost-lrs-image``,
``lamost-lrs-table``, ``lamost-mrs``, ``sdss-spec``, ``sdss-spspec``, ``ondrejov-table``,
``fits-image-1d``, ``generic-table``, ``generic-image``, ``generic-csv``, each possibly
gzip-compressed. Every spectrum comes with a bad-pixel mask (:mod:`~oraculum.spectra.readers.masks`).
Every failure raises :class:`~oraculum.spectra.spectrum.SpectrumRejected` with a reason and a
message naming what is wrong; no other exception escapes.
"""

from __future__ import annotations

from oraculum.spectra.preprocessing import WavelengthGrid
from oraculum.spectra.readers.detect import decompress, read_reference
from oraculum.spectra.readers.lamost import read_lrs_image_fast
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected

__all__ = ["read_spectrum", "read_spectrum_reference"]


def read_spectrum(data: bytes, name: str, *, grid: WavelengthGrid | None = None) -> Spectrum:
    """The spectrum in ``data`` (the raw bytes of file ``name``, possibly gzip-compressed).

    ``grid`` lets readers of files with several arms (LAMOST MRS) choose the one covering it.
    Raises :class:`SpectrumRejected` for any file that cannot be read.
    """
    try:
        raw = decompress(bytes(data) if type(data) is not bytes else data, name)
        if raw[:9] == b"SIMPLE  =":
            spectrum = read_lrs_image_fast(raw)
            if spectrum is not None:
                return spectrum
        return read_reference(raw, name, grid)
    except SpectrumRejected:
        raise
    except Exception as error:  # noqa: BLE001 - the contract: only SpectrumRejected escapes
        raise _unexpected(name, error) from error


def read_spectrum_reference(
    data: bytes, name: str, *, grid: WavelengthGrid | None = None
) -> Spectrum:
    """Like :func:`read_spectrum`, through astropy only (the reference for the fast path)."""
    try:
        return read_reference(decompress(bytes(data), name), name, grid)
    except SpectrumRejected:
        raise
    except Exception as error:  # noqa: BLE001 - the contract: only SpectrumRejected escapes
        raise _unexpected(name, error) from error


def _unexpected(name: str, error: Exception) -> SpectrumRejected:
    return SpectrumRejected(
        RejectReason.UNREADABLE, f"{name}: cannot be read ({type(error).__name__}: {error})"
    )
