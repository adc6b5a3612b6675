"""One spectrum as a file a VO tool opens: a FITS binary table or a VOTable, with the SSA metadata
that tells SPLAT (or TOPCAT, Iris, VOSpec) what it is looking at.

Both files hold the same two columns, ``WAVELENGTH`` (Å, in the medium the spectrum is in: air or
vacuum, said in the header/PARAMs and in the column's description, because no UCD distinguishes
the two) and ``FLUX`` (float64, the values the API serves, NaN where there are none). The columns
carry the IVOA Spectrum data model utypes and UCDs, and :func:`ssa_meta` names them again in the
``meta`` map of a SAMP ``spectrum.load.ssa-generic`` message (``Dataset.SpectralAxis``,
``Dataset.FluxAxis``: the keys SPLAT reads to pick the columns), together with ``Access.Format``
(how SPLAT decides which reader to use) and ``Target.Name`` (the name it shows).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Field, Param, Resource, TableElement, VOTableFile

from oraculum.vo.votable import votable_bytes

__all__ = ["MIME", "SpectrumDocument", "ssa_meta", "to_fits", "to_votable"]

FileFormat = Literal["fits", "votable"]
MIME: dict[str, str] = {"fits": "application/fits", "votable": "application/x-votable+xml"}
WAVELENGTH, FLUX = "WAVELENGTH", "FLUX"
#: The Spectrum data model's utypes and the UCDs of the two columns.
SPECTRAL_UTYPE = "spec:Spectrum.Data.SpectralAxis.Value"
FLUX_UTYPE = "spec:Spectrum.Data.FluxAxis.Value"
SPECTRAL_UCD = "em.wl"
FLUX_UCD = "phot.flux.density;em.wl"


@dataclass(frozen=True)
class SpectrumDocument:
    """What is written: the samples, where they come from, and what the flux means."""

    wavelength_A: np.ndarray
    flux: np.ndarray
    medium: Literal["air", "vacuum"]
    identifier: str  # e.g. oraculum:pool/17/preprocessed: stable, names dataset, index and variant
    title: str
    flux_note: str  # what the flux values are (normalisation, or "as in the archive file")
    target: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    keywords: dict[str, str | int | float] = field(default_factory=dict)  # more header keywords / PARAMs

    def __post_init__(self) -> None:
        if self.medium not in ("air", "vacuum"):
            raise ValueError(f"medium {self.medium!r}: expected 'air' or 'vacuum'")
        if np.shape(self.wavelength_A) != np.shape(self.flux) or np.ndim(self.flux) != 1:
            raise ValueError(f"wavelength {np.shape(self.wavelength_A)} and flux {np.shape(self.flux)} must be "
                             "1-D arrays of the same length")

    @property
    def wavelength_description(self) -> str:
        return f"wavelength in {self.medium} (Angstrom)"


def _position(doc: SpectrumDocument) -> tuple[float, float] | None:
    if doc.ra_deg is None or doc.dec_deg is None or not (math.isfinite(doc.ra_deg) and math.isfinite(doc.dec_deg)):
        return None
    return float(doc.ra_deg), float(doc.dec_deg)


def to_fits(doc: SpectrumDocument) -> bytes:
    """A primary header (object, position, medium) and a ``SPECTRUM`` binary table extension."""
    columns = fits.ColDefs([
        fits.Column(name=WAVELENGTH, format="D", unit="Angstrom", array=np.asarray(doc.wavelength_A, dtype=np.float64)),
        fits.Column(name=FLUX, format="D", array=np.asarray(doc.flux, dtype=np.float64)),
    ])
    table = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    primary = fits.PrimaryHDU()
    position = _position(doc)
    cards: list[tuple[str, str | int | float, str]] = [
        ("ORIGIN", "oraculum", "written by the oraculum API"),
        ("OBJECT", doc.target or doc.title, "target name"),
        ("TITLE", doc.title, "what this spectrum is"),
        ("SPEC_ID", doc.identifier, "dataset/index/variant in oraculum"),
        # the SDSS convention (FITS WCS would say AWAV or WAVE for an image axis, not a table column)
        ("AIRORVAC", "air" if doc.medium == "air" else "vac", "wavelengths in air or vacuum"),
    ]
    if position is not None:
        cards += [("RA", position[0], "[deg] right ascension (ICRS)"), ("DEC", position[1], "[deg] declination (ICRS)")]
    cards += [(key[:8].upper(), value, "") for key, value in doc.keywords.items()]
    for header in (primary.header, table.header):
        for key, value, comment in cards:
            if isinstance(value, str):
                value = value[:68]
                comment = comment if len(value) + len(comment) <= 64 else ""  # a card holds 80 characters
            header[key] = (value, comment)
    table.header["TUCD1"] = SPECTRAL_UCD
    table.header["TUTYP1"] = SPECTRAL_UTYPE
    table.header["TDOC1"] = doc.wavelength_description[:68]
    table.header["TUCD2"] = FLUX_UCD
    table.header["TUTYP2"] = FLUX_UTYPE
    table.header["TDOC2"] = doc.flux_note[:68]
    buffer = io.BytesIO()
    fits.HDUList([primary, table]).writeto(buffer)
    return buffer.getvalue()


def to_votable(doc: SpectrumDocument) -> bytes:
    """One RESOURCE with one TABLE: PARAMs for the medium and position, FIELDs with UCDs and utypes."""
    votable = VOTableFile()
    resource = Resource(type="results")
    votable.resources.append(resource)
    table = TableElement(votable, name="spectrum")
    table.description = f"{doc.title}. Flux: {doc.flux_note}."
    resource.tables.append(table)
    table.params.append(Param(votable, name="medium", datatype="char", arraysize="*", value=doc.medium,
                              ucd="meta.code"))
    table.params.append(Param(votable, name="target", datatype="char", arraysize="*", value=doc.target or doc.title,
                              ucd="meta.id;src", utype="spec:Spectrum.Target.Name"))
    table.params.append(Param(votable, name="identifier", datatype="char", arraysize="*", value=doc.identifier,
                              ucd="meta.id", utype="spec:Spectrum.DataID.DatasetID"))
    position = _position(doc)
    if position is not None:
        table.params.append(Param(votable, name="ra", datatype="double", value=position[0], unit="deg", ucd="pos.eq.ra"))
        table.params.append(Param(votable, name="dec", datatype="double", value=position[1], unit="deg", ucd="pos.eq.dec"))
    for key, value in doc.keywords.items():
        if isinstance(value, str):
            table.params.append(Param(votable, name=key.lower(), datatype="char", arraysize="*", value=value))
        else:
            table.params.append(Param(votable, name=key.lower(), datatype="long" if isinstance(value, int) else "double",
                                      value=value))
    wavelength = Field(votable, name=WAVELENGTH, datatype="double", unit="Angstrom", ucd=SPECTRAL_UCD,
                       utype=SPECTRAL_UTYPE)
    wavelength.description = doc.wavelength_description
    flux = Field(votable, name=FLUX, datatype="double", ucd=FLUX_UCD, utype=FLUX_UTYPE)
    flux.description = doc.flux_note
    table.fields.extend([wavelength, flux])
    size = int(np.size(doc.flux))
    table.create_arrays(size)
    table.array[WAVELENGTH] = np.asarray(doc.wavelength_A, dtype=np.float64)
    table.array[FLUX] = np.asarray(doc.flux, dtype=np.float64)
    return votable_bytes(votable)


def ssa_meta(doc: SpectrumDocument, url: str, file_format: FileFormat) -> dict[str, str]:
    """The ``meta`` map of a ``spectrum.load.ssa-generic`` message (SSA utypes; every value a string,
    as SAMP wants): the access reference and format, the target and the two columns."""
    meta = {
        "Access.Reference": url,
        "Access.Format": MIME[file_format],
        "Target.Name": doc.target or doc.title,
        "DataID.Title": doc.title,
        "DataID.DatasetID": doc.identifier,
        "Dataset.SpectralAxis": WAVELENGTH,
        "Dataset.FluxAxis": FLUX,
        "Char.SpectralAxis.Ucd": SPECTRAL_UCD,
        "Char.SpectralAxis.Unit": "Angstrom",
        "oraculum:medium": doc.medium,  # no SSA key says air or vacuum
        "Char.FluxAxis.Ucd": FLUX_UCD,
        "vox:spectrum_axes": f"{WAVELENGTH} {FLUX}",
    }
    position = _position(doc)
    if position is not None:
        meta["Target.Pos"] = f"{position[0]:.7f} {position[1]:+.7f}"
    return meta
