"""Reading a VOTable of spectra: an SSAP answer, an ObsCore/TAP result, or a table made in TOPCAT.

What matters in such a table is, per row, where the spectrum is (the access reference), what it
is (the access format, e.g. ``application/fits`` or a DataLink document) and what it is called
(the publisher's dataset identifier). Columns are found the way the IVOA standards mark them, in
this order: by UCD (``meta.ref.url``), by utype (``ssa:Access.Reference``,
``obscore:access.reference``), then by name (``access_url``, ``accref``, ...), because TOPCAT
keeps UCDs and utypes when it saves a table but people rename columns.

The table is parsed by astropy and the results table and the service's ``QUERY_STATUS`` are
found by pyvo, so an SSAP error answer is reported with the service's own message.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io.votable import parse
from astropy.io.votable.tree import Field, TableElement, VOTableFile
from pyvo.dal import DALResults
from pyvo.dal.adhoc import DatalinkResultsMixin
from pyvo.dal.exceptions import DALFormatError, DALQueryError

#: The MIME type of a DataLink document (an access reference that is not the spectrum itself).
DATALINK_MIME = "application/x-votable+xml;content=datalink"


class VOTableError(ValueError):
    """A VOTable that cannot be used; the message names the table and what was looked for."""


@dataclass(frozen=True)
class ColumnRule:
    """How to recognise one kind of column: UCD atoms, utype tails, names (all case-insensitive)."""

    what: str
    ucds: tuple[str, ...]
    utypes: tuple[str, ...]
    names: tuple[str, ...]

    def describe(self) -> str:
        return (f"UCD {' or '.join(self.ucds)}, utype {' or '.join(self.utypes)}, "
                f"or a column named {' or '.join(self.names)}")


ACCESS = ColumnRule(
    "access reference",
    ("meta.ref.url", "VOX:Image_AccessReference"),
    ("ssa:Access.Reference", "obscore:access.reference"),
    ("access_url", "accref", "accessurl", "access_reference", "url"),
)
FORMAT = ColumnRule(
    "access format",
    ("meta.code.mime", "VOX:Image_Format"),
    ("ssa:Access.Format", "obscore:access.format"),
    ("access_format", "mime", "content_type", "format"),
)
IDENTIFIER = ColumnRule(
    "dataset identifier",
    ("meta.ref.ivoid",),
    ("ssa:Curation.PublisherDID", "obscore:Curation.PublisherDID", "ssa:DataID.CreatorDID"),
    ("obs_publisher_did", "ssa_pubdid", "pubdid", "publisher_did", "creatordid", "obs_id"),
)


class _Results(DatalinkResultsMixin, DALResults):
    """pyvo's view of any DAL result table: status, results table, service descriptors."""


def parse_votable(data: bytes, origin: str, *, remote: bool = False) -> VOTableFile:
    """The parsed VOTable; :class:`VOTableError` naming ``origin`` when it is not one. The message
    never quotes the document; for a ``remote`` one (an answer fetched from a server) it does not
    repeat the parser's words either, which may (see :mod:`oraculum.vo.policy`)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        raise VOTableError(f"{origin}: not XML ({len(data)} bytes that do not start with '<'); expected a VOTable")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns about every small deviation from the standard
            return parse(io.BytesIO(data), verify="ignore")
    except Exception as error:  # noqa: BLE001 - astropy raises many types for bad XML
        detail = type(error).__name__ if remote else f"{type(error).__name__}: {error}"
        raise VOTableError(f"{origin}: not a readable VOTable ({detail})") from None


def results(votable: VOTableFile, origin: str, *, remote: bool = False) -> _Results:
    """The table's results through pyvo: a service's error status becomes :class:`VOTableError`
    (with the service's message only when the table is not ``remote``: see :func:`parse_votable`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Results(votable, url=origin)
    except DALQueryError as error:
        said = "its message is not repeated here; open the URL to read it" if remote else error.reason
        raise VOTableError(f"{origin}: the service reported an error: {said}") from None
    except DALFormatError as error:
        said = "no results RESOURCE" if remote else error.reason
        raise VOTableError(f"{origin}: no results table in the VOTable ({said})") from None


def _matches_ucd(field: Field, rule: ColumnRule) -> bool:
    atoms = {atom.strip().lower() for atom in (field.ucd or "").split(";")}
    return any(ucd.lower() in atoms for ucd in rule.ucds)


def _matches_utype(field: Field, rule: ColumnRule) -> bool:
    utype = (field.utype or "").lower()
    return bool(utype) and any(utype.endswith(u.split(":", 1)[-1].lower()) for u in rule.utypes)


def find_column(table: TableElement, rule: ColumnRule) -> Field | None:
    """The first field that matches ``rule`` by UCD, else by utype, else by name."""
    fields = list(table.fields)
    for test in (
        lambda f: _matches_ucd(f, rule),
        lambda f: _matches_utype(f, rule),
        lambda f: (f.name or "").lower() in rule.names,
    ):
        found = next((f for f in fields if test(f)), None)
        if found is not None:
            return found
    return None


def table_label(table: TableElement, origin: str) -> str:
    return f"{origin} (table {table.name or table.ID or 'without a name'})"


def require_column(table: TableElement, rule: ColumnRule, origin: str) -> Field:
    """Like :func:`find_column`, but a missing column is a :class:`VOTableError` that says what
    was looked for and which columns there are."""
    found = find_column(table, rule)
    if found is None:
        names = ", ".join(f.name for f in table.fields) or "none"
        raise VOTableError(
            f"{table_label(table, origin)} has no {rule.what} column: looked for {rule.describe()}; "
            f"its columns are {names}. Add the column in TOPCAT (or set its UCD to {rule.ucds[0]})"
        )
    return found


def column_strings(table: TableElement, field: Field) -> list[str | None]:
    """A column's values as stripped strings; masked or empty cells are None."""
    column = table.array[field.name]
    mask = np.ma.getmaskarray(column)
    out: list[str | None] = []
    for value, masked in zip(np.ma.getdata(column), mask):
        if masked:
            out.append(None)
            continue
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        out.append(text.strip() or None)
    return out


def votable_bytes(votable: VOTableFile) -> bytes:
    """The XML of a VOTable with its rows as TABLEDATA, written by astropy's pure-Python writer.

    astropy's C TABLEDATA writer (``write_tabledata``) can overrun its row buffer and corrupt the
    heap, which crashes the process later at an unrelated point (astropy issue #20419, open for
    astropy 8.0); its Python writer produces the same document without the C code. Should a
    future astropy drop that switch, the rows are written as BINARY2 instead (also standard
    VOTable 1.3, read by TOPCAT, SPLAT and astropy), never with the faulty writer.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            votable.to_xml(buffer, _debug_python_based_parser=True)
        except TypeError:
            buffer = io.BytesIO()
            votable.to_xml(buffer, tabledata_format="binary2")
    return buffer.getvalue()
